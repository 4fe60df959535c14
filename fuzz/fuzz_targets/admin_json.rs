//! The admin API's JSON bodies (ssoCreate, user PATCH, account documents): see `samlgate::fuzzing::admin_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    samlgate::fuzzing::admin_json(data);
});
