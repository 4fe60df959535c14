//! A long, uninstrumented campaign for the forwarding differential
//! (`samlgate::fuzzing::proxy_differential`): random inputs and mutations
//! of the fuzz corpus, as many as asked, at release speed (the libFuzzer
//! target `fuzz/fuzz_targets/proxy_differential.rs` explores by coverage;
//! this adds volume). Stops at the first disagreement, saving the input
//! under `fuzz/regressions/proxy_differential/`.
//!
//! cargo run --release --example proxy_sweep -- COUNT [SEED]

#![allow(clippy::indexing_slicing)]

use std::io::Write;
use std::time::Instant;

use samlgate::fuzzing::Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for dir in ["seeds/proxy_differential", "corpus/proxy_differential"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for e in entries.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    corpus.push(b);
                }
            }
        }
    }
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let start = Instant::now();
    let (mut forwarded, mut requests) = (0u64, 0u64);
    for i in 1..=count {
        let data: Vec<u8> = if corpus.is_empty() || rng.below(2) == 0 {
            let len = rng.below(64);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut d = corpus[rng.below(corpus.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(d.len() + 1);
                match rng.below(3) {
                    0 if at < d.len() => d[at] = rng.next() as u8,
                    1 => d.insert(at, rng.next() as u8),
                    _ if at < d.len() => {
                        d.remove(at);
                    }
                    _ => {}
                }
            }
            d
        };
        match samlgate::fuzzing::proxy_differential(&data) {
            Ok(n) => {
                forwarded += u64::from(n > 0);
                requests += n as u64;
            }
            Err(d) => {
                let dir = root.join("regressions/proxy_differential");
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("sweep-{seed}-{i}"));
                let _ = std::fs::write(&path, &data);
                eprintln!(
                    "DISAGREEMENT at execution {i} (saved {}):\n{d}",
                    path.display()
                );
                std::process::exit(1);
            }
        }
        if i % 100_000 == 0 || i == count {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "executions {i} in {secs:.0} s ({:.0}/s), {forwarded} forwarded something, {requests} requests upstream, 0 disagreements",
                i as f64 / secs
            );
            let _ = std::io::stdout().flush();
        }
    }
}
