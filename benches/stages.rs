//! `cargo bench --bench stages`: where a native full check spends its time,
//! stage by stage, on the Okta-shaped fixture (decode, parse, pre-check,
//! canonicalisation, digest, RSA verify, whole verify_response, mapping).
//! A profiling aid for the native verifier; figures in BENCHMARKS.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
/// The allocator the gateway binary runs with (src/main.rs), so the figures
/// are what its ACS costs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use samlgate::clock::FixedClock;
use samlgate::config::{Config, VerifierKind};
use samlgate::saml::xml::{NS_ASSERTION, NS_DSIG};
use samlgate::saml::{self, VerifyContext, c14n, decode, dsig, precheck, xml};

fn time(name: &str, timing: bool, mut f: impl FnMut()) {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !name.contains(&f)) {
        return;
    }
    if !timing {
        f();
        return;
    }
    for _ in 0..50 {
        f();
    }
    // 20 slices of 50 ms: the fastest slice is what the code costs, the
    // median what this (shared, noisy) machine gave it.
    let mut slices: Vec<f64> = (0..20)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(50) {
                f();
                n += 1;
            }
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    slices.sort_by(f64::total_cmp);
    let (best, median) = (slices[0], slices[slices.len() / 2]);
    println!("{name:<36} {best:>9.1} µs best {median:>9.1} µs median");
}

fn main() {
    let timing = std::env::args().any(|a| a == "--bench");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut config = Config::load(&dir.join("config.toml")).unwrap();
    config.security.verifier = VerifierKind::Native;
    let clock = FixedClock(
        chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let bytes = std::fs::read(dir.join("responses/valid_okta_assertion_signed.xml")).unwrap();
    let text = decode::decode_any(&bytes, 1 << 20).unwrap();
    let parsed = xml::parse(&text).unwrap();
    let doc = parsed.root();
    let assertion = doc.child(NS_ASSERTION, "Assertion").unwrap();
    let sig = assertion.child(NS_DSIG, "Signature").unwrap();
    let account = config.account.as_ref().unwrap();
    let certs = &account.idp.metadata.signing_certs;
    let policy = precheck::AlgorithmPolicy::default();
    let ctx = VerifyContext {
        account,
        security: &config.security,
        outstanding: &[],
    };
    println!("{} bytes", bytes.len());
    time("decode", timing, || {
        black_box(decode::decode_any(&bytes, 1 << 20).unwrap());
    });
    time("quick-xml events only", timing, || {
        let mut r = quick_xml::Reader::from_str(&text);
        let mut n = 0usize;
        loop {
            match r.read_event().unwrap() {
                quick_xml::events::Event::Eof => break,
                e => n += e.len(),
            }
        }
        black_box(n);
    });
    time("xml::parse", timing, || {
        black_box(xml::parse(&text).unwrap());
    });
    time("precheck", timing, || {
        black_box(precheck::precheck_response(doc, policy).unwrap());
    });
    let mut buf = Vec::new();
    time("c14n assertion (enveloped)", timing, || {
        buf.clear();
        c14n::canonicalize(assertion, Some(sig), &[], &mut buf);
        black_box(&buf);
    });
    time("sha256 of it", timing, || {
        black_box(openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &buf).unwrap());
    });
    time("sha256 of it (ring)", timing, || {
        black_box(ring::digest::digest(&ring::digest::SHA256, &buf));
    });
    let signed_info = sig.child(NS_DSIG, "SignedInfo").unwrap();
    let mut si = Vec::new();
    c14n::canonicalize(signed_info, None, &[], &mut si);
    let value: String = sig
        .child(NS_DSIG, "SignatureValue")
        .unwrap()
        .text()
        .split_whitespace()
        .collect();
    let value = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).unwrap();
    time("c14n SignedInfo", timing, || {
        let mut out = Vec::new();
        c14n::canonicalize(signed_info, None, &[], &mut out);
        black_box(out);
    });
    time("RSA-SHA256 verify (openssl Verifier)", timing, || {
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &certs[0].key)
                .unwrap();
        v.update(&si).unwrap();
        assert!(v.verify(&value).unwrap());
    });
    let rsa = certs[0].key.rsa().unwrap();
    let digest = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &si).unwrap();
    time("RSA verify (PkeyCtx, prehashed)", timing, || {
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&certs[0].key).unwrap();
        ctx.verify_init().unwrap();
        ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1).unwrap();
        ctx.set_signature_md(openssl::md::Md::sha256()).unwrap();
        assert!(ctx.verify(&digest, &value).unwrap());
    });
    time("RSA public_decrypt (raw)", timing, || {
        let mut out = vec![0u8; rsa.size() as usize];
        let n = rsa
            .public_decrypt(&value, &mut out, openssl::rsa::Padding::PKCS1)
            .unwrap();
        assert!(out[..n].ends_with(&digest));
    });
    let spki = certs[0].key.public_key_to_der().unwrap();
    let ring_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        spki_rsa(&spki),
    );
    time("RSA-SHA256 verify (ring)", timing, || {
        ring_key.verify(&si, &value).unwrap();
    });
    time("dsig::verify_element", timing, || {
        black_box(dsig::verify_element(assertion, certs).unwrap());
    });
    time("verify_response (all checks)", timing, || {
        let mut trace = samlgate::mapping::Trace::off();
        black_box(saml::verify_response(&text, &ctx, &clock, &mut trace).ok());
    });
    let mut trace = samlgate::mapping::Trace::off();
    let v = saml::verify_response(&text, &ctx, &clock, &mut trace).unwrap();
    time("map_user", timing, || {
        let mut trace = samlgate::mapping::Trace::off();
        black_box(saml::map_user(&v, account, &config.security, &mut trace).unwrap());
    });
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo (ring wants PKCS#1).
fn spki_rsa(spki: &[u8]) -> Vec<u8> {
    let rsa = openssl::rsa::Rsa::public_key_from_der(spki).unwrap();
    rsa.public_key_to_der_pkcs1().unwrap()
}
