//! Our exclusive canonicalisation against an independent one (libxml2's,
//! through Python lxml: `tests/c14n_oracle.py`), byte for byte, on every
//! element of every response fixture and of the hand-written c14n cases in
//! `tests/fixtures/c14n/`: plain, with every in-scope prefix in the
//! InclusiveNamespaces PrefixList, and after the enveloped-signature
//! transform for each element carrying a Signature.

use std::path::PathBuf;

use base64::Engine;
use samlgate::saml::c14n::canonicalize;
use samlgate::saml::xml::{self, Element, NS_DSIG};

use super::support::{fixtures, python_oracle};

/// Every element in document order (the canonicaliser takes the
/// declarations in scope from each one's ancestors in the document).
fn elements(root: Element<'_>) -> Vec<Element<'_>> {
    let mut out = Vec::new();
    root.walk(&mut |e, _| out.push(e));
    out
}

fn ours(e: Element<'_>, exclude: Option<Element<'_>>, prefixes: &[Option<&str>]) -> Vec<u8> {
    let mut out = Vec::new();
    canonicalize(e, exclude, prefixes, &mut out);
    out
}

#[test]
fn canonical_bytes_equal_lxml_on_every_element() {
    let dir = std::env::temp_dir().join(format!("samlgate-c14n-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["responses", "c14n"] {
        for f in std::fs::read_dir(fixtures().join(sub)).unwrap() {
            let p = f.unwrap().path();
            match p.extension().and_then(|e| e.to_str()) {
                Some("xml") => files.push(p),
                Some("b64") => {
                    let raw = std::fs::read_to_string(&p).unwrap();
                    let clean: String = raw.split_whitespace().collect();
                    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(clean) {
                        let out = dir.join(p.file_name().unwrap()).with_extension("xml");
                        std::fs::write(&out, bytes).unwrap();
                        files.push(out);
                    }
                }
                _ => {}
            }
        }
    }
    files.sort();
    // Only documents our parser accepts are canonicalised (DTDs, PIs,
    // comment-split text and malformed input are refused before).
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect();
    let parsed: Vec<(&PathBuf, xml::Document<'_>)> = texts
        .iter()
        .filter_map(|(p, text)| xml::parse(text).ok().map(|root| (p, root)))
        .collect();
    assert!(parsed.len() >= 60, "only {} documents parsed", parsed.len());
    let stdout = python_oracle("c14n_oracle.py", parsed.iter().map(|(p, _)| p));
    let lines: Vec<serde_json::Value> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), parsed.len());
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let mut compared = 0usize;
    let mut wrong = Vec::new();
    for ((path, root), oracle) in parsed.iter().zip(&lines) {
        let name = path.file_name().unwrap().to_string_lossy();
        let theirs = oracle["elements"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {oracle}"));
        let mine = elements(root.root());
        assert_eq!(mine.len(), theirs.len(), "{name}: element count");
        for (i, (&e, t)) in mine.iter().zip(theirs).enumerate() {
            let prefixes: Vec<String> = t["prefixes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect();
            let list: Vec<Option<&str>> = prefixes.iter().map(|p| Some(p.as_str())).collect();
            let mut cases = vec![
                ("plain", ours(e, None, &[]), b64(&t["plain"])),
                ("inclusive", ours(e, None, &list), b64(&t["inclusive"])),
            ];
            if let Some(sig) = e.child(NS_DSIG, "Signature") {
                cases.push(("enveloped", ours(e, Some(sig), &[]), b64(&t["enveloped"])));
            }
            for (what, a, b) in cases {
                compared += 1;
                if a != b {
                    wrong.push(format!(
                        "{name} element #{i} <{}> {what}:\n ours: {}\nlxml: {}",
                        e.name(),
                        String::from_utf8_lossy(&a),
                        String::from_utf8_lossy(&b)
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(compared > 1000, "only {compared} comparisons");
    assert!(
        wrong.is_empty(),
        "{} of {compared} differ:\n{}",
        wrong.len(),
        wrong.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}
