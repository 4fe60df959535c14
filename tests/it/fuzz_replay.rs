//! Replays the fixtures and every saved fuzz regression through the fuzz
//! entry points, so a past crasher stays fixed, and checks both verifiers
//! agree on each (the differential fuzz target's property).

use super::support::fixtures;

#[test]
fn fuzz_entry_points_survive_fixtures_and_regressions() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for dir in [
        fixtures().join("responses"),
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions"),
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // Subfolders belong to other targets (proxy_differential).
            if path.is_file() {
                inputs.push(std::fs::read(path).unwrap());
            }
        }
    }
    assert!(inputs.len() > 50);
    for data in &inputs {
        samlgate::fuzzing::saml_response(data);
        samlgate::fuzzing::metadata(data);
        samlgate::fuzzing::mapping(data);
        if let Some(d) = samlgate::fuzzing::verifier_differential(data) {
            panic!("verifiers disagree on a replayed input: {d}");
        }
    }
}
