//! Shared helpers: fixture paths, the manifest, running a fixture in process.

use std::path::PathBuf;

use samlgate::check::{Report, check_response};
use samlgate::clock::FixedClock;
use samlgate::config::Config;
use serde::Deserialize;

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One manifest entry written by gen.py.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub name: String,
    pub file: String,
    pub expect: String,
    pub code: Option<String>,
    pub at: String,
    pub request_ids: Vec<String>,
    pub config: String,
    pub email: Option<String>,
    pub name_id: Option<String>,
}

pub fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(fixtures().join("responses/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn entry(name: &str) -> Entry {
    manifest()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no fixture {name} in the manifest; rerun tests/fixtures/gen.py"))
}

pub fn config(name: &str) -> Config {
    Config::load(&fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

pub fn clock(at: &str) -> FixedClock {
    FixedClock(
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc),
    )
}

/// Runs the fixture `name` as its manifest entry says.
pub fn run(name: &str) -> Report {
    let e = entry(name);
    let bytes = std::fs::read(fixtures().join("responses").join(&e.file)).unwrap();
    run_bytes(&e, &bytes)
}

/// Runs `bytes` with the clock, request ids and config of entry `e`.
pub fn run_bytes(e: &Entry, bytes: &[u8]) -> Report {
    check_response(bytes, &config(&e.config), &e.request_ids, &clock(&e.at))
}

/// Like [`run_bytes`], with the given signature verifier.
pub fn run_bytes_with(e: &Entry, bytes: &[u8], verifier: samlgate::config::VerifierKind) -> Report {
    let mut cfg = config(&e.config);
    cfg.security.verifier = verifier;
    check_response(bytes, &cfg, &e.request_ids, &clock(&e.at))
}

/// Asserts the fixture is refused with `code`.
pub fn rejects(name: &str, code: &str) -> Report {
    let r = run(name);
    assert_eq!(
        (format!("{:?}", r.decision), r.code),
        ("Reject".to_string(), Some(code)),
        "{name}: {:?}\ntrace: {:#?}",
        r.reason,
        r.trace
    );
    assert!(r.user.is_none(), "{name}: a refusal must carry no user");
    r
}

/// Asserts the fixture is accepted and maps to `email`.
pub fn accepts(name: &str, email: &str) -> Report {
    let r = run(name);
    assert!(
        r.code.is_none(),
        "{name}: refused {:?}: {:?}\n{:#?}",
        r.code,
        r.reason,
        r.trace
    );
    assert_eq!(
        r.user.as_ref().map(|u| u.email.as_str()),
        Some(email),
        "{name}"
    );
    r
}

/// Whether the trace shows libxmlsec1 was reached.
pub fn reached_crypto(r: &Report) -> bool {
    r.trace.iter().any(|t| t.step == "signature")
}

/// Runs one of the Python oracles in `tests/` (libxml2 through lxml) with
/// `args` and returns its stdout; a failing oracle fails the test.
pub fn python_oracle<I, S>(script: &str, args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(fixtures().join("..").join(script))
        .args(args)
        .output()
        .expect("/usr/bin/python3 with python3-lxml (scripts/install-deps.sh --test)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
