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

/// A valid fixture's XML text (base64 fixtures decoded).
fn xml_of(e: &Entry) -> String {
    let raw = std::fs::read(fixtures().join("responses").join(&e.file)).unwrap();
    if e.file.ends_with(".b64") {
        let clean: Vec<u8> = raw
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, clean).unwrap(),
        )
        .unwrap()
    } else {
        String::from_utf8(raw).unwrap()
    }
}

/// Byte ranges of non-blank text nodes (between `>` and `<`).
fn text_nodes(xml: &str) -> Vec<(usize, usize)> {
    let b = xml.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(gt) = b[i..].iter().position(|&c| c == b'>') {
        let start = i + gt + 1;
        let Some(lt) = b[start..].iter().position(|&c| c == b'<') else {
            break;
        };
        let end = start + lt;
        if !xml[start..end].trim().is_empty() && !xml[start..end].contains('&') {
            out.push((start, end));
        }
        i = end;
    }
    out
}

/// Start tags (`<name ...>` / `<name .../>`), as byte ranges.
fn start_tags(xml: &str) -> Vec<(usize, usize)> {
    let re = regex::Regex::new(r#"<[A-Za-z_][^<>!?/]*?(?:"[^"]*"|'[^']*'|[^<>"'])*?/?>"#).unwrap();
    re.find_iter(xml)
        .map(|m| (m.start(), m.end()))
        .filter(|(s, e)| !xml[*s..*e].starts_with("</"))
        .collect()
}

/// At most `n` items spread over `v`.
fn spread<T: Copy>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n {
        return v.to_vec();
    }
    (0..n).map(|k| v[k * v.len() / n]).collect()
}

fn splice(xml: &str, (s, e): (usize, usize), with: &str) -> String {
    format!("{}{}{}", &xml[..s], with, &xml[e..])
}

/// Systematic mutations of one document: (name, mutated text).
fn mutations(xml: &str) -> Vec<(String, String)> {
    let attr_re = regex::Regex::new(r#"\s([A-Za-z_][\w:.-]*)=("[^"]*"|'[^']*')"#).unwrap();
    let decl_re = regex::Regex::new(r#"xmlns:([A-Za-z_][\w.-]*)="([^"]*)""#).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    let texts = text_nodes(xml);
    let tags = start_tags(xml);
    for (k, &(s, e)) in spread(&texts, 10).iter().enumerate() {
        let t = &xml[s..e];
        if let Some((i, c)) = t.char_indices().find(|(_, c)| c.is_ascii_alphanumeric()) {
            let esc = format!("{}&#{};{}", &t[..i], c as u32, &t[i + 1..]);
            out.push((format!("char_ref_in_text#{k}"), splice(xml, (s, e), &esc)));
            let hex = format!("{}&#x{:X};{}", &t[..i], c as u32, &t[i + 1..]);
            out.push((
                format!("hex_char_ref_in_text#{k}"),
                splice(xml, (s, e), &hex),
            ));
            let changed = format!(
                "{}{}{}",
                &t[..i],
                if c == 'x' { 'y' } else { 'x' },
                &t[i + 1..]
            );
            out.push((format!("changed_text#{k}"), splice(xml, (s, e), &changed)));
        }
        if !t.contains("]]>") {
            out.push((
                format!("cdata#{k}"),
                splice(xml, (s, e), &format!("<![CDATA[{t}]]>")),
            ));
        }
        out.push((
            format!("gt_escaped#{k}"),
            splice(xml, (s, e), &format!("{t}&gt;")),
        ));
    }
    for (k, &(s, e)) in spread(&tags, 12).iter().enumerate() {
        let tag = &xml[s..e];
        let attrs: Vec<regex::Match> = attr_re
            .find_iter(tag)
            .filter(|m| !m.as_str().trim_start().starts_with("xmlns"))
            .collect();
        if attrs.len() >= 2 {
            // Reverse the order of the (non-namespace) attributes.
            let mut pieces: Vec<&str> = attrs.iter().map(|m| m.as_str()).collect();
            pieces.reverse();
            let (first, last) = (attrs[0].start(), attrs[attrs.len() - 1].end());
            let gaps_ok = attrs
                .windows(2)
                .all(|w| tag[w[0].end()..w[1].start()].trim().is_empty());
            if gaps_ok {
                let new = format!("{}{}{}", &tag[..first], pieces.join(""), &tag[last..]);
                out.push((format!("attribute_order#{k}"), splice(xml, (s, e), &new)));
            }
        }
        if let Some(m) = attrs.first() {
            let a = m.as_str();
            if a.contains("=\"") && !a[a.find('=').unwrap()..].contains('\'') {
                let single = a.replacen("=\"", "='", 1).trim_end_matches('"').to_owned() + "'";
                out.push((
                    format!("single_quotes#{k}"),
                    splice(xml, (s, e), &tag.replacen(a, &single, 1)),
                ));
            }
            if let Some(sp) = a
                .find(' ')
                .filter(|&i| i > 0)
                .and_then(|_| a[1..].find(' ').map(|i| i + 1))
            {
                let tabbed = format!("{}\t{}", &a[..sp], &a[sp + 1..]);
                out.push((
                    format!("literal_tab_in_attribute#{k}"),
                    splice(xml, (s, e), &tag.replacen(a, &tabbed, 1)),
                ));
                let refd = format!("{}&#9;{}", &a[..sp], &a[sp + 1..]);
                out.push((
                    format!("tab_ref_in_attribute#{k}"),
                    splice(xml, (s, e), &tag.replacen(a, &refd, 1)),
                ));
            }
            if let Some(q) = a.find(['"', '\'']) {
                let v = &a[q + 1..];
                if let Some((i, c)) = v.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                    let refd = format!("{}&#{};{}", &a[..q + 1 + i], c as u32, &v[i + 1..]);
                    out.push((
                        format!("char_ref_in_attribute#{k}"),
                        splice(xml, (s, e), &tag.replacen(a, &refd, 1)),
                    ));
                }
            }
        }
        let insert_at = if tag.ends_with("/>") {
            tag.len() - 2
        } else {
            tag.len() - 1
        };
        let unused = format!(
            "{} xmlns:unused{k}=\"urn:unused\"{}",
            &tag[..insert_at],
            &tag[insert_at..]
        );
        out.push((
            format!("unused_namespace#{k}"),
            splice(xml, (s, e), &unused),
        ));
        if let Some(d) = decl_re.captures_iter(xml).next() {
            let redecl = format!(
                "{} xmlns:{}=\"{}\"{}",
                &tag[..insert_at],
                &d[1],
                &d[2],
                &tag[insert_at..]
            );
            if !tag.contains(&format!("xmlns:{}=", &d[1])) {
                out.push((
                    format!("redeclared_namespace#{k}"),
                    splice(xml, (s, e), &redecl),
                ));
            }
        }
        let added = format!("{} extra=\"1\"{}", &tag[..insert_at], &tag[insert_at..]);
        out.push((format!("added_attribute#{k}"), splice(xml, (s, e), &added)));
        if let Some(open) = tag.strip_suffix("/>") {
            let name: String = tag[1..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            let pair = format!("{open}></{name}>");
            out.push((format!("empty_as_pair#{k}"), splice(xml, (s, e), &pair)));
        } else if xml[e..].starts_with("</") {
            let name: String = tag[1..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '>')
                .collect();
            let close = format!("</{name}>");
            if xml[e..].starts_with(&close) {
                let short = format!("{}/>", &tag[..tag.len() - 1]);
                out.push((
                    format!("pair_as_empty#{k}"),
                    splice(xml, (s, e + close.len()), &short),
                ));
            }
        }
        // Between this tag and whatever follows.
        out.push((
            format!("comment_after_tag#{k}"),
            splice(xml, (e, e), "<!-- inserted -->"),
        ));
        out.push((
            format!("whitespace_after_tag#{k}"),
            splice(xml, (e, e), "\n  "),
        ));
    }
    // An unused declaration's URI made relative: c14n drops the declaration,
    // but libxml2's canonicaliser refuses relative namespace URIs (found by
    // the differential fuzzer).
    for (k, d) in decl_re.captures_iter(xml).take(3).enumerate() {
        let relative = xml.replacen(&d[0], &format!("xmlns:{}=\"relative/{k}\"", &d[1]), 1);
        out.push((format!("relative_namespace_uri#{k}"), relative));
    }
    // IDs that are not XML names, or a second element's ID registered twice
    // through a namespaced `ID` (samael refuses both before libxmlsec1
    // runs; the differential fuzzer found the native path accepting them).
    let id_re = regex::Regex::new(r#"\sID="([^"]*)""#).unwrap();
    if let Some(first) = id_re.captures(xml) {
        for (k, bad) in ["1x", "a b", "a:b", "_r{x", "", "_\u{e9}t\u{203f}"]
            .iter()
            .enumerate()
        {
            let changed = xml.replacen(&first[0], &format!(" ID=\"{bad}\""), 1);
            out.push((format!("id_not_an_xml_name#{k}"), changed));
        }
        let dup = format!(" xmlns:zz=\"urn:zz\" zz:ID=\"{}\">", &first[1]);
        if let Some(&(_, e)) = tags
            .iter()
            .rev()
            .find(|&&(s, e)| !xml[s..e].ends_with("/>"))
        {
            out.push((
                "namespaced_id_registered_twice".into(),
                splice(xml, (e - 1, e), &dup),
            ));
        }
    }
    out.push(("crlf_line_endings".into(), xml.replace('\n', "\r\n")));
    out.push(("lone_cr_line_endings".into(), xml.replace('\n', "\r")));
    out.push((
        "xml_declaration".into(),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{xml}"),
    ));
    for d in decl_re.captures_iter(xml).take(4) {
        let p = &d[1];
        let renamed = xml
            .replace(&format!("xmlns:{p}="), &format!("xmlns:{p}x="))
            .replace(&format!("<{p}:"), &format!("<{p}x:"))
            .replace(&format!("</{p}:"), &format!("</{p}x:"));
        out.push((format!("renamed_prefix_{p}"), renamed));
    }
    out
}

#[test]
fn native_and_libxmlsec1_agree_on_mutations_of_valid_responses() {
    let mut wrong = Vec::new();
    let mut total = 0usize;
    let mut accepted = 0usize;
    for e in manifest().into_iter().filter(|e| e.expect == "accept") {
        let xml = xml_of(&e);
        for (name, mutated) in mutations(&xml) {
            total += 1;
            let native = decide(&e, mutated.as_bytes(), VerifierKind::Native);
            let oracle = decide(&e, mutated.as_bytes(), VerifierKind::Libxmlsec1);
            if native.1.is_none() {
                accepted += 1;
            }
            if native.0 != oracle.0 || native.1 != oracle.1 {
                wrong.push(format!(
                    "{} / {name}: native {:?} {:?} ({}); libxmlsec1 {:?} {:?} ({})",
                    e.name, native.0, native.1, native.2, oracle.0, oracle.1, oracle.2
                ));
            }
        }
    }
    eprintln!("mutations: {total}, accepted {accepted}");
    // Both kinds must occur, or the mutations test nothing.
    assert!(
        total > 500 && accepted > 100 && total - accepted > 100,
        "{total} mutations, {accepted} accepted"
    );
    assert!(
        wrong.is_empty(),
        "{} of {total} disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
