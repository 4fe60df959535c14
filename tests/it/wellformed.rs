//! Our parser against libxml2's (through Python lxml) on tricky documents
//! (`tests/fixtures/wellformedness.json`): whatever libxml2 refuses, we
//! refuse. A document we accepted and libxml2 refused would be read by the
//! native verifier while libxmlsec1 never would (the differential fuzzer
//! found two: a control character in a comment, a relative namespace URI).

use samlgate::saml::xml;

use super::support::{fixtures, python_oracle};

#[test]
fn every_document_libxml2_refuses_is_refused() {
    let path = fixtures().join("wellformedness.json");
    let docs: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let stdout = python_oracle("wellformed_oracle.py", [&path]);
    let verdicts: Vec<bool> = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(verdicts.len(), docs.len());
    let mut wrong = Vec::new();
    let mut refused_by_libxml2 = 0;
    for (doc, libxml2_ok) in docs.iter().zip(verdicts) {
        if libxml2_ok && xml::parse(doc).is_err() {
            // Stricter than libxml2 (policy: DTDs, PIs, encodings, ...).
            println!("refused, libxml2 accepts: {doc:?}");
        }
        if !libxml2_ok {
            refused_by_libxml2 += 1;
            if xml::parse(doc).is_ok() {
                wrong.push(format!("{doc:?}"));
            }
        }
    }
    assert!(
        refused_by_libxml2 > 30,
        "only {refused_by_libxml2} refusals to compare"
    );
    assert!(
        wrong.is_empty(),
        "accepted, but libxml2 refuses:\n{}",
        wrong.join("\n")
    );
}
