//! Every generated fixture, decided exactly as its manifest labels it, both
//! in process and through the `samlgate check-response` binary.

use std::process::Command;

use super::support::{fixtures, manifest, run};

#[test]
fn every_fixture_is_decided_as_labelled_in_process() {
    let entries = manifest();
    assert!(entries.len() >= 60, "the corpus shrank: {}", entries.len());
    let mut wrong = Vec::new();
    for e in &entries {
        let r = run(&e.name);
        let decision = if r.code.is_none() { "accept" } else { "reject" };
        let code_ok = e.code.as_deref() == r.code;
        let email_ok =
            e.email.is_none() || e.email.as_deref() == r.user.as_ref().map(|u| u.email.as_str());
        let nameid_ok = e.name_id.is_none() || e.name_id == r.name_id;
        if decision != e.expect || !code_ok || !email_ok || !nameid_ok {
            wrong.push(format!(
                "{}: expected {} {:?}, got {} {:?} ({:?})",
                e.name, e.expect, e.code, decision, r.code, r.reason
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} misdecided:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_fixture_is_decided_as_labelled_by_the_cli() {
    let bin = env!("CARGO_BIN_EXE_samlgate");
    let dir = fixtures();
    let mut wrong = Vec::new();
    for e in manifest() {
        let mut cmd = Command::new(bin);
        cmd.current_dir(&dir)
            .args(["check-response", "--config", &e.config, "--at", &e.at]);
        for id in &e.request_ids {
            cmd.args(["--request-id", id]);
        }
        cmd.arg(format!("responses/{}", e.file));
        let out = cmd.output().unwrap();
        let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(j) => j,
            Err(err) => {
                wrong.push(format!(
                    "{}: no JSON ({err}); stderr {}",
                    e.name,
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
        };
        let want_exit = if e.expect == "accept" { 0 } else { 1 };
        if out.status.code() != Some(want_exit)
            || json["decision"] != e.expect.as_str()
            || json["code"].as_str() != e.code.as_deref()
        {
            wrong.push(format!(
                "{}: exit {:?}, {}",
                e.name,
                out.status.code(),
                json
            ));
        }
        for key in ["decision", "code", "reason", "name_id", "user", "trace"] {
            if json.get(key).is_none() {
                wrong.push(format!("{}: JSON lacks {key}", e.name));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
