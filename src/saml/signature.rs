//! Step 2: XML-DSig verification through libxmlsec1 (samael), verify then
//! reduce: every signature in the document must verify against a metadata
//! certificate, and everything no verified signature covers is removed
//! before anything is read. Only keys from metadata count: a certificate in
//! the message's KeyInfo is never trusted.

use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, CryptoProvider, ReduceMode, XmlSec,
};

use super::error::SamlError;
use super::metadata::SigningCert;

/// Proof that a document's signatures verified: holds the signed content
/// only (as XML text; parse it with [`xml::parse`]). It can be built only here.
#[derive(Debug)]
pub struct SignatureValid {
    /// The reduced document: only what verified signatures cover.
    pub signed_xml: String,
}

/// How many XML-DSig `Signature` elements libxml2 itself finds in
/// `xml_text`, parsed without network access and without recovery. The
/// pre-check judged the document on samlgate's own parse; libxmlsec1 works
/// on libxml2's. Should the two parsers ever disagree about which elements
/// are signatures (a reserved-namespace binding libxml2 reports and
/// ignores once hid one from the pre-check), the counts differ and the
/// document is refused before libxmlsec1 dereferences anything.
pub fn libxml2_signature_count(xml_text: &str) -> Result<usize, SamlError> {
    use libxml::parser::{Parser, ParserOptions};
    let options = ParserOptions {
        recover: false,
        no_net: true,
        no_error: true,
        no_warning: true,
        ..ParserOptions::default()
    };
    let doc = Parser::default()
        .parse_string_with_options(xml_text.as_bytes(), options)
        .map_err(|e| SamlError::MalformedXml(format!("libxml2 refuses the document: {e:?}")))?;
    let root = doc
        .get_root_element()
        .ok_or_else(|| SamlError::MalformedXml("libxml2 finds no root element".into()))?;
    let mut count = 0;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.get_name() == "Signature"
            && node
                .get_namespace()
                .is_some_and(|ns| ns.get_href() == super::xml::NS_DSIG)
        {
            count += 1;
        }
        stack.extend(node.get_child_elements());
    }
    Ok(count)
}

/// Verifies every signature of `xml` against `certs` and returns the signed
/// content. `allow_sha1` lifts libxmlsec1's algorithm restriction (the
/// pre-check has already enforced the allow-list itself); `signatures` is
/// how many XML-DSig Signature elements the pre-check found, which libxml2
/// must find too ([`libxml2_signature_count`]).
pub fn verify_and_reduce(
    xml_text: &str,
    certs: &[SigningCert],
    allow_sha1: bool,
    signatures: usize,
) -> Result<SignatureValid, SamlError> {
    if certs.is_empty() {
        // Config loading refuses this; never verify against nothing.
        return Err(SamlError::SignatureInvalid(
            "no IdP signing certificate configured".into(),
        ));
    }
    let seen = libxml2_signature_count(xml_text)?;
    if seen != signatures {
        return Err(SamlError::SignatureProfile {
            element: "document".into(),
            reason: format!(
                "libxml2 finds {seen} XML-DSig Signature element(s) where the pre-check found {signatures}: the parsers disagree, nothing is verified"
            ),
        });
    }
    const STRONG: &[AllowedSignatureAlgorithm] = &[
        AllowedSignatureAlgorithm::RsaSha256,
        AllowedSignatureAlgorithm::RsaSha384,
        AllowedSignatureAlgorithm::RsaSha512,
        AllowedSignatureAlgorithm::EcdsaSha256,
        AllowedSignatureAlgorithm::EcdsaSha384,
        AllowedSignatureAlgorithm::EcdsaSha512,
    ];
    let allowed = if allow_sha1 { None } else { Some(STRONG) };
    // One certificate at a time: samael aborts its own loop on the first
    // key-type mismatch (an RSA key meeting an ECDSA signature), so a
    // rollover set mixing key types would otherwise never reach the right one.
    let mut last_error = String::new();
    let mut reduced = None;
    for cert in certs {
        let der = [CertificateDer::from(cert.der.clone())];
        match XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
            xml_text,
            &der,
            ReduceMode::ValidateAndMarkNoAncestors,
            allowed,
        ) {
            Ok(r) => {
                reduced = Some(r);
                break;
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    let signed_xml = reduced.ok_or(SamlError::SignatureInvalid(last_error))?;
    Ok(SignatureValid { signed_xml })
}
