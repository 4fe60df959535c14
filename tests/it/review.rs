//! Regression tests for the security review's findings (issue "Security
//! review findings"): one named test per finding, each shape built from a
//! real signed fixture so that only the property under test can refuse it.
//! docs/threat-model.md lists them with the defence.

use crate::DefaultAccount;
use std::time::{Duration, Instant};

use samlgate::config::VerifierKind;

use super::support::{Entry, entry, fixtures, run_bytes, run_bytes_with};

/// The Okta-shaped fixture: only the assertion is signed, so the Response
/// element (its attributes, declarations, extra children) can be changed
/// without breaking any signature.
const OKTA: &str = "valid_okta_assertion_signed";

fn okta() -> (Entry, String) {
    let e = entry(OKTA);
    let xml = std::fs::read_to_string(fixtures().join("responses").join(&e.file)).unwrap();
    (e, xml)
}

/// The okta fixture with `extra` written into the Response start tag (just
/// after its name and namespace declaration).
fn with_response_attrs(extra: &str) -> (Entry, String) {
    let (e, xml) = okta();
    let at = "<saml2p:Response ";
    assert!(xml.starts_with(at));
    (e, format!("{at}{extra} {}", &xml[at.len()..]))
}

/// The okta fixture with `content` inserted as the Response's first child
/// (unsigned content: the assertion signature still verifies).
fn with_response_child(content: &str) -> (Entry, String) {
    let (e, xml) = okta();
    let gt = xml.find('>').unwrap() + 1;
    (e, format!("{}{content}{}", &xml[..gt], &xml[gt..]))
}

fn code_of(e: &Entry, xml: &str, verifier: VerifierKind) -> Option<&'static str> {
    run_bytes_with(e, xml.as_bytes(), verifier).code
}

fn both_refuse(e: &Entry, xml: &str, code: &str) {
    for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
        let r = run_bytes_with(e, xml.as_bytes(), v);
        assert_eq!(r.code, Some(code), "{v:?}: {:?}", r.reason);
    }
}

/// Best of `n` runs of a whole check of `xml` (native verifier).
fn best_time(e: &Entry, xml: &str, n: usize) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let _ = run_bytes(e, xml.as_bytes());
            t.elapsed()
        })
        .min()
        .unwrap()
}

// --- 1. parser work linear in the input; counts SAML never needs capped ---

#[test]
fn many_attributes_on_the_unsigned_response_are_refused_early() {
    // The review's POST: ~74,000 short distinct attributes, 523 KB.
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let name = |i: usize| -> String {
        [i / 2704, i / 52 % 52, i % 52]
            .map(|k| letters[k])
            .iter()
            .collect()
    };
    let attrs: String = (0..74_000).map(|i| format!(" {}=''", name(i))).collect();
    let (e, xml) = with_response_attrs(&attrs);
    assert!(xml.len() < 530 * 1024, "{}", xml.len());
    both_refuse(&e, &xml, "xml_limit_exceeded");
    let r = run_bytes(&e, xml.as_bytes());
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("attributes on one element"),
        "{:?}",
        r.reason
    );
}

#[test]
fn attribute_cap_allows_what_idps_write_and_refuses_one_more() {
    let n = samlgate::saml::xml::MAX_ATTRIBUTES - 4; // ID, Version, IssueInstant, Destination
    let attrs: String = (0..n).map(|i| format!(" x{i}=\"v\"")).collect();
    let (e, xml) = with_response_attrs(&attrs);
    assert_eq!(code_of(&e, &xml, VerifierKind::Native), None);
    let (e, xml) = with_response_attrs(&format!("{attrs} one-more=\"v\""));
    assert_eq!(
        code_of(&e, &xml, VerifierKind::Native),
        Some("xml_limit_exceeded")
    );
}

#[test]
fn duplicate_attributes_are_found_among_many() {
    // Past the pairwise range the duplicate check sorts; it must still
    // find a duplicate anywhere, through prefixes bound to one namespace.
    let mut attrs: String = (0..40).map(|i| format!(" x{i}=\"v\"")).collect();
    attrs.push_str(" xmlns:p=\"urn:a\" xmlns:q=\"urn:a\" p:k=\"1\" q:k=\"2\"");
    let (e, xml) = with_response_attrs(&attrs);
    let r = run_bytes(&e, xml.as_bytes());
    assert_eq!(r.code, Some("malformed_xml"));
    assert!(r.reason.unwrap().contains("duplicate attribute k"));
    let (e, xml) = with_response_attrs(&format!("{attrs:.200} x7=\"again\""));
    assert_eq!(
        code_of(&e, &xml, VerifierKind::Native),
        Some("malformed_xml")
    );
}

#[test]
fn many_namespace_declarations_are_refused() {
    let decls: String = (0..5_000)
        .map(|i| format!(" xmlns:p{i}=\"urn:x:{i}\""))
        .collect();
    let (e, xml) = with_response_attrs(&decls);
    both_refuse(&e, &xml, "xml_limit_exceeded");
}

#[test]
fn namespaces_in_scope_are_capped_across_nesting() {
    // 20 per element is under the per-element cap; nested, they add up.
    let mut open = String::new();
    let mut close = String::new();
    for d in 0..5 {
        let decls: String = (0..20)
            .map(|i| format!(" xmlns:p{d}x{i}=\"urn:x:{d}:{i}\""))
            .collect();
        open.push_str(&format!("<p0x0:e{decls}>"));
        close.insert_str(0, "</p0x0:e>");
    }
    let (e, xml) = with_response_child(&format!(
        "<samlp:Extensions xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">{open}{close}</samlp:Extensions>"
    ));
    both_refuse(&e, &xml, "xml_limit_exceeded");
}

#[test]
fn element_count_is_capped() {
    let many = "<x:v/>".repeat(samlgate::saml::xml::MAX_ELEMENTS + 1);
    let (mut e, xml) = with_response_child(&format!(
        "<samlp:Extensions xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:x=\"urn:x\">{many}</samlp:Extensions>"
    ));
    // Over the default size cap otherwise: raise it so the count refuses.
    e.config = "config.toml".into();
    let mut cfg = super::support::config(&e.config);
    cfg.security.max_response_bytes = 4 * 1024 * 1024;
    let r = samlgate::check::check_response(
        xml.as_bytes(),
        &cfg,
        &e.request_ids,
        &super::support::clock(&e.at),
    );
    assert_eq!(r.code, Some("xml_limit_exceeded"), "{:?}", r.reason);
}

#[test]
fn long_inclusive_prefix_list_is_refused() {
    let (e, xml) = okta();
    let list: String = (0..10_000).map(|i| format!("p{i} ")).collect();
    let xml = xml.replacen(
        "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
        &format!(
            "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"><ec:InclusiveNamespaces xmlns:ec=\"http://www.w3.org/2001/10/xml-exc-c14n#\" PrefixList=\"{list}\"/></ds:Transform>"
        ),
        1,
    );
    both_refuse(&e, &xml, "xml_limit_exceeded");
}

#[test]
fn many_signatures_under_the_assertion_stop_at_the_profile() {
    let (e, xml) = okta();
    let sig_start = xml.find("<ds:Signature").unwrap();
    let sig_end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let sig = &xml[sig_start..sig_end];
    let xml = format!("{}{}{}", &xml[..sig_end], sig.repeat(60), &xml[sig_end..]);
    both_refuse(&e, &xml, "signature_profile_violation");
}

/// The worst shapes that stay under every cap cost about what a benign
/// document of the same size costs (a response padded with unsigned
/// extension elements): quadratic work would show as hundreds of times.
/// Ratios of best-of-five runs side by side, never absolute times.
#[test]
fn worst_shapes_under_the_caps_cost_a_few_times_a_benign_document() {
    const SIZE: usize = 480 * 1024;
    let ext = |body: &str, decls: &str| {
        format!(
            "<samlp:Extensions xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:x=\"urn:x\"{decls}>{body}</samlp:Extensions>"
        )
    };
    let fill = |unit: &str| unit.repeat(SIZE / unit.len());
    let benign = ext(&fill("<x:v>Meetings-Group-0001</x:v>"), "");
    // 31 prefixes in scope, every element unprefixed (the default
    // namespace lookup scans them all) and empty (`<v></v>`: as many `<v/>`
    // would pass the element cap).
    let scope: String = (0..29)
        .map(|i| format!(" xmlns:p{i}=\"urn:p:{i}\""))
        .collect();
    let deep_scope = ext(&fill("<v></v>"), &scope);
    // Elements with the most attributes allowed, each prefixed with the
    // prefix declared first (found last).
    let attrs: String = (0..60).map(|i| format!(" p0:a{i}=\"\"")).collect();
    let many_attrs = ext(&fill(&format!("<x:v{attrs}/>")), &scope);
    // A fresh namespace name on every element (the remembered-URI list).
    let uris: String = (0..8000)
        .map(|i| format!("<x:v xmlns:u=\"urn:uri:{i:06}\"/>"))
        .collect();
    let fresh_uris = ext(&fill(&uris), "");
    // IDs everywhere (the duplicate-ID sets).
    let ids: String = (0..20_000)
        .map(|i| format!("<x:v ID=\"_i{i}\"/>"))
        .collect();
    let many_ids = ext(&ids, "");
    let (e, _) = okta();
    let docs: Vec<(&str, String)> = vec![
        ("deep scope", deep_scope),
        ("many attributes", many_attrs),
        ("fresh namespace names", fresh_uris),
        ("many IDs", many_ids),
    ];
    let base = with_response_child(&benign).1;
    assert_eq!(run_bytes(&e, base.as_bytes()).code, None);
    let mut report = Vec::new();
    for (name, body) in &docs {
        let xml = with_response_child(body).1;
        assert!(xml.len() <= base.len() + 64 * 1024, "{name}: {}", xml.len());
        let r = run_bytes(&e, xml.as_bytes());
        assert_eq!(r.code, None, "{name} is under every cap: {:?}", r.reason);
        let t_benign = best_time(&e, &base, 5);
        let t = best_time(&e, &xml, 5);
        let ratio = t.as_secs_f64() / t_benign.as_secs_f64();
        report.push(format!("{name}: {ratio:.2}x ({t:?} vs {t_benign:?})"));
        assert!(ratio < 6.0, "{report:?}");
    }
    eprintln!("worst shapes vs benign: {report:#?}");
}

// --- 2. signatures hidden from the pre-check never reach libxmlsec1 ---

/// Shapes that hid a `ds:Signature` from the pre-check while libxml2 (which
/// reports and ignores reserved-namespace bindings) still saw XML-DSig,
/// each with a Reference that would make libxmlsec1 read a device, open a
/// file or connect out.
fn hidden_signature_shapes(target: &str) -> Vec<(&'static str, String)> {
    let sig = |open: &str, close: &str| {
        format!(
            "{open}<ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
<ds:Reference URI=\"{target}\"><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\
<ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue>{close}"
        )
    };
    let outer = "xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"";
    vec![
        (
            "prefix bound to the xmlns namespace",
            format!(
                "<x:w xmlns:x=\"urn:x\" {outer}>{}</x:w>",
                sig(
                    "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/xmlns/\">",
                    "</ds:Signature>"
                )
            ),
        ),
        (
            "default namespace bound to the xmlns namespace",
            format!(
                "<x:w xmlns:x=\"urn:x\" xmlns=\"http://www.w3.org/2000/09/xmldsig#\" {outer}>{}</x:w>",
                sig(
                    "<Signature xmlns=\"http://www.w3.org/2000/xmlns/\">",
                    "</Signature>"
                )
                .replace("ds:", "")
            ),
        ),
        (
            "default namespace bound to the XML namespace",
            format!(
                "<x:w xmlns:x=\"urn:x\" xmlns=\"http://www.w3.org/2000/09/xmldsig#\" {outer}>{}</x:w>",
                sig(
                    "<Signature xmlns=\"http://www.w3.org/XML/1998/namespace\">",
                    "</Signature>"
                )
                .replace("ds:", "")
            ),
        ),
        (
            "Signature in a foreign namespace",
            format!(
                "<x:w xmlns:x=\"urn:x\">{}</x:w>",
                sig("<x:Signature>", "</x:Signature>")
            ),
        ),
    ]
}

#[test]
fn hidden_signatures_are_refused_by_both_verifiers_before_any_dereference() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "x").unwrap();
    let targets = [
        "file:///dev/zero".to_owned(),
        format!("http://127.0.0.1:{port}/ssrf"),
        format!("file://{}", file.display()),
    ];
    for target in &targets {
        for (name, shape) in hidden_signature_shapes(target) {
            let (e, xml) = with_response_child(&shape);
            for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
                let t = Instant::now();
                let r = run_bytes_with(&e, xml.as_bytes(), v);
                assert!(
                    matches!(
                        r.code,
                        Some("malformed_xml" | "signature_profile_violation")
                    ),
                    "{name} / {target} / {v:?}: {:?} {:?}",
                    r.code,
                    r.reason
                );
                assert!(
                    !super::support::reached_crypto(&r),
                    "{name}: refused before any verifier ran"
                );
                assert!(t.elapsed() < Duration::from_secs(2), "{name}: bounded time");
            }
        }
    }
    assert!(
        listener.accept().is_err(),
        "no verifier may connect out for a Reference"
    );
    // The file was never read: its access time is not what we can rely
    // on, but a refusal before the signature step (asserted above) means
    // nothing dereferenced it.
}

// --- 6. smaller disagreements with libxml2/xmlsec ---

#[test]
fn explicit_xmlns_xml_declaration_does_not_break_a_valid_signature() {
    let idp = super::gateway::idp();
    let p = okta_params();
    // An element in the xml namespace under an explicit `xmlns:xml`:
    // exclusive c14n never renders that declaration. (libxml2 drops the
    // declaration when it writes the signed assertion out, so it is put
    // back after signing: it changes nothing a signature covers.)
    let template = idp.assertion_template(&p).replacen(
        "</saml:AttributeStatement>",
        "<saml:Attribute Name=\"note\"><saml:AttributeValue><xml:n>x</xml:n></saml:AttributeValue></saml:Attribute></saml:AttributeStatement>",
        1,
    );
    let signed = idp.sign_assertion(&template).unwrap().replacen(
        "<saml:Assertion ",
        "<saml:Assertion xmlns:xml=\"http://www.w3.org/XML/1998/namespace\" ",
        1,
    );
    let xml = idp.wrap(&p, &signed);
    for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
        let r = check_dev(&xml, v);
        assert_eq!(r.code, None, "{v:?}: {:?}", r.reason);
    }
}

#[test]
fn xml_id_counts_among_ids() {
    let (e, xml) = okta();
    // xml:id duplicating the assertion's ID: libxml2 registers both.
    let (e2, dup) = with_response_child("<x:w xmlns:x=\"urn:x\" xml:id=\"_assert-0001\"/>");
    assert_eq!(e.name, e2.name);
    both_refuse(&e, &dup, "duplicate_id");
    let (_, bad) = with_response_child("<x:w xmlns:x=\"urn:x\" xml:id=\"1 not a name\"/>");
    both_refuse(&e, &bad, "malformed_xml");
    let _ = xml;
}

#[test]
fn a_second_byte_order_mark_is_refused() {
    let (e, xml) = okta();
    let one = format!("\u{feff}{xml}");
    assert_eq!(code_of(&e, &one, VerifierKind::Native), None);
    let two = format!("\u{feff}\u{feff}{xml}");
    both_refuse(&e, &two, "malformed_xml");
    // As POSTed (base64), too.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(two.as_bytes());
    assert_eq!(run_bytes(&e, b64.as_bytes()).code, Some("malformed_xml"));
}

#[test]
fn deflated_response_on_the_post_binding_is_named() {
    use base64::Engine;
    use std::io::Write;
    let (e, xml) = okta();
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(xml.as_bytes()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap());
    let r = run_bytes(&e, b64.as_bytes());
    assert_eq!(r.code, Some("malformed_encoding"));
    assert!(
        r.reason.as_deref().unwrap().contains("DEFLATE-compressed"),
        "{:?}",
        r.reason
    );
    // Other bytes that are not UTF-8 keep the plain message.
    let b64 = base64::engine::general_purpose::STANDARD.encode(b"<a>\xff\xfe</a>");
    let r = run_bytes(&e, b64.as_bytes());
    assert_eq!(r.code, Some("malformed_encoding"));
    assert!(!r.reason.unwrap().contains("DEFLATE"));
}

/// Parameters for the development IdP matching the fixture config
/// (tests/fixtures/config.toml) at the present time.
fn okta_params() -> samlgate::devidp::ResponseParams {
    let cfg = super::support::config("config.toml");
    samlgate::devidp::ResponseParams {
        name_id: "alice@example.com".into(),
        attributes: vec![("email".into(), vec!["alice@example.com".into()])],
        acs_url: cfg.acct().sp.acs_url.clone(),
        audience: cfg.acct().sp.entity_id.clone(),
        in_response_to: None,
        now: samlgate::clock::Clock::now(&samlgate::clock::SystemClock),
        validity: chrono::Duration::minutes(5),
        assertion_id: None,
    }
}

/// A development-IdP response checked against the fixture config now.
fn check_dev(xml: &str, v: VerifierKind) -> samlgate::check::Report {
    let mut cfg = super::support::config("config.toml");
    cfg.security.verifier = v;
    samlgate::check::check_response(xml.as_bytes(), &cfg, &[], &samlgate::clock::SystemClock)
}

// --- 3. solicitation from signed data only, bound to the browser ---

/// The request id and the request cookie (`name=value`) of a started login.
async fn start_login(g: &super::gateway::Gw, cookie: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let r = g.get("/saml/login", &headers).await;
    assert_eq!(r.status, 302);
    let set = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("samlgate_session_authn="))
        .expect("a request cookie");
    for attr in ["HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=600"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let pair = set.split(';').next().unwrap().to_owned();
    let id = pair
        .split_once('=')
        .unwrap()
        .1
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    (id, pair)
}

async fn post_acs_with(
    g: &super::gateway::Gw,
    b64: &str,
    cookie: Option<&str>,
) -> super::http_support::Reply {
    let body = format!("SAMLResponse={}", samlgate::gateway::url_encode(b64));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    super::http_support::request(
        http::Method::POST,
        &format!("{}/saml/acs", g.base),
        &headers,
        body,
    )
    .await
}

fn page_code(r: &super::http_support::Reply) -> String {
    r.text()
        .split("Code: <code>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_response_in_response_to_does_not_solicit() {
    let g = super::gateway::gateway(|c| c.acct_mut().idp.allow_idp_initiated = false).await;
    // Anyone can mint an outstanding request id.
    let (id, _) = start_login(&g, None).await;
    // An unsolicited assertion (its signed SubjectConfirmationData names no
    // request), the minted id written into the unsigned Response.
    let idp = super::gateway::idp();
    let p = g.params("mallory@example.com", None);
    let xml = idp.response(&p).unwrap().replacen(
        "<samlp:Response ",
        &format!("<samlp:Response InResponseTo=\"{id}\" "),
        1,
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&xml);
    let r = g.post_acs(&b64, None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(page_code(&r), "in_response_to_mismatch");
    assert!(
        r.header("set-cookie")
            .is_none_or(|c| !c.starts_with("samlgate_session="))
    );
    // Both verifiers, in process, decide alike.
    for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
        let mut cfg = (*g.cfg).clone();
        cfg.security.verifier = v;
        let rep = samlgate::check::check_response(
            xml.as_bytes(),
            &cfg,
            std::slice::from_ref(&id),
            g.clock.as_ref(),
        );
        assert_eq!(
            rep.code,
            Some("in_response_to_mismatch"),
            "{v:?}: {:?}",
            rep.reason
        );
    }
    // The same assertion unsolicited is what it is: IdP-initiated, refused.
    let r = g.post_acs(&idp.response_b64(&p).unwrap(), None).await;
    assert_eq!(page_code(&r), "idp_initiated_refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_response_in_response_to_must_repeat_the_signed_one() {
    let g = super::gateway::gateway(|_| {}).await;
    let (id, cookie) = start_login(&g, None).await;
    let (other, _) = start_login(&g, None).await;
    let idp = super::gateway::idp();
    let p = g.params("alice@example.com", Some(id.clone()));
    // The signed confirmation answers `id`; the unsigned Response says `other`.
    let xml = idp.response(&p).unwrap().replacen(
        &format!("InResponseTo=\"{id}\">"),
        &format!("InResponseTo=\"{other}\">"),
        1,
    );
    assert!(xml.contains(&other));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&xml);
    let r = post_acs_with(&g, &b64, Some(&cookie)).await;
    assert_eq!(page_code(&r), "in_response_to_mismatch");
    // Repeating the signed value is fine.
    let r = post_acs_with(&g, &idp.response_b64(&p).unwrap(), Some(&cookie)).await;
    assert_eq!(r.status, 303, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_started_in_another_browser_is_refused() {
    let g = super::gateway::gateway(|_| {}).await;
    let (_victim_id, victim_cookie) = start_login(&g, None).await;
    let (attacker_id, attacker_cookie) = start_login(&g, None).await;
    // The attacker's own signed response (login CSRF: pushed into the
    // victim's browser, which carries the victim's request cookie).
    let b64 = super::gateway::idp()
        .response_b64(&g.params("attacker@example.com", Some(attacker_id.clone())))
        .unwrap();
    let r = post_acs_with(&g, &b64, Some(&victim_cookie)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(page_code(&r), "request_binding_failed");
    // Nothing was consumed: the browser that started it still finishes it,
    // and its answered id leaves its cookie.
    let r = post_acs_with(&g, &b64, Some(&attacker_cookie)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cleared = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("samlgate_session_authn="))
        .expect("the request cookie is rewritten");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_cookie_remembers_a_few_logins_of_one_browser() {
    let g = super::gateway::gateway(|_| {}).await;
    let (first, cookie) = start_login(&g, None).await;
    let (second, cookie2) = start_login(&g, Some(&cookie)).await;
    assert!(
        cookie2.contains(&first) && cookie2.contains(&second),
        "{cookie2}"
    );
    // The first tab's login still completes with the newer cookie, and
    // leaves the second one in it.
    let b64 = super::gateway::idp()
        .response_b64(&g.params("alice@example.com", Some(first.clone())))
        .unwrap();
    let r = post_acs_with(&g, &b64, Some(&cookie2)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let rest = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("samlgate_session_authn="))
        .unwrap();
    assert!(
        rest.starts_with(&format!("samlgate_session_authn={second};")),
        "{rest}"
    );
    // Four at most: the oldest is forgotten.
    let mut c = cookie2;
    for _ in 0..4 {
        c = start_login(&g, Some(&c)).await.1;
    }
    assert_eq!(c.split('=').nth(1).unwrap().split('.').count(), 4);
    assert!(!c.contains(&second), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_request_cookie_is_admitted_only_for_an_outstanding_signed_request() {
    // Default: plain HTTP or a browser that withheld the cookie still signs
    // in, when the signed InResponseTo names an outstanding request.
    let g = super::gateway::gateway(|c| c.acct_mut().idp.allow_idp_initiated = false).await;
    let (id, _) = start_login(&g, None).await;
    let idp = super::gateway::idp();
    let b64 = idp
        .response_b64(&g.params("alice@example.com", Some(id.clone())))
        .unwrap();
    let r = post_acs_with(&g, &b64, None).await;
    assert_eq!(r.status, 303, "{}", r.text());
    // Not outstanding (already answered, or never issued): refused.
    let b64 = idp
        .response_b64(&g.params("alice@example.com", Some(id)))
        .unwrap();
    let r = post_acs_with(&g, &b64, None).await;
    assert_eq!(page_code(&r), "in_response_to_mismatch");
    let b64 = idp
        .response_b64(&g.params("alice@example.com", Some(samlgate::devidp::random_id())))
        .unwrap();
    let r = post_acs_with(&g, &b64, None).await;
    assert_eq!(page_code(&r), "in_response_to_mismatch");

    // `sp.require_request_cookie = true`: the cookie is required.
    let g = super::gateway::gateway(|c| c.acct_mut().sp.require_request_cookie = true).await;
    let (id, cookie) = start_login(&g, None).await;
    let b64 = idp
        .response_b64(&g.params("alice@example.com", Some(id)))
        .unwrap();
    let r = post_acs_with(&g, &b64, None).await;
    assert_eq!(page_code(&r), "request_binding_failed");
    let r = post_acs_with(&g, &b64, Some(&cookie)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    // IdP-initiated logins need no cookie (they answer no request).
    let r = post_acs_with(
        &g,
        &idp.response_b64(&g.params("bob@example.com", None))
            .unwrap(),
        None,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cookie_never_reaches_the_upstream() {
    let g = super::gateway::gateway(|_| {}).await;
    let (_, authn) = start_login(&g, None).await;
    let session = g.login("alice@example.com").await;
    let r = g
        .get(
            "/x",
            &[("cookie", &format!("{authn}; {session}; theme=dark"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["cookie"], "theme=dark");
}

// --- 1 (HTTP). a slow verification does not hold up other requests ---

/// On one async worker (a current-thread runtime, as each `serve` worker
/// is), large logins are verified on the blocking pool while `GET`s on the
/// same worker keep being answered: the slowest `GET` during the logins is
/// compared with one login's time alone in the same run, never with a fixed
/// time. (Verified inline, a `GET` waits for a whole verification.)
#[tokio::test(flavor = "current_thread")]
async fn slow_verifications_do_not_delay_a_concurrent_get() {
    let g = super::gateway::gateway(|_| {}).await;
    let idp = super::gateway::idp();
    // Valid, large responses (~380 KB: 4,500 group values).
    let groups: Vec<String> = (0..4_500)
        .map(|i| format!("Meetings-Group-{i:05}"))
        .collect();
    let bodies: Vec<String> = (0..7)
        .map(|i| {
            let mut p = g.params(&format!("user{i}@example.com"), None);
            p.attributes.push(("groups".into(), groups.clone()));
            format!(
                "SAMLResponse={}",
                samlgate::gateway::url_encode(&idp.response_b64(&p).unwrap())
            )
        })
        .collect();
    assert!(bodies[0].len() > 300_000, "{}", bodies[0].len());
    // The clients run on a thread of their own, so that this runtime's
    // one thread is the gateway's worker and nothing else.
    let base = g.base.clone();
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let post = |base: String, body: String| async move {
                let t = Instant::now();
                let r = super::http_support::request(
                    http::Method::POST,
                    &format!("{base}/saml/acs"),
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body,
                )
                .await;
                assert_eq!(r.status, 303, "{}", r.text());
                t.elapsed()
            };
            let mut bodies = bodies.into_iter();
            let alone = post(base.clone(), bodies.next().unwrap()).await;
            let posts: Vec<_> = bodies
                .map(|b| tokio::spawn(post(base.clone(), b)))
                .collect();
            let mut gets = Vec::new();
            while posts.iter().any(|p| !p.is_finished()) {
                let t = Instant::now();
                let r = super::http_support::request(
                    http::Method::GET,
                    &format!("{base}/saml/metadata"),
                    &[],
                    "",
                )
                .await;
                assert_eq!(r.status, 200);
                gets.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut logins = Vec::new();
            for p in posts {
                logins.push(p.await.unwrap());
            }
            (alone, gets, logins)
        })
    });
    // Serve until the clients are done.
    while !client.is_finished() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (alone, gets, logins) = client.join().unwrap();
    let worst_get = *gets.iter().max().unwrap();
    eprintln!(
        "one login alone {alone:?}; {} GETs during 6 concurrent logins ({logins:?}), the slowest {worst_get:?}",
        gets.len()
    );
    assert!(
        worst_get * 2 < alone,
        "a GET waited for a verification: {worst_get:?} vs one login alone {alone:?}"
    );
}

// --- 5. different signed identities never fold into one user ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_identities_are_refused_at_login() {
    let g = super::gateway::gateway(|_| {}).await;
    let kate = g.login("kate@example.com").await;
    let idp = super::gateway::idp();
    // (Unicode spaces are never trimmed, so the value is not even
    // email-shaped: no candidate, `mapping_failed`.)
    for (class, email, code) in [
        ("KELVIN SIGN", "\u{212A}ate@example.com", "email_not_ascii"),
        ("fullwidth k", "\u{FF4B}ate@example.com", "email_not_ascii"),
        ("Cyrillic a", "k\u{430}te@example.com", "email_not_ascii"),
        (
            "dotted capital I",
            "\u{130}van@example.com",
            "email_not_ascii",
        ),
        (
            "NO-BREAK SPACE around",
            "\u{A0}kate@example.com\u{A0}",
            "mapping_failed",
        ),
        (
            "IDEOGRAPHIC SPACE around",
            "\u{3000}kate@example.com",
            "mapping_failed",
        ),
    ] {
        let r = g
            .post_acs(&idp.response_b64(&g.params(email, None)).unwrap(), None)
            .await;
        assert_eq!(r.status, 403, "{class}: {}", r.text());
        assert_eq!(page_code(&r), code, "{class}");
    }
    // Kate is still Kate, and alone.
    let r = g.get("/x", &[("cookie", &kate)]).await;
    assert_eq!(r.json()["headers"]["x-samlgate-email"], "kate@example.com");
    // ASCII case still folds (the same person), XML whitespace is trimmed.
    let b64 = idp
        .response_b64(&g.params("\n KATE@Example.com\t", None))
        .unwrap();
    let r = g.post_acs(&b64, None).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = g
        .get("/x", &[("cookie", &super::gateway::cookie_of(&r))])
        .await;
    assert_eq!(r.json()["headers"]["x-samlgate-email"], "kate@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn international_addresses_when_allowed_stay_distinct() {
    let g = super::gateway::gateway(|c| c.security.allow_international_email = true).await;
    let _ = g.login("kate@example.com").await;
    let idp = super::gateway::idp();
    let r = g
        .post_acs(
            &idp.response_b64(&g.params("\u{212A}ate@example.com", None))
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = g
        .get("/x", &[("cookie", &super::gateway::cookie_of(&r))])
        .await;
    assert_eq!(
        r.json()["headers"]["x-samlgate-email"],
        "\u{212A}ate@example.com",
        "a user of its own, never kate"
    );
    assert!(
        g.store
            .get_user("\u{212A}ate@example.com")
            .await
            .unwrap()
            .is_some()
    );
    // Unicode spaces are never trimmed into an address.
    let r = g
        .post_acs(
            &idp.response_b64(&g.params("\u{A0}kate@example.com", None))
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_create_applies_the_same_email_rules() {
    use samlgate::config::ProvisioningMode;
    let r =
        super::admin_api::start(ProvisioningMode::PriorToSignIn, &[super::admin_api::TOKEN]).await;
    let body = |email: &str| {
        serde_json::json!({"action":"ssoCreate","user_info":{"email":email,"type":1,"first_name":"K","last_name":"A"}})
            .to_string()
    };
    let ok = super::admin_api::create(&r, &body(" Kate@Example.com ")).await;
    assert_eq!(ok.status, 201, "{}", ok.text());
    for email in [
        "\u{212A}ate@example.com",
        "\u{A0}kate@example.com",
        "k\u{430}te@example.com",
    ] {
        let res = super::admin_api::create(&r, &body(email)).await;
        assert_eq!(res.status, 400, "{email}: {}", res.text());
        assert_eq!(res.json()["code"], "email_not_ascii", "{email}");
    }
    // The same person through ASCII case: a duplicate.
    let res = super::admin_api::create(&r, &body("KATE@example.COM")).await;
    assert_eq!(res.status, 409, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_applies_the_same_email_rules() {
    use samlgate::provisioning::csv::{ImportOptions, import};
    let dir = tempfile::tempdir().unwrap();
    let store = samlgate::store::embedded::EmbeddedStore::open(
        &dir.path().join("s.db"),
        std::sync::Arc::new(samlgate::clock::SystemClock),
    )
    .unwrap();
    let mut cfg = super::support::config("config.toml");
    cfg.provisioning.outbox_dir = dir.path().join("outbox");
    let csv = "email,first_name,last_name\nkate@example.com,Kate,A\n\u{212A}ate@example.com,K,B\n\u{A0}kate@example.com,K,C\nKATE@example.com ,K,D\n";
    let opts = ImportOptions {
        license: samlgate::mapping::License::Basic,
        features: vec![],
        sso_only: true,
        dry_run: false,
        update_existing: false,
        batch_size: 100,
    };
    let now = samlgate::clock::Clock::now(&samlgate::clock::SystemClock);
    let rep = import(
        &store,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        csv.as_bytes(),
        &opts,
        now,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(rep.created, 1, "{rep:?}");
    let lines: Vec<(u64, String)> = rep
        .errors
        .iter()
        .map(|e| (e.line, e.reason.clone()))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0].0, 3);
    assert!(lines[0].1.contains("email_not_ascii"), "{lines:?}");
    assert_eq!(lines[1].0, 4);
    assert!(lines[1].1.contains("email_not_ascii"), "{lines:?}");
    assert_eq!(lines[2].0, 5, "the same person again: {lines:?}");
}

// --- 4. no decryption oracle ---

/// An EncryptedAssertion of `plaintext` for the fixture SP's key, with the
/// content algorithm `alg` (`aes128-gcm` or `aes128-cbc`) and the key
/// transport RSA-OAEP; `wrapped` replaces the wrapped key when given.
fn encrypted_assertion(plaintext: &[u8], alg: &str, wrapped: Option<Vec<u8>>) -> String {
    use base64::Engine;
    use openssl::rsa::Padding;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(fixtures().join("keys/sp.crt")).unwrap())
            .unwrap();
    let rsa = cert.public_key().unwrap().rsa().unwrap();
    let cek = [7u8; 16];
    let body = if alg.ends_with("gcm") {
        let iv = [1u8; 12];
        let mut tag = [0u8; 16];
        let ct = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_128_gcm(),
            &cek,
            Some(&iv),
            &[],
            plaintext,
            &mut tag,
        )
        .unwrap();
        [&iv[..], &ct, &tag].concat()
    } else {
        let iv = [2u8; 16];
        let pad = 16 - plaintext.len() % 16;
        let mut p = plaintext.to_vec();
        p.extend(std::iter::repeat_n(0u8, pad - 1));
        p.push(pad as u8);
        let mut c = openssl::symm::Crypter::new(
            openssl::symm::Cipher::aes_128_cbc(),
            openssl::symm::Mode::Encrypt,
            &cek,
            Some(&iv),
        )
        .unwrap();
        c.pad(false);
        let mut out = vec![0u8; p.len() + 16];
        let n = c.update(&p, &mut out).unwrap();
        out.truncate(n);
        [&iv[..], &out].concat()
    };
    let wrapped = wrapped.unwrap_or_else(|| {
        let mut w = vec![0u8; rsa.size() as usize];
        let n = rsa
            .public_encrypt(&cek, &mut w, Padding::PKCS1_OAEP)
            .unwrap();
        w.truncate(n);
        w
    });
    let family = if alg.ends_with("gcm") {
        "http://www.w3.org/2009/xmlenc11#"
    } else {
        "http://www.w3.org/2001/04/xmlenc#"
    };
    format!(
        "<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
<xenc:EncryptionMethod Algorithm=\"{family}{alg}\"/><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><xenc:EncryptedKey>\
<xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData>\
</xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>",
        b64(&wrapped),
        b64(&body)
    )
}

/// The unsigned-Response fixture with its EncryptedAssertion replaced.
fn with_encrypted(ea: &str) -> (Entry, String) {
    let e = entry("valid_encrypted_gcm_assertion_signed");
    let xml = std::fs::read_to_string(fixtures().join("responses").join(&e.file)).unwrap();
    let start = xml.find("<saml:EncryptedAssertion>").unwrap();
    let end = xml.find("</saml:EncryptedAssertion>").unwrap() + "</saml:EncryptedAssertion>".len();
    (e, format!("{}{ea}{}", &xml[..start], &xml[end..]))
}

/// With no Response signature over the ciphertext, every way a chosen
/// ciphertext can fail after the key unwrap gives one code and one message,
/// for both verifiers: what the plaintext was (not UTF-8, not XML, a DTD,
/// an unsigned or wrongly signed assertion, a bad tag) is never told.
#[test]
fn decryption_failures_under_an_unsigned_response_are_indistinguishable() {
    let unsigned_assertion = "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_x\" Version=\"2.0\" IssueInstant=\"2026-01-15T10:00:00Z\"><saml:Issuer>https://idp.example.org/saml/idp</saml:Issuer></saml:Assertion>";
    let mut cases: Vec<(&str, String)> = vec![
        (
            "not UTF-8",
            encrypted_assertion(b"\xff\xfe<a/>", "aes128-gcm", None),
        ),
        ("not XML", encrypted_assertion(b"hello", "aes128-gcm", None)),
        (
            "a DTD",
            encrypted_assertion(b"<!DOCTYPE a [<!ENTITY x 'y'>]><a/>", "aes128-gcm", None),
        ),
        (
            "a processing instruction",
            encrypted_assertion(b"<?php x?><a/>", "aes128-gcm", None),
        ),
        (
            "not an assertion",
            encrypted_assertion(b"<a/>", "aes128-gcm", None),
        ),
        (
            "an unsigned assertion",
            encrypted_assertion(unsigned_assertion.as_bytes(), "aes128-gcm", None),
        ),
        (
            "a wrapped key that does not unwrap",
            encrypted_assertion(b"<a/>", "aes128-gcm", Some(vec![9u8; 256])),
        ),
    ];
    // A flipped byte of the tag: authenticated decryption fails.
    let good = encrypted_assertion(b"<a/>", "aes128-gcm", None);
    let body_at = good.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
    let mut flipped = good.clone();
    let c = if &good[body_at..body_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    flipped.replace_range(body_at..body_at + 1, c);
    cases.push(("a bad tag", flipped));
    let mut answers = std::collections::BTreeSet::new();
    for (name, ea) in &cases {
        let (e, xml) = with_encrypted(ea);
        for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
            let r = run_bytes_with(&e, xml.as_bytes(), v);
            assert_eq!(
                r.code,
                Some("decryption_failed"),
                "{name} / {v:?}: {:?}",
                r.reason
            );
            answers.insert(r.reason.unwrap());
            // The reason is in the trace, for ops with check-response.
            assert!(
                r.trace.iter().any(|t| t.detail.starts_with("withheld")),
                "{name}"
            );
        }
    }
    assert_eq!(answers.len(), 1, "{answers:#?}");
}

/// The padding-oracle pair (the same CBC ciphertext with good and with bad
/// padding) and a GCM ciphertext relabelled as CBC get one answer, with CBC
/// allowed or not: no CBC content is decrypted without a Response signature.
#[test]
fn padding_oracle_pair_and_gcm_relabel_get_identical_answers() {
    let good = encrypted_assertion(b"<a/>", "aes128-cbc", None);
    // Bad padding: the last byte of the last block's plaintext changes when
    // the previous block (here the IV of a one-block message) is flipped.
    let at = good.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
    let mut bad = good.clone();
    let c = if &good[at + 20..at + 21] == "A" {
        "B"
    } else {
        "A"
    };
    bad.replace_range(at + 20..at + 21, c);
    let relabel = encrypted_assertion(b"<a/>", "aes128-gcm", None).replace(
        "http://www.w3.org/2009/xmlenc11#aes128-gcm",
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    );
    for config in ["config.toml", "config-cbc.toml"] {
        let mut answers = std::collections::BTreeSet::new();
        for (name, ea) in [
            ("good padding", &good),
            ("bad padding", &bad),
            ("GCM relabelled", &relabel),
        ] {
            let (mut e, xml) = with_encrypted(ea);
            e.config = config.into();
            for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
                let r = run_bytes_with(&e, xml.as_bytes(), v);
                assert_eq!(r.code, Some("decryption_failed"), "{config} {name} {v:?}");
                assert!(
                    !r.trace.iter().any(|t| t.step == "decrypt"),
                    "{name}: never decrypted"
                );
                answers.insert(r.reason.unwrap());
            }
        }
        assert_eq!(answers.len(), 1, "{config}: {answers:#?}");
    }
}

// --- 6 (keys). RSA signing keys under 2048 bits need a switch ---

/// A 1024-bit RSA IdP key pair (PEM key, PEM certificate), made here.
fn rsa_1024() -> (Vec<u8>, Vec<u8>) {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "weak IdP (TEST ONLY)")
        .unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        key.private_key_to_pem_pkcs8().unwrap(),
        b.build().to_pem().unwrap(),
    )
}

#[test]
fn rsa_1024_signing_keys_are_refused_unless_allowed() {
    use base64::Engine;
    let (key, cert) = rsa_1024();
    let der = openssl::x509::X509::from_pem(&cert)
        .unwrap()
        .to_der()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("md.xml"),
        format!(
            "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"https://idp.example.org/saml/idp\">\
<md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\
<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example.org/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>",
            base64::engine::general_purpose::STANDARD.encode(der)
        ),
    )
    .unwrap();
    let cfg = |extra: &str| {
        samlgate::config::Config::from_toml(
            &format!(
                "[sp]\nentity_id = \"https://sp.example.com/saml/metadata\"\nacs_url = \"https://sp.example.com/saml/acs\"\n[idp]\nmetadata_file = \"md.xml\"\n{extra}"
            ),
            dir.path(),
            &|_| None,
        )
    };
    let err = cfg("").unwrap_err();
    assert!(
        err.to_string().contains("idp.metadata_file") && err.to_string().contains("1024-bit RSA"),
        "{err}"
    );
    let cfg = cfg("[security]\ninsecure_allow_rsa_1024 = true\n").unwrap();
    // Allowed: a response signed with it verifies on both verifiers.
    let idp =
        samlgate::devidp::DevIdp::new("https://idp.example.org/saml/idp", &key, &cert).unwrap();
    let mut p = okta_params();
    p.acs_url = cfg.acct().sp.acs_url.clone();
    p.audience = cfg.acct().sp.entity_id.clone();
    let xml = idp.response(&p).unwrap();
    for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
        let mut c = cfg.clone();
        c.security.verifier = v;
        let r =
            samlgate::check::check_response(xml.as_bytes(), &c, &[], &samlgate::clock::SystemClock);
        assert_eq!(r.code, None, "{v:?}: {:?}", r.reason);
    }
}

/// The libxmlsec1 path's own guard: libxml2 (no network, no recovery) must
/// find as many XML-DSig signatures as the pre-check did. Where the two
/// parsers disagree about a reserved-namespace binding, the counts differ.
#[test]
fn libxml2_counts_the_signatures_the_hidden_shapes_carry() {
    use samlgate::saml::signature::libxml2_signature_count;
    let (_, plain) = okta();
    assert_eq!(libxml2_signature_count(&plain), Ok(1));
    // Our parser refuses each shape outright (above). libxml2 reads the
    // reserved-namespace ones as a second XML-DSig Signature (it ignores
    // the bad binding and resolves `ds` to the outer one): the very
    // disagreement of the review. Had the pre-check let one through, it
    // would have counted one signature against libxml2's two: refused.
    for (name, shape) in hidden_signature_shapes("#x") {
        let (_, xml) = with_response_child(&shape);
        let want = if name.contains("foreign") { 1 } else { 2 };
        assert_eq!(libxml2_signature_count(&xml), Ok(want), "{name}");
    }
}
