//! Mutated responses through both verifiers (native and libxmlsec1) with the
//! fixture config: any case one accepts and the other refuses is a failure.
//! Seed it from the fixtures (`fuzz/seed.sh`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(d) = samlgate::fuzzing::verifier_differential(data) {
        panic!("verifiers disagree: {d}");
    }
});
