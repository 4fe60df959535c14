//! The native XML-DSig verifier for the strict SAML signature profile
//! (`security.verifier = "native"`): exclusive c14n ([`super::c14n`]) of the
//! parsed tree, SHA-2 digests and RSA/ECDSA signatures through openssl, keys
//! only from metadata (parsed once, at config load).
//!
//! It runs after [`super::precheck`] has enforced the profile (one Signature,
//! a direct child of the signed element, one Reference to `#` + its own ID,
//! transforms exactly enveloped + exc-c14n, allow-listed algorithms) and
//! checks again what it relies on. It returns the element it verified — the
//! very node of the parse the rest of the pipeline then reads — never a
//! boolean, so what was digested is what is read: signature wrapping has
//! nothing to point at.

use base64::Engine;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::Id;
use openssl::sign::Verifier;

use super::c14n;
use super::error::SamlError;
use super::metadata::SigningCert;
use super::precheck::{ALG_ENVELOPED, ALG_EXC_C14N};
use super::xml::{Element, NS_DSIG, NS_EXC_C14N};

/// Proof that `element` carries a signature that verified against a
/// metadata certificate. Only [`verify_element`] builds one.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    element: &'a Element<'a>,
    cert: usize,
}

impl<'a> Verified<'a> {
    /// The element the signature covers (from the same parse).
    pub fn element(&self) -> &'a Element<'a> {
        self.element
    }
    /// Index of the metadata certificate that verified it.
    pub fn cert_index(&self) -> usize {
        self.cert
    }
}

fn invalid(msg: impl Into<String>) -> SamlError {
    SamlError::SignatureInvalid(msg.into())
}

fn digest_for(uri: &str) -> Option<MessageDigest> {
    Some(match uri {
        "http://www.w3.org/2001/04/xmlenc#sha256" => MessageDigest::sha256(),
        "http://www.w3.org/2001/04/xmldsig-more#sha384" => MessageDigest::sha384(),
        "http://www.w3.org/2001/04/xmlenc#sha512" => MessageDigest::sha512(),
        "http://www.w3.org/2000/09/xmldsig#sha1" => MessageDigest::sha1(),
        _ => return None,
    })
}

/// Signature algorithm: key type and digest.
fn signature_for(uri: &str) -> Option<(Id, MessageDigest)> {
    Some(match uri {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => (Id::RSA, MessageDigest::sha256()),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => (Id::RSA, MessageDigest::sha384()),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => (Id::RSA, MessageDigest::sha512()),
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" => (Id::RSA, MessageDigest::sha1()),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => (Id::EC, MessageDigest::sha256()),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => (Id::EC, MessageDigest::sha384()),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => (Id::EC, MessageDigest::sha512()),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1" => (Id::EC, MessageDigest::sha1()),
        _ => return None,
    })
}

/// Base64 of a DigestValue/SignatureValue: whitespace (and the `&#xD;` ADFS
/// writes) ignored.
fn b64(what: &str, text: &str) -> Result<Vec<u8>, SamlError> {
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .map_err(|e| invalid(format!("{what} is not base64: {e}")))
}

/// The PrefixList of a c14n method's `InclusiveNamespaces`, if any.
fn inclusive_of<'a>(method: &'a Element<'_>) -> Vec<Option<&'a str>> {
    method
        .child(NS_EXC_C14N, "InclusiveNamespaces")
        .and_then(|i| i.attr("PrefixList"))
        .map(c14n::prefix_list)
        .unwrap_or_default()
}

fn child<'a, 'x>(parent: &'a Element<'x>, name: &str) -> Result<&'a Element<'x>, SamlError> {
    parent
        .child(NS_DSIG, name)
        .ok_or_else(|| invalid(format!("{name} missing in {}", parent.name)))
}

/// Verifies the enveloped signature of `signed` (a direct `ds:Signature`
/// child). `ancestors` are `signed`'s ancestors from the document root (their
/// namespace declarations are in scope for canonicalisation). A signature
/// verifies when its Reference digest matches the canonical element and the
/// SignatureValue verifies over the canonical SignedInfo with any of `certs`.
pub fn verify_element<'a>(
    signed: &'a Element<'a>,
    ancestors: &[&'a Element<'a>],
    certs: &[SigningCert],
) -> Result<Verified<'a>, SamlError> {
    if certs.is_empty() {
        return Err(invalid("no IdP signing certificate configured"));
    }
    let sig = child(signed, "Signature")?;
    let signed_info = child(sig, "SignedInfo")?;
    let c14n_method = child(signed_info, "CanonicalizationMethod")?;
    if c14n_method.attr("Algorithm") != Some(ALG_EXC_C14N) {
        return Err(invalid("CanonicalizationMethod is not exclusive c14n"));
    }
    let method = child(signed_info, "SignatureMethod")?;
    let method_uri = method.attr("Algorithm").unwrap_or("");
    let (key_type, sig_md) =
        signature_for(method_uri).ok_or_else(|| SamlError::AlgorithmForbidden {
            kind: "signature",
            uri: method_uri.to_owned(),
        })?;
    let mut refs = signed_info.children_named(NS_DSIG, "Reference");
    let reference = refs.next().ok_or_else(|| invalid("Reference missing"))?;
    if refs.next().is_some() {
        return Err(invalid("more than one Reference"));
    }
    let id = signed
        .attr("ID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("the signed {} has no ID", signed.name)))?;
    if reference
        .attr("URI")
        .and_then(|u| u.strip_prefix('#'))
        .is_none_or(|u| u != id)
    {
        return Err(invalid(
            "the Reference does not point at the signed element",
        ));
    }
    let transforms: Vec<&Element> = child(reference, "Transforms")?
        .children_named(NS_DSIG, "Transform")
        .collect();
    let [t1, t2] = transforms.as_slice() else {
        return Err(invalid("transforms are not enveloped-signature + exc-c14n"));
    };
    if t1.attr("Algorithm") != Some(ALG_ENVELOPED) || t2.attr("Algorithm") != Some(ALG_EXC_C14N) {
        return Err(invalid("transforms are not enveloped-signature + exc-c14n"));
    }
    let digest_uri = child(reference, "DigestMethod")?
        .attr("Algorithm")
        .unwrap_or("");
    let digest_md = digest_for(digest_uri).ok_or_else(|| SamlError::AlgorithmForbidden {
        kind: "digest",
        uri: digest_uri.to_owned(),
    })?;
    let expected = b64("DigestValue", &child(reference, "DigestValue")?.text())?;

    // 1. The Reference: the signed element, canonical, minus this Signature.
    let mut buf = Vec::with_capacity(8 * 1024);
    c14n::canonicalize(signed, ancestors, Some(sig), &inclusive_of(t2), &mut buf);
    let digest = openssl::hash::hash(digest_md, &buf).map_err(|e| invalid(e.to_string()))?;
    if expected.len() != digest.len() || !openssl::memcmp::eq(&expected, &digest) {
        return Err(invalid(format!(
            "the digest of {} {id:?} does not match its Reference (content changed after signing)",
            signed.name
        )));
    }

    // 2. SignedInfo, canonical in its own namespace context.
    buf.clear();
    let mut si_ancestors: Vec<&Element<'_>> = Vec::with_capacity(ancestors.len() + 2);
    si_ancestors.extend_from_slice(ancestors);
    si_ancestors.push(signed);
    si_ancestors.push(sig);
    c14n::canonicalize(
        signed_info,
        &si_ancestors,
        None,
        &inclusive_of(c14n_method),
        &mut buf,
    );
    let value = b64("SignatureValue", &child(sig, "SignatureValue")?.text())?;
    let mut tried = 0usize;
    for (i, cert) in certs.iter().enumerate() {
        if cert.key.id() != key_type {
            continue;
        }
        tried += 1;
        let der_sig;
        let sig_bytes: &[u8] = if key_type == Id::EC {
            match ecdsa_der(&value) {
                Some(d) => {
                    der_sig = d;
                    &der_sig
                }
                None => continue,
            }
        } else {
            &value
        };
        let ok = Verifier::new(sig_md, &cert.key)
            .and_then(|mut v| {
                v.update(&buf)?;
                v.verify(sig_bytes)
            })
            .unwrap_or(false);
        if ok {
            return Ok(Verified {
                element: signed,
                cert: i,
            });
        }
    }
    Err(invalid(if tried == 0 {
        format!("no metadata certificate has a key for {method_uri}")
    } else {
        format!(
            "the SignatureValue of {} {id:?} verifies with none of the {tried} metadata certificate(s)",
            signed.name
        )
    }))
}

/// XML-DSig ECDSA signatures are `r || s`, each half the length; openssl
/// wants DER.
fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let sig =
        EcdsaSig::from_private_components(BigNum::from_slice(r).ok()?, BigNum::from_slice(s).ok()?)
            .ok()?;
    sig.to_der().ok()
}
