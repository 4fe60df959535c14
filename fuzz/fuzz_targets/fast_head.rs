//! The forwarding fast path's request-head reader: see `samlgate::fuzzing::fast_head`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = samlgate::fuzzing::fast_head(data);
});
