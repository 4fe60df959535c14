//! The forwarding differential (`samlgate::fuzzing::proxy_differential`,
//! the `proxy_differential` fuzz target's property): the same byte streams
//! through the fast path and the general path must reach the upstream as
//! the same requests. Replays the fuzz corpus's seeds and regressions, then
//! a fixed pseudo-random sweep.

use samlgate::fuzzing::Rng;

#[test]
fn fast_and_general_paths_forward_the_same_requests() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for dir in [
        root.join("seeds/proxy_differential"),
        root.join("regressions/proxy_differential"),
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries {
                inputs.push(std::fs::read(e.unwrap().path()).unwrap());
            }
        }
    }
    if let Ok(dir) = std::env::var("PROXY_DIFF_CORPUS") {
        for e in std::fs::read_dir(dir).unwrap() {
            inputs.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    let sweep: usize = std::env::var("PROXY_DIFF_SWEEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    for _ in 0..sweep {
        let len = (rng.next() % 48) as usize;
        inputs.push((0..len).map(|_| rng.next() as u8).collect());
    }
    let mut failures = Vec::new();
    let (mut forwarded, mut requests) = (0usize, 0usize);
    for data in &inputs {
        let t = std::time::Instant::now();
        let r = samlgate::fuzzing::proxy_differential(data);
        if std::env::var("PROXY_DIFF_SLOW").is_ok()
            && t.elapsed() > std::time::Duration::from_millis(100)
        {
            eprintln!("SLOW {:?} {:?}", t.elapsed(), data);
        }
        match r {
            Ok(n) => {
                forwarded += usize::from(n > 0);
                requests += n;
            }
            Err(d) => failures.push(format!("{data:?}\n{d}")),
        }
    }
    // The grammar reaches the forwarding code, not only the refusals.
    assert!(
        forwarded * 3 > inputs.len(),
        "only {forwarded} of {} inputs forwarded anything ({requests} requests)",
        inputs.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} inputs disagree; first:\n{}",
        failures.len(),
        inputs.len(),
        failures.first().map_or("", |f| f.as_str())
    );
}
