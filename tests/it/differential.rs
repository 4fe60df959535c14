//! The native verifier against libxmlsec1 (the oracle): every fixture, and
//! systematic mutations of valid responses, must be decided the same way by
//! both (same decision, same refusal code).

use samlgate::config::VerifierKind;

use super::support::{Entry, fixtures, manifest, run_bytes_with};

fn decide(e: &Entry, bytes: &[u8], v: VerifierKind) -> (String, Option<&'static str>, String) {
    let r = run_bytes_with(e, bytes, v);
    (
        format!("{:?}", r.decision),
        r.code,
        r.reason.clone().unwrap_or_default(),
    )
}

#[test]
fn native_and_libxmlsec1_decide_every_fixture_alike_and_as_labelled() {
    let mut wrong = Vec::new();
    for e in manifest() {
        let bytes = std::fs::read(fixtures().join("responses").join(&e.file)).unwrap();
        let native = decide(&e, &bytes, VerifierKind::Native);
        let oracle = decide(&e, &bytes, VerifierKind::Libxmlsec1);
        let labelled = e.code.as_deref() == native.1;
        if native.0 != oracle.0 || native.1 != oracle.1 || !labelled {
            wrong.push(format!(
                "{}: label {:?}; native {:?} {:?} ({}); libxmlsec1 {:?} {:?} ({})",
                e.name, e.code, native.0, native.1, native.2, oracle.0, oracle.1, oracle.2
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
