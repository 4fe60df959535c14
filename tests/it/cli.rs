//! The command line's contract: exit codes 0 accept / 1 reject / 2 usage or
//! config error, standard input, base64 and form-encoded input.

use std::io::Write;
use std::process::{Command, Stdio};

use super::support::fixtures;

fn samlgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_samlgate"));
    c.current_dir(fixtures());
    c
}

#[test]
fn reads_base64_from_stdin() {
    let xml = std::fs::read(fixtures().join("responses/valid_okta_assertion_signed.xml")).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &xml);
    let mut child = samlgate()
        .args([
            "check-response",
            "--config",
            "config.toml",
            "--at",
            "2026-01-15T10:00:30Z",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b64.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["user"]["email"], "alice@example.com");
    assert_eq!(json["user"]["license"], "licensed");
    assert_eq!(json["name_id"], "alice@example.com");
}

#[test]
fn bad_at_is_a_usage_error() {
    let out = samlgate()
        .args([
            "check-response",
            "--config",
            "config.toml",
            "--at",
            "yesterday",
            "responses/expired.xml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_config_is_exit_2() {
    let out = samlgate()
        .args([
            "check-response",
            "--config",
            "nope.toml",
            "responses/expired.xml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config_unreadable"));
}

#[test]
fn missing_response_file_is_exit_2() {
    let out = samlgate()
        .args([
            "check-response",
            "--config",
            "config.toml",
            "responses/none.xml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_subcommand_is_exit_2() {
    let out = samlgate().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_accepts_the_fixture_config_and_the_example() {
    let out = samlgate()
        .args(["config", "check", "--config", "config.toml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_samlgate"))
        .current_dir(&repo)
        .args(["config", "check", "--config", "config/samlgate.toml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `serve` verifies natively only: libxmlsec1 is the test oracle and a
/// `check-response` option (see docs/threat-model.md, "hidden signature").
#[test]
fn serve_refuses_the_libxmlsec1_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sp]\nentity_id = \"https://sp.example.com/saml/metadata\"\nacs_url = \"https://sp.example.com/saml/acs\"\n[idp]\nmetadata_file = \"{}\"\n[store]\npath = \"{}\"\n[security]\nverifier = \"libxmlsec1\"\n",
            fx.join("idp-metadata.xml").display(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let out = samlgate()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("security.verifier"), "{err}");
    // check-response still takes it.
    let out = samlgate()
        .args(["check-response", "--at", "2026-01-15T10:01:00Z", "--config"])
        .arg(&cfg)
        .arg(fx.join("responses/valid_okta_assertion_signed.xml"))
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["decision"], "accept", "{j}");
}
