//! `cargo bench --bench verify`: full checks per second on one core
//! (decode → pre-check → signature → checks → mapping, as the gateway's ACS
//! runs them), per fixture shape,
//! with both verifiers side by side in the same run (native and libxmlsec1
//! verify-then-reduce taking turns in 200 ms slices, and their ratio), plus
//! how fast the pre-check refuses a transform bomb. Each RSA-signed case also
//! times the bare RSA-2048 verification of its SignatureValue in the same
//! slices, and prints what the native full check costs beyond it (`+µs`):
//! the shared host's speed swings ~1.7x, and that difference is the part of
//! the figure that is ours.
//! A plain timing loop (no criterion: fewer dependencies on a 2-core box);
//! each case runs for about two seconds after a warm-up.
//!
//! `checks/s` divides by wall-clock time; `on-CPU/s` by the time the thread
//! actually ran (`/proc/thread-self/schedstat`), which leaves out the
//! moments the hypervisor gave this VM's core to someone else (steal: from
//! 5 % to over 40 % of a minute on the 2-core VMs here). Per core, the
//! second is the figure; the first is what a client saw. `µs/check` and
//! `+µs` are on-CPU too (wall-clock where schedstat is missing). `best/s`
//! is the fastest single slice (on-CPU): what the code does while the host
//! gives the core its full speed. The last line of an RSA-signed case is the
//! native check's time in RSA verifies of the same run: the figure that
//! moves least with the host's speed (1.90-2.09 on the Okta case over a
//! morning in which RSA alone took 27-39 µs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The allocator the gateway binary runs with (src/main.rs), so the figures
/// are what its ACS costs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use samlgate::clock::FixedClock;
use samlgate::config::{Config, VerifierKind};
use samlgate::mapping::Trace;
use samlgate::saml::{self, SamlError, VerifyContext, decode};

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let base = Config::load(&dir.join("config.toml")).unwrap();
    let with = |v: VerifierKind| {
        let mut c = base.clone();
        c.security.verifier = v;
        c
    };
    let configs = [
        ("native", with(VerifierKind::Native)),
        ("libxmlsec1", with(VerifierKind::Libxmlsec1)),
    ];
    let clock = FixedClock(
        chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let req = vec!["_4f1c3b9e2a7d4e6f8a9b0c1d2e3f4a5b".to_string()];
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then
    // run each case once as a smoke test instead of timing it.
    let timing = std::env::args().any(|a| a == "--bench");
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!(
        "{:<44} {:>8} {:>11} {:>10} {:>10} {:>10} {:>7} {:>10}",
        "case", "bytes", "verifier", "checks/s", "on-CPU/s", "µs/check", "ratio", "best/s"
    );
    let fixture = |name: &str| std::fs::read(dir.join("responses").join(name)).unwrap();
    let mut cases: Vec<(String, Vec<u8>, bool)> = [
        ("valid_okta_assertion_signed.xml", true),
        ("valid_entra_default_ns_prefixlist.b64", true),
        ("valid_simplesaml_both_signed_pretty.xml", true),
        ("valid_many_attributes_response_signed.xml", true),
        ("valid_encrypted_gcm_response_signed.xml", true),
        ("valid_ecdsa_p256.xml", true),
        ("foreign_key_attacker_cert_in_keyinfo.xml", false),
        ("xslt_transform_bomb.xml", false),
        ("billion_laughs.xml", false),
    ]
    .into_iter()
    .map(|(n, ok)| (n.to_owned(), fixture(n), ok))
    .collect();
    cases.extend(review_shapes(&fixture("valid_okta_assertion_signed.xml")));
    for (name, bytes, expect_accept) in cases {
        let name = name.as_str();
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let active: Vec<&(&str, Config)> = configs
            .iter()
            // SAMLGATE_BENCH_VERIFIER=native (or libxmlsec1) runs one side only (for profiling).
            .filter(|(v, _)| std::env::var("SAMLGATE_BENCH_VERIFIER").map_or(true, |x| x == *v))
            .collect();
        // What the gateway's ACS does with a POSTed response before it
        // touches the store: decode, verify (pre-check, signature, checks),
        // map; no trace (`check-response` adds one for people).
        let run = |verifier: &str, config: &Config| {
            let result = (|| -> Result<(), SamlError> {
                let xml = decode::decode_any(&bytes, config.security.max_response_bytes)?;
                let account = config.account.as_ref().expect("default account");
                let ctx = VerifyContext {
                    account,
                    security: &config.security,
                    outstanding: &req,
                };
                let verified = saml::verify_response(&xml, &ctx, &clock, &mut Trace::off())?;
                saml::map_user(&verified, account, &config.security, &mut Trace::off())?;
                Ok(())
            })();
            assert_eq!(
                result.is_ok(),
                expect_accept,
                "{name} ({verifier}): {result:?}"
            );
        };
        // The host's RSA speed in the same slices: the bare RSA-2048
        // PKCS#1 verification of this response's first SignatureValue (what
        // `openssl speed rsa2048` times), so a figure can be read against
        // the ceiling RSA alone puts on the full check that run.
        let rsa_alone = rsa_alone(&bytes, &base).filter(|_| expect_accept);
        if !timing {
            for (v, c) in &active {
                run(v, c);
            }
            if let Some(f) = &rsa_alone {
                f();
            }
            continue;
        }
        // The verifiers take turns in 10 slices of 200 ms each, so a change
        // in the shared host's speed hits both alike.
        let mut counts = vec![(0u64, Duration::ZERO, Duration::ZERO); active.len()];
        let mut rsa_count = (0u64, Duration::ZERO, Duration::ZERO);
        // The fastest slice of each (on-CPU rate): what the code does when
        // the host gives the core its full speed.
        let mut best = vec![0f64; active.len()];
        let mut rsa_best = 0f64;
        for (v, c) in &active {
            for _ in 0..20 {
                run(v, c);
            }
        }
        for _ in 0..10 {
            for (i, (v, c)) in active.iter().enumerate() {
                let (start, cpu) = (Instant::now(), on_cpu());
                let mut n = 0u64;
                while start.elapsed() < Duration::from_millis(200) {
                    run(v, c);
                    n += 1;
                }
                let (wall, cpu) = (start.elapsed(), on_cpu().saturating_sub(cpu));
                if let Some(slot) = counts.get_mut(i) {
                    slot.0 += n;
                    slot.1 += wall;
                    slot.2 += cpu;
                }
                if let Some(b) = best.get_mut(i) {
                    *b = b.max(slice_rate(n, wall, cpu));
                }
            }
            if let Some(f) = &rsa_alone {
                let (start, cpu) = (Instant::now(), on_cpu());
                let mut n = 0u64;
                while start.elapsed() < Duration::from_millis(100) {
                    f();
                    n += 1;
                }
                let (wall, cpu) = (start.elapsed(), on_cpu().saturating_sub(cpu));
                rsa_count.0 += n;
                rsa_count.1 += wall;
                rsa_count.2 += cpu;
                rsa_best = rsa_best.max(slice_rate(n, wall, cpu));
            }
        }
        let mut rates = Vec::new();
        for (((verifier, _), (n, elapsed, cpu)), best) in active.iter().zip(&counts).zip(&best) {
            let rate = *n as f64 / elapsed.as_secs_f64();
            rates.push(rate);
            let ratio = match rates.as_slice() {
                [native, other] => format!("{:.1}x", native / other),
                _ => String::new(),
            };
            println!(
                "{:<44} {:>8} {:>11} {:>10.0} {:>10} {:>10.1} {:>7} {:>10.0}",
                name.trim_end_matches(".xml"),
                bytes.len(),
                verifier,
                rate,
                per_cpu_second(*n, *cpu),
                us_per(*n, *elapsed, *cpu),
                ratio,
                best
            );
        }
        if rsa_count.0 > 0 {
            let rate = rsa_count.0 as f64 / rsa_count.1.as_secs_f64();
            let rsa_us = us_per(rsa_count.0, rsa_count.1, rsa_count.2);
            let native_us = counts
                .first()
                .filter(|_| active.first().is_some_and(|(v, _)| *v == "native"))
                .map(|(n, e, c)| us_per(*n, *e, *c));
            println!(
                "{:<44} {:>8} {:>11} {:>10.0} {:>10} {:>10.1} {:>7} {:>10.0}",
                "  (RSA-2048 verification alone, same slices)",
                "",
                "openssl",
                rate,
                per_cpu_second(rsa_count.0, rsa_count.2),
                rsa_us,
                native_us.map_or(String::new(), |n| format!("+{:.1}", n - rsa_us)),
                rsa_best,
            );
            // A native check in RSA verifies of the same slices: what moves
            // least with the host's speed.
            if let Some(n) = native_us {
                println!(
                    "{:<44} {:>8} {:>11} {:>32.2}",
                    "  (native check / RSA alone, time)",
                    "",
                    "",
                    n / rsa_us
                );
            }
        }
    }
}

/// How long this thread has run on a CPU (the first field of
/// `/proc/thread-self/schedstat`, in ns; the scheduler's clock leaves out
/// steal time). Zero where the file is missing (not Linux, or schedstats
/// off): the on-CPU column then prints `-`.
fn on_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// The time to divide by: on-CPU when measured, wall-clock otherwise.
fn ran(wall: Duration, cpu: Duration) -> Duration {
    if cpu.is_zero() { wall } else { cpu }
}

/// µs per item: on-CPU when measured, wall-clock otherwise.
fn us_per(n: u64, wall: Duration, cpu: Duration) -> f64 {
    ran(wall, cpu).as_secs_f64() * 1e6 / n.max(1) as f64
}

/// One slice's rate: per on-CPU second when measured, per wall second
/// otherwise.
fn slice_rate(n: u64, wall: Duration, cpu: Duration) -> f64 {
    n as f64 / ran(wall, cpu).as_secs_f64().max(1e-9)
}

/// `n` per second of on-CPU time, or `-` when none was measured.
fn per_cpu_second(n: u64, cpu: Duration) -> String {
    if cpu.is_zero() {
        return "-".into();
    }
    format!("{:.0}", n as f64 / cpu.as_secs_f64())
}

/// The security review's parser shapes, built from the Okta fixture (only
/// its assertion is signed, so the Response can be padded): the refused
/// 74,000-attribute POST, a benign 480 KB response (unsigned extension
/// elements), and the costliest shapes that stay under every cap at the
/// same size. Side by side, the last two must cost about what the benign
/// one does (tests/it/review.rs asserts it too).
fn review_shapes(okta: &[u8]) -> Vec<(String, Vec<u8>, bool)> {
    let okta = std::str::from_utf8(okta).unwrap();
    let gt = okta.find('>').unwrap() + 1;
    let child = |body: String| format!("{}{body}{}", &okta[..gt], &okta[gt..]).into_bytes();
    let ext = |body: String, decls: &str| {
        child(format!(
            "<samlp:Extensions xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:x=\"urn:x\"{decls}>{body}</samlp:Extensions>"
        ))
    };
    const SIZE: usize = 480 * 1024;
    let fill = |unit: &str| unit.repeat(SIZE / unit.len());
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let name = |i: usize| -> String {
        [i / 2704, i / 52 % 52, i % 52]
            .map(|k| letters.get(k).copied().unwrap_or('z'))
            .iter()
            .collect()
    };
    let attrs: String = (0..74_000).map(|i| format!(" {}=''", name(i))).collect();
    let at = "<saml2p:Response ".len();
    let many_attrs = format!("{}{attrs} {}", &okta[..at], &okta[at..]).into_bytes();
    let scope: String = (0..29)
        .map(|i| format!(" xmlns:p{i}=\"urn:p:{i}\""))
        .collect();
    let prefixed: String = (0..60).map(|i| format!(" p0:a{i}=\"\"")).collect();
    vec![
        (
            "refused: 74,000 attributes (review)".into(),
            many_attrs,
            false,
        ),
        (
            "benign 480 KB (unsigned extensions)".into(),
            ext(fill("<x:v>Meetings-Group-0001</x:v>"), ""),
            true,
        ),
        (
            "worst under caps: 31 in scope, <v></v>".into(),
            ext(fill("<v></v>"), &scope),
            true,
        ),
        (
            "worst under caps: 60 prefixed attrs".into(),
            ext(fill(&format!("<x:v{prefixed}/>")), &scope),
            true,
        ),
    ]
}

/// The bare RSA public-key operation and PKCS#1 check of the response's
/// first SignatureValue, when an RSA metadata key verifies it.
fn rsa_alone<'a>(bytes: &[u8], config: &'a Config) -> Option<impl Fn() + 'a> {
    use base64::Engine;
    let text = decode::decode_any(bytes, config.security.max_response_bytes).ok()?;
    let doc = samlgate::saml::xml::parse(&text).ok()?;
    let mut value = None;
    doc.root().walk(&mut |e, _| {
        if value.is_none() && e.is(samlgate::saml::xml::NS_DSIG, "SignatureValue") {
            value = Some(e.text());
        }
    });
    let value: String = value?.split_whitespace().collect();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let rsa = config
        .account
        .as_ref()?
        .idp
        .metadata
        .signing_certs
        .iter()
        .filter_map(|c| c.rsa.as_ref())
        .find(|r| {
            let mut out = vec![0u8; r.size() as usize];
            r.public_decrypt(&sig, &mut out, openssl::rsa::Padding::PKCS1)
                .is_ok()
        })?;
    Some(move || {
        let mut out = vec![0u8; rsa.size() as usize];
        let n = rsa
            .public_decrypt(&sig, &mut out, openssl::rsa::Padding::PKCS1)
            .unwrap();
        assert!(n > 0);
    })
}
