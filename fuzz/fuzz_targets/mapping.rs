//! The attribute mapping on arbitrary attribute names and values: never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    samlgate::fuzzing::mapping(data);
});
