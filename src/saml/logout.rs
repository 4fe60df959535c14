//! SAML 2.0 Single Logout messages (Core §3.7): `LogoutRequest` and
//! `LogoutResponse`, received over HTTP-Redirect (Bindings §3.4: DEFLATE,
//! signature over the query octets as received) or HTTP-POST (§3.5: an
//! enveloped XML signature), and built and signed for sending.
//!
//! Receiving is as strict as a login: size limits before decoding, a
//! bounded inflate (a DEFLATE bomb stops at `security.max_response_bytes`),
//! the strict XML parser (no DTD, depth and count limits), the signature
//! profile of [`super::precheck`], the algorithm policy (no SHA-1 unless
//! allowed), and an unsigned message is refused.

use std::io::Read;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};

use super::error::SamlError;
use super::metadata::SigningCert;
use super::precheck::AlgorithmPolicy;
use super::xml::{self, Element, NS_ASSERTION, NS_DSIG, NS_PROTOCOL};
use super::{NameId, checks, decode, dsig, precheck};
use crate::config::Security;

/// `Success`.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// `Requester` (the request was wrong).
pub const STATUS_REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
/// `Responder` (we failed).
pub const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
/// `PartialLogout` (second-level: not every session ended).
pub const STATUS_PARTIAL: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
/// RSA-SHA256, what samlgate signs with.
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// Which binding a message arrived by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// HTTP-Redirect.
    Redirect,
    /// HTTP-POST.
    Post,
}

/// Request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SAMLRequest`: a LogoutRequest.
    Request,
    /// `SAMLResponse`: a LogoutResponse.
    Response,
}

/// A message as it arrived, decoded (its Redirect signature verified).
#[derive(Debug, Clone)]
pub struct Received {
    /// Request or response.
    pub kind: Kind,
    /// The XML.
    pub xml: String,
    /// RelayState, decoded.
    pub relay_state: Option<String>,
    /// How it came.
    pub binding: Binding,
}

/// A LogoutRequest, verified.
#[derive(Debug, Clone)]
pub struct LogoutRequest {
    /// ID.
    pub id: String,
    /// Issuer.
    pub issuer: String,
    /// The NameID whose sessions end.
    pub name_id: NameId,
    /// SessionIndex values (none: every session of the NameID).
    pub session_indexes: Vec<String>,
}

/// A LogoutResponse, verified.
#[derive(Debug, Clone)]
pub struct LogoutResponse {
    /// InResponseTo.
    pub in_response_to: String,
    /// Top-level status code.
    pub status: String,
    /// Second-level status code.
    pub sub_status: Option<String>,
}

/// Most SessionIndex elements read from one LogoutRequest.
pub const MAX_SESSION_INDEXES: usize = 32;
/// Longest raw query string accepted on the Redirect binding.
pub const MAX_QUERY: usize = 64 * 1024;

fn invalid(msg: impl Into<String>) -> SamlError {
    SamlError::SignatureInvalid(msg.into())
}

/// The `name=value` pairs of a raw query, values still URL-encoded (the
/// Redirect signature covers them as received).
fn raw_pairs(query: &str) -> Vec<(&str, &str)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect()
}

fn url_decoded(raw: &str) -> Vec<u8> {
    decode::percent_decode(raw.as_bytes())
}

/// The digest of a Redirect-binding `SigAlg`, under the algorithm policy.
fn redirect_digest(sig_alg: &str, policy: AlgorithmPolicy) -> Result<MessageDigest, SamlError> {
    let forbidden = || SamlError::AlgorithmForbidden {
        kind: "signature",
        uri: sig_alg.to_owned(),
    };
    Ok(match sig_alg {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => MessageDigest::sha256(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => MessageDigest::sha384(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => MessageDigest::sha512(),
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1"
            if policy.insecure_allow_sha1 =>
        {
            MessageDigest::sha1()
        }
        _ => return Err(forbidden()),
    })
}

/// Inflates raw DEFLATE data, refusing more than `limit` bytes of output
/// (a DEFLATE bomb stops there).
pub fn inflate_bounded(data: &[u8], limit: usize) -> Result<Vec<u8>, SamlError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::DeflateDecoder::new(data).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| SamlError::MalformedXml(format!("the DEFLATE data is broken: {e}")))?;
    if out.len() > limit {
        return Err(SamlError::TooLarge {
            what: "inflated logout message",
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// A message received on the HTTP-Redirect binding: the signature over
/// `SAMLRequest|SAMLResponse=..&RelayState=..&SigAlg=..` (the octets as
/// received) verified with one of `certs`, then the value inflated.
pub fn from_redirect(
    query: &str,
    certs: &[SigningCert],
    security: &Security,
) -> Result<Received, SamlError> {
    if query.len() > MAX_QUERY {
        return Err(SamlError::TooLarge {
            what: "query string",
            size: query.len(),
            limit: MAX_QUERY,
        });
    }
    let pairs = raw_pairs(query);
    let one = |name: &str| -> Result<Option<&str>, SamlError> {
        let mut it = pairs.iter().filter(|(k, _)| *k == name);
        let first = it.next().map(|(_, v)| *v);
        if it.next().is_some() {
            return Err(SamlError::MalformedXml(format!(
                "{name} appears more than once in the query"
            )));
        }
        Ok(first)
    };
    let (kind, name, value) = match (one("SAMLRequest")?, one("SAMLResponse")?) {
        (Some(v), None) => (Kind::Request, "SAMLRequest", v),
        (None, Some(v)) => (Kind::Response, "SAMLResponse", v),
        (Some(_), Some(_)) => {
            return Err(SamlError::MalformedXml(
                "both SAMLRequest and SAMLResponse in one query".into(),
            ));
        }
        (None, None) => {
            return Err(SamlError::MalformedXml(
                "no SAMLRequest or SAMLResponse in the query".into(),
            ));
        }
    };
    let relay = one("RelayState")?;
    let (Some(sig_alg), Some(signature)) = (one("SigAlg")?, one("Signature")?) else {
        return Err(SamlError::SignatureMissing);
    };
    let alg = String::from_utf8_lossy(&url_decoded(sig_alg)).into_owned();
    let md = redirect_digest(
        &alg,
        AlgorithmPolicy {
            insecure_allow_sha1: security.insecure_allow_sha1,
        },
    )?;
    let mut signed = format!("{name}={value}");
    if let Some(r) = relay {
        signed.push_str("&RelayState=");
        signed.push_str(r);
    }
    signed.push_str("&SigAlg=");
    signed.push_str(sig_alg);
    let sig = decode::base64_wrapped(&url_decoded(signature))
        .map_err(|e| invalid(format!("Signature is not base64: {e}")))?;
    let ok = certs.iter().any(|c| {
        openssl::sign::Verifier::new(md, &c.key)
            .and_then(|mut v| {
                v.update(signed.as_bytes())?;
                v.verify(&sig)
            })
            .unwrap_or(false)
    });
    if certs.is_empty() || !ok {
        return Err(invalid(
            "the query signature does not verify with the IdP's metadata certificates",
        ));
    }
    let max = security.max_response_bytes;
    let raw = url_decoded(value);
    let max_encoded = max.saturating_mul(4) / 3 + 4;
    if raw.len() > max_encoded {
        return Err(SamlError::TooLarge {
            what: name_what(kind),
            size: raw.len(),
            limit: max_encoded,
        });
    }
    let deflated = decode::base64_wrapped(&raw).map_err(SamlError::Base64)?;
    let xml = decode::bytes_to_xml(inflate_bounded(&deflated, max)?, max)?;
    Ok(Received {
        kind,
        xml,
        relay_state: relay.map(|r| String::from_utf8_lossy(&url_decoded(r)).into_owned()),
        binding: Binding::Redirect,
    })
}

fn name_what(kind: Kind) -> &'static str {
    match kind {
        Kind::Request => "SAMLRequest parameter",
        Kind::Response => "SAMLResponse parameter",
    }
}

/// A message received on the HTTP-POST binding (its XML signature is
/// verified when it is read: [`read_request`], [`read_response`]).
pub fn from_post(form: &[(String, String)], security: &Security) -> Result<Received, SamlError> {
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let (kind, value) = match (get("SAMLRequest"), get("SAMLResponse")) {
        (Some(v), None) => (Kind::Request, v),
        (None, Some(v)) => (Kind::Response, v),
        _ => {
            return Err(SamlError::MalformedXml(
                "expected exactly one of SAMLRequest and SAMLResponse".into(),
            ));
        }
    };
    let xml = decode::decode_base64(value.as_bytes(), security.max_response_bytes)?;
    Ok(Received {
        kind,
        xml,
        relay_state: get("RelayState").map(str::to_owned),
        binding: Binding::Post,
    })
}

/// The root of a logout message: the strict signature profile, and on the
/// POST binding its enveloped signature verified with one of `certs`.
fn checked_root<'d>(
    doc: &'d xml::Document<'d>,
    name: &str,
    received: &Received,
    certs: &[SigningCert],
    security: &Security,
) -> Result<Element<'d>, SamlError> {
    let root = doc.root();
    if !root.is(NS_PROTOCOL, name) {
        return Err(SamlError::NotAResponse(format!(
            "{} (expected samlp:{name})",
            root.display_name()
        )));
    }
    if root.attr("Version") != Some("2.0") {
        return Err(SamlError::UnsupportedVersion(
            root.attr("Version").unwrap_or("").to_owned(),
        ));
    }
    let policy = AlgorithmPolicy {
        insecure_allow_sha1: security.insecure_allow_sha1,
    };
    let signed = precheck::precheck_logout(root, policy)?;
    if received.binding == Binding::Post {
        if signed.is_none() {
            return Err(SamlError::SignatureMissing);
        }
        dsig::verify_element(root, certs)?;
    }
    Ok(root)
}

fn issuer_of(root: Element<'_>, expected: &str, what: &'static str) -> Result<String, SamlError> {
    let found = root
        .child(NS_ASSERTION, "Issuer")
        .map(|i| crate::email::trim_xml_space(&i.text_ref()).to_owned())
        .unwrap_or_default();
    if found != expected {
        return Err(SamlError::IssuerMismatch {
            element: what,
            found,
            expected: expected.to_owned(),
        });
    }
    Ok(found)
}

fn destination_of(root: Element<'_>, expected: &str) -> Result<(), SamlError> {
    // Signed messages must name where they were sent (Bindings §3.4.5.2,
    // §3.5.5.2); every logout message samlgate accepts is signed.
    match root.attr("Destination") {
        Some(d) if d == expected => Ok(()),
        found => Err(SamlError::DestinationMismatch {
            found: found.unwrap_or("").to_owned(),
            expected: expected.to_owned(),
        }),
    }
}

/// The IssueInstant within the allowed skew and issue delay.
fn issued_recently(
    root: Element<'_>,
    now: DateTime<Utc>,
    security: &Security,
    what: &'static str,
) -> Result<(), SamlError> {
    let at = checks::parse_time(what, root.attr("IssueInstant").unwrap_or(""))?;
    let skew = chrono::Duration::seconds(security.clock_skew_secs);
    let fmt = |d: DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Secs, true);
    if at > now + skew {
        return Err(SamlError::NotYetValid {
            element: what,
            at: fmt(at),
            now: fmt(now),
            skew_secs: security.clock_skew_secs,
        });
    }
    if at + chrono::Duration::seconds(security.max_issue_delay_secs) + skew < now {
        return Err(SamlError::Expired {
            element: what,
            at: fmt(at),
            now: fmt(now),
            skew_secs: security.clock_skew_secs,
        });
    }
    Ok(())
}

/// Reads and checks a LogoutRequest from the IdP (`idp_entity`), sent to
/// `slo_url`.
pub fn read_request(
    received: &Received,
    idp_entity: &str,
    certs: &[SigningCert],
    slo_url: &str,
    now: DateTime<Utc>,
    security: &Security,
) -> Result<LogoutRequest, SamlError> {
    let doc = xml::parse(&received.xml)?;
    let root = checked_root(&doc, "LogoutRequest", received, certs, security)?;
    let id = root
        .attr("ID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SamlError::MalformedXml("LogoutRequest has no ID".into()))?
        .to_owned();
    let issuer = issuer_of(root, idp_entity, "LogoutRequest")?;
    destination_of(root, slo_url)?;
    issued_recently(root, now, security, "LogoutRequest IssueInstant")?;
    if let Some(noa) = root.attr("NotOnOrAfter") {
        let t = checks::parse_time("LogoutRequest NotOnOrAfter", noa)?;
        if t + chrono::Duration::seconds(security.clock_skew_secs) <= now {
            return Err(SamlError::Expired {
                element: "LogoutRequest",
                at: t.to_rfc3339_opts(SecondsFormat::Secs, true),
                now: now.to_rfc3339_opts(SecondsFormat::Secs, true),
                skew_secs: security.clock_skew_secs,
            });
        }
    }
    if root.child(NS_ASSERTION, "EncryptedID").is_some() {
        return Err(SamlError::SubjectMissing);
    }
    let n = root
        .child(NS_ASSERTION, "NameID")
        .ok_or(SamlError::SubjectMissing)?;
    let name_id = NameId {
        value: crate::email::trim_xml_space(&n.text_ref()).to_owned(),
        format: n.attr("Format").map(str::to_owned),
        name_qualifier: n.attr("NameQualifier").map(str::to_owned),
        sp_name_qualifier: n.attr("SPNameQualifier").map(str::to_owned),
    };
    if name_id.value.is_empty() {
        return Err(SamlError::SubjectMissing);
    }
    let session_indexes: Vec<String> = root
        .children_named(NS_PROTOCOL, "SessionIndex")
        .take(MAX_SESSION_INDEXES + 1)
        .map(|s| crate::email::trim_xml_space(&s.text_ref()).to_owned())
        .collect();
    if session_indexes.len() > MAX_SESSION_INDEXES {
        return Err(SamlError::XmlLimit {
            what: "SessionIndex elements",
            limit: MAX_SESSION_INDEXES,
            element: "samlp:LogoutRequest".into(),
        });
    }
    Ok(LogoutRequest {
        id,
        issuer,
        name_id,
        session_indexes,
    })
}

/// Reads and checks a LogoutResponse from the IdP, sent to `slo_url`.
pub fn read_response(
    received: &Received,
    idp_entity: &str,
    certs: &[SigningCert],
    slo_url: &str,
    now: DateTime<Utc>,
    security: &Security,
) -> Result<LogoutResponse, SamlError> {
    let doc = xml::parse(&received.xml)?;
    let root = checked_root(&doc, "LogoutResponse", received, certs, security)?;
    issuer_of(root, idp_entity, "LogoutResponse")?;
    destination_of(root, slo_url)?;
    issued_recently(root, now, security, "LogoutResponse IssueInstant")?;
    let in_response_to = root
        .attr("InResponseTo")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            SamlError::InResponseToMismatch("the LogoutResponse answers no request".into())
        })?
        .to_owned();
    let code = root
        .child(NS_PROTOCOL, "Status")
        .and_then(|s| s.child(NS_PROTOCOL, "StatusCode"));
    let status = code
        .and_then(|c| c.attr("Value"))
        .ok_or_else(|| SamlError::MalformedXml("LogoutResponse has no StatusCode".into()))?
        .to_owned();
    let sub_status = code
        .and_then(|c| c.child(NS_PROTOCOL, "StatusCode"))
        .and_then(|c| c.attr("Value"))
        .map(str::to_owned);
    Ok(LogoutResponse {
        in_response_to,
        status,
        sub_status,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A LogoutRequest from the SP (`issuer`) to `destination` for `name_id`
/// (its qualifiers as received at login) and `session_index`.
pub fn build_request(
    id: &str,
    now: DateTime<Utc>,
    destination: &str,
    issuer: &str,
    name_id: &NameId,
    session_index: Option<&str>,
) -> String {
    let mut attrs = String::new();
    for (k, v) in [
        ("Format", &name_id.format),
        ("NameQualifier", &name_id.name_qualifier),
        ("SPNameQualifier", &name_id.sp_name_qualifier),
    ] {
        if let Some(v) = v {
            attrs.push_str(&format!(" {k}=\"{}\"", esc(v)));
        }
    }
    let si = session_index
        .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", esc(s)))
        .unwrap_or_default();
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{dest}\" NotOnOrAfter=\"{noa}\">\
<saml:Issuer>{iss}</saml:Issuer><saml:NameID{attrs}>{nid}</saml:NameID>{si}</samlp:LogoutRequest>",
        now = instant(now),
        noa = instant(now + chrono::Duration::minutes(10)),
        dest = esc(destination),
        iss = esc(issuer),
        nid = esc(&name_id.value),
    )
}

/// A LogoutResponse from the SP to `destination` answering `in_response_to`
/// with `status` (and a second-level code).
pub fn build_response(
    id: &str,
    now: DateTime<Utc>,
    destination: &str,
    issuer: &str,
    in_response_to: &str,
    status: &str,
    sub_status: Option<&str>,
) -> String {
    let sub = sub_status
        .map(|s| format!("<samlp:StatusCode Value=\"{}\"/>", esc(s)))
        .unwrap_or_default();
    format!(
        "<samlp:LogoutResponse xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{dest}\" InResponseTo=\"{irt}\">\
<saml:Issuer>{iss}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{status}\">{sub}</samlp:StatusCode></samlp:Status></samlp:LogoutResponse>",
        now = instant(now),
        dest = esc(destination),
        iss = esc(issuer),
        irt = esc(in_response_to),
        status = esc(status),
    )
}

/// The URL that sends `xml` as `param` (`SAMLRequest`/`SAMLResponse`) to
/// `endpoint` on the HTTP-Redirect binding, signed with `key` (RSA-SHA256).
pub fn redirect_url(
    endpoint: &str,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    key: &PKey<Private>,
) -> Result<String, String> {
    use std::io::Write;
    let enc = |s: &str| crate::gateway::url_encode(s);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(xml.as_bytes()).map_err(|e| e.to_string())?;
    let deflated = z.finish().map_err(|e| e.to_string())?;
    let mut qs = format!(
        "{param}={}",
        enc(&base64::engine::general_purpose::STANDARD.encode(deflated))
    );
    if let Some(r) = relay_state {
        qs.push_str("&RelayState=");
        qs.push_str(&enc(r));
    }
    qs.push_str("&SigAlg=");
    qs.push_str(&enc(RSA_SHA256));
    let sig = openssl::sign::Signer::new(MessageDigest::sha256(), key)
        .and_then(|mut s| {
            s.update(qs.as_bytes())?;
            s.sign_to_vec()
        })
        .map_err(|e| e.to_string())?;
    qs.push_str("&Signature=");
    qs.push_str(&enc(&base64::engine::general_purpose::STANDARD.encode(sig)));
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!("{endpoint}{sep}{qs}"))
}

/// Signs a message (its root has an ID and a `saml:Issuer` first child)
/// with an enveloped signature after the Issuer: exclusive c14n,
/// RSA-SHA256, SHA-256 digest (the shape of [`super::precheck`]'s
/// profile). For the HTTP-POST binding.
pub fn sign_enveloped(xml_text: &str, key: &PKey<Private>) -> Result<String, String> {
    const DIGEST: &str = "@@SAMLGATE-DIGEST@@";
    const VALUE: &str = "@@SAMLGATE-SIGNATURE@@";
    let id = {
        let doc = xml::parse(xml_text).map_err(|e| e.to_string())?;
        doc.root()
            .attr("ID")
            .map(str::to_owned)
            .ok_or("the message has no ID")?
    };
    let at = xml_text
        .find("</saml:Issuer>")
        .map(|i| i + "</saml:Issuer>".len())
        .ok_or("the message has no saml:Issuer")?;
    let exc = precheck::ALG_EXC_C14N;
    let signature = format!(
        "<ds:Signature xmlns:ds=\"{NS_DSIG}\"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"{exc}\"/>\
<ds:SignatureMethod Algorithm=\"{RSA_SHA256}\"/><ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"{env}\"/><ds:Transform Algorithm=\"{exc}\"/></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue>{DIGEST}</ds:DigestValue>\
</ds:Reference></ds:SignedInfo><ds:SignatureValue>{VALUE}</ds:SignatureValue></ds:Signature>",
        env = precheck::ALG_ENVELOPED,
        id = esc(&id),
    );
    let mut with_sig = String::with_capacity(xml_text.len() + signature.len());
    with_sig.push_str(xml_text.get(..at).unwrap_or_default());
    with_sig.push_str(&signature);
    with_sig.push_str(xml_text.get(at..).unwrap_or_default());
    // The digest: the root without its Signature.
    let digest = {
        let doc = xml::parse(&with_sig).map_err(|e| e.to_string())?;
        let root = doc.root();
        let sig = root.child(NS_DSIG, "Signature").ok_or("signature lost")?;
        let mut buf = Vec::new();
        super::c14n::canonicalize(root, Some(sig), &[], &mut buf);
        base64::engine::general_purpose::STANDARD.encode(openssl::sha::sha256(&buf))
    };
    let with_digest = with_sig.replacen(DIGEST, &digest, 1);
    let value = {
        let doc = xml::parse(&with_digest).map_err(|e| e.to_string())?;
        let si = doc
            .root()
            .child(NS_DSIG, "Signature")
            .and_then(|s| s.child(NS_DSIG, "SignedInfo"))
            .ok_or("SignedInfo lost")?;
        let mut buf = Vec::new();
        super::c14n::canonicalize(si, None, &[], &mut buf);
        let sig = openssl::sign::Signer::new(MessageDigest::sha256(), key)
            .and_then(|mut s| {
                s.update(&buf)?;
                s.sign_to_vec()
            })
            .map_err(|e| e.to_string())?;
        base64::engine::general_purpose::STANDARD.encode(sig)
    };
    Ok(with_digest.replacen(VALUE, &value, 1))
}

/// The script that submits [`post_form`]'s form.
pub const POST_FORM_SCRIPT: &str = "document.forms[0].submit()";

/// The `Content-Security-Policy` of [`post_form`]'s page: nothing but that
/// one script (by its hash) and the form's POST.
pub fn post_form_csp() -> String {
    let hash = base64::engine::general_purpose::STANDARD
        .encode(openssl::sha::sha256(POST_FORM_SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'"
    )
}

/// An HTML page that POSTs `xml` (signed) as `param` to `endpoint`
/// (HTTP-POST binding): submitted by a script the page's CSP allows by
/// hash, or by hand with its button.
pub fn post_form(endpoint: &str, param: &str, xml: &str, relay_state: Option<&str>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
    let relay = relay_state
        .map(|r| {
            format!(
                "<input type=\"hidden\" name=\"RelayState\" value=\"{}\">",
                esc(r)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signing out</title></head>\
<body><form method=\"post\" action=\"{}\">\
<input type=\"hidden\" name=\"{param}\" value=\"{b64}\">{relay}\
<p>Signing out&hellip;</p><button type=\"submit\">Continue</button></form><script>{POST_FORM_SCRIPT}</script></body></html>",
        esc(endpoint)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_and_cert() -> (PKey<Private>, SigningCert) {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "logout test").unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let der = b.build().to_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let md = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example/x"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor></md:IDPSSODescriptor></md:EntityDescriptor>"#
        );
        let m = super::super::metadata::IdpMetadata::parse(&md, None).unwrap();
        (key, m.signing_certs.into_iter().next().unwrap())
    }

    fn security() -> Security {
        crate::config::Config::from_toml("", std::path::Path::new("."), &|_| None)
            .unwrap()
            .security
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn nid() -> NameId {
        NameId {
            value: "ann@acme.example".into(),
            format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
            name_qualifier: Some("https://idp.example/x".into()),
            sp_name_qualifier: None,
        }
    }

    #[test]
    fn redirect_round_trip_and_tampering() {
        let (key, cert) = key_and_cert();
        let sec = security();
        let now = at();
        let xml = build_request(
            "_r1",
            now,
            "https://sp/saml/slo",
            "https://idp.example/x",
            &nid(),
            Some("_s1"),
        );
        let url = redirect_url(
            "https://sp/saml/slo",
            "SAMLRequest",
            &xml,
            Some("/back?a=b"),
            &key,
        )
        .unwrap();
        let query = url.split_once('?').unwrap().1;
        let got = from_redirect(query, std::slice::from_ref(&cert), &sec).unwrap();
        assert_eq!(got.kind, Kind::Request);
        assert_eq!(got.relay_state.as_deref(), Some("/back?a=b"));
        let req = read_request(
            &got,
            "https://idp.example/x",
            &[],
            "https://sp/saml/slo",
            now,
            &sec,
        )
        .unwrap();
        assert_eq!(req.name_id, nid());
        assert_eq!(req.session_indexes, ["_s1"]);
        // A changed RelayState, a dropped signature, another key: refused.
        let tampered = query.replace("RelayState=%2Fback", "RelayState=%2Fevil");
        assert!(from_redirect(&tampered, std::slice::from_ref(&cert), &sec).is_err());
        let unsigned: String = query.split("&SigAlg").next().unwrap().to_owned();
        assert_eq!(
            from_redirect(&unsigned, std::slice::from_ref(&cert), &sec)
                .unwrap_err()
                .code(),
            "signature_missing"
        );
        let (_, other) = key_and_cert();
        assert!(from_redirect(query, &[other], &sec).is_err());
        // Destination, issuer and time are checked.
        assert!(
            read_request(&got, "https://other", &[], "https://sp/saml/slo", now, &sec).is_err()
        );
        assert!(
            read_request(
                &got,
                "https://idp.example/x",
                &[],
                "https://sp/other",
                now,
                &sec
            )
            .is_err()
        );
        assert!(
            read_request(
                &got,
                "https://idp.example/x",
                &[],
                "https://sp/saml/slo",
                now + chrono::Duration::hours(2),
                &sec
            )
            .is_err()
        );
    }

    #[test]
    fn post_binding_verifies_the_enveloped_signature() {
        let (key, cert) = key_and_cert();
        let sec = security();
        let now = at();
        let xml = build_response(
            "_p1",
            now,
            "https://sp/saml/slo",
            "https://idp.example/x",
            "_r1",
            STATUS_SUCCESS,
            None,
        );
        let signed = sign_enveloped(&xml, &key).unwrap();
        let form = vec![(
            "SAMLResponse".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(&signed),
        )];
        let got = from_post(&form, &sec).unwrap();
        let r = read_response(
            &got,
            "https://idp.example/x",
            std::slice::from_ref(&cert),
            "https://sp/saml/slo",
            now,
            &sec,
        )
        .unwrap();
        assert_eq!(
            (r.in_response_to.as_str(), r.status.as_str()),
            ("_r1", STATUS_SUCCESS)
        );
        // Unsigned on POST: refused.
        let form = vec![(
            "SAMLResponse".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(&xml),
        )];
        let got = from_post(&form, &sec).unwrap();
        assert_eq!(
            read_response(
                &got,
                "https://idp.example/x",
                std::slice::from_ref(&cert),
                "https://sp/saml/slo",
                now,
                &sec
            )
            .unwrap_err()
            .code(),
            "signature_missing"
        );
        // A changed status under the signature: refused.
        let changed = signed.replace(STATUS_SUCCESS, STATUS_RESPONDER);
        let form = vec![(
            "SAMLResponse".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(&changed),
        )];
        let got = from_post(&form, &sec).unwrap();
        assert!(
            read_response(
                &got,
                "https://idp.example/x",
                std::slice::from_ref(&cert),
                "https://sp/saml/slo",
                now,
                &sec
            )
            .is_err()
        );
    }

    #[test]
    fn oversized_queries_are_refused_before_decoding() {
        let (_, cert) = key_and_cert();
        let q = format!("SAMLRequest={}&SigAlg=x&Signature=y", "A".repeat(MAX_QUERY));
        assert_eq!(
            from_redirect(&q, &[cert], &security()).unwrap_err().code(),
            "response_too_large"
        );
    }

    #[test]
    fn deflate_bombs_stop_at_the_limit() {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b'a'; 50 * 1024 * 1024]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 100 * 1024);
        let e = inflate_bounded(&bomb, 256 * 1024).unwrap_err();
        assert_eq!(e.code(), "response_too_large");
        assert_eq!(inflate_bounded(b"\x03\x00", 10).unwrap(), b"");
        assert!(inflate_bounded(b"not deflate at all", 1000).is_err());
    }
}
