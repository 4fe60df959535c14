//! IdP metadata parsing on arbitrary text: never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    samlgate::fuzzing::metadata(data);
});
