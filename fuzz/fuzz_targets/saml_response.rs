//! decode → parse → pre-check → (libxmlsec1) → checks → mapping on arbitrary
//! bytes, as POSTed: must never panic, hang or blow up memory.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    samlgate::fuzzing::saml_response(data);
});
