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

/// Verifies every signature of `xml` against `certs` and returns the signed
/// content. `allow_sha1` lifts libxmlsec1's algorithm restriction (the
/// pre-check has already enforced the allow-list itself).
pub fn verify_and_reduce(
    xml_text: &str,
    certs: &[SigningCert],
    allow_sha1: bool,
) -> Result<SignatureValid, SamlError> {
    if certs.is_empty() {
        // Config loading refuses this; never verify against nothing.
        return Err(SamlError::SignatureInvalid(
            "no IdP signing certificate configured".into(),
        ));
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
