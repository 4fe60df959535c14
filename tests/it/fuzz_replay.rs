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

/// The seeds and saved regressions of the admin-body, CSV-import and
/// fast-path head targets, through their entry points; then each seed with
/// every single byte dropped (a cheap sweep of truncations and shifts).
#[test]
fn body_csv_and_head_targets_survive_seeds_and_regressions() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    // Each returns how far its input got: a created user, a forwarded head.
    type Target = fn(&[u8]) -> u64;
    let targets: [(&str, Target); 3] = [
        ("admin_json", |d| {
            samlgate::fuzzing::admin_json(d);
            1
        }),
        ("csv_import", samlgate::fuzzing::csv_import),
        ("fast_head", |d| u64::from(samlgate::fuzzing::fast_head(d))),
    ];
    for (name, run) in targets {
        let mut reached = 0;
        let mut n = 0;
        for dir in [
            root.join("seeds").join(name),
            root.join("regressions").join(name),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let data = std::fs::read(entry.unwrap().path()).unwrap();
                reached += run(&data);
                for i in 0..data.len() {
                    let mut cut = data.clone();
                    cut.remove(i);
                    run(&cut);
                }
                n += 1;
            }
        }
        assert!(n >= 2, "{name}: no seeds");
        // The seeds reach the checks (a forwarded head, created users).
        assert!(reached >= 2, "{name}: no seed got past the parser");
    }
}
