//! The forwarding fast path against the general (hyper) path: the same
//! client byte stream (built from the input by a request grammar) through
//! both, each to a recording upstream; any difference in the requests the
//! upstreams receive, or a forged identity reaching one, panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(d) = samlgate::fuzzing::proxy_differential(data) {
        panic!("the forwarding paths disagree: {d}");
    }
});
