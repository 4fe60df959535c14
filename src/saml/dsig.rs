//! The native XML-DSig verifier for the strict SAML signature profile
//! (`security.verifier = "native"`): exclusive c14n ([`super::c14n`]) of the
//! parsed document, SHA-2 digests through ring, RSA/ECDSA signatures through
//! openssl, keys only from metadata (parsed once, at config load).
//!
//! It runs after [`super::precheck`] has enforced the profile (one Signature,
//! a direct child of the signed element, one Reference to `#` + its own ID,
//! transforms exactly enveloped + exc-c14n, allow-listed algorithms) and
//! checks again what it relies on. It returns the element it verified — the
//! very node of the parse the rest of the pipeline then reads — never a
//! boolean, so what was digested is what is read: signature wrapping has
//! nothing to point at.

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
    element: Element<'a>,
    cert: usize,
}

impl<'a> Verified<'a> {
    /// The element the signature covers (from the same parse).
    pub fn element(&self) -> Element<'a> {
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

/// A digest algorithm of the profile. Digests are computed with ring (its
/// SHA-256 uses the CPU's SHA extensions, and it needs no per-call algorithm
/// fetch as OpenSSL 3's EVP layer does); ECDSA goes through openssl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> ring::digest::Digest {
        let alg = match self {
            Hash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &ring::digest::SHA256,
            Hash::Sha384 => &ring::digest::SHA384,
            Hash::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, data)
    }

    pub(crate) fn openssl(self) -> MessageDigest {
        match self {
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }

    /// The DER `DigestInfo` header (AlgorithmIdentifier with NULL
    /// parameters, then the OCTET STRING tag and length) RSASSA-PKCS1-v1_5
    /// wraps this digest in.
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// A digest algorithm URI (XML-DSig and XML-Enc share them).
pub(crate) fn digest_for(uri: &str) -> Option<Hash> {
    Some(match uri {
        "http://www.w3.org/2001/04/xmlenc#sha256" => Hash::Sha256,
        "http://www.w3.org/2001/04/xmldsig-more#sha384" => Hash::Sha384,
        "http://www.w3.org/2001/04/xmlenc#sha512" => Hash::Sha512,
        "http://www.w3.org/2000/09/xmldsig#sha1" => Hash::Sha1,
        _ => return None,
    })
}

/// Signature algorithm: key type and digest.
fn signature_for(uri: &str) -> Option<(Id, Hash)> {
    Some(match uri {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => (Id::RSA, Hash::Sha256),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => (Id::RSA, Hash::Sha384),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => (Id::RSA, Hash::Sha512),
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" => (Id::RSA, Hash::Sha1),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => (Id::EC, Hash::Sha256),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => (Id::EC, Hash::Sha384),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => (Id::EC, Hash::Sha512),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1" => (Id::EC, Hash::Sha1),
        _ => return None,
    })
}

/// Base64 of a DigestValue/SignatureValue: whitespace (and the `&#xD;` ADFS
/// writes) ignored.
fn b64(what: &str, text: &str) -> Result<Vec<u8>, SamlError> {
    super::decode::base64_wrapped(text.as_bytes())
        .map_err(|e| invalid(format!("{what} is not base64: {e}")))
}

/// The PrefixList of a c14n method's `InclusiveNamespaces`, if any.
fn inclusive_of(method: Element<'_>) -> Vec<Option<&str>> {
    method
        .child(NS_EXC_C14N, "InclusiveNamespaces")
        .and_then(|i| i.attr("PrefixList"))
        .map(c14n::prefix_list)
        .unwrap_or_default()
}

fn child<'a>(parent: Element<'a>, name: &str) -> Result<Element<'a>, SamlError> {
    parent
        .child(NS_DSIG, name)
        .ok_or_else(|| invalid(format!("{name} missing in {}", parent.name())))
}

/// Verifies the enveloped signature of `signed` (a direct `ds:Signature`
/// child; the declarations of its ancestors in the document are in scope for
/// canonicalisation). A signature
/// verifies when its Reference digest matches the canonical element and the
/// SignatureValue verifies over the canonical SignedInfo with any of `certs`.
pub fn verify_element<'a>(
    signed: Element<'a>,
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
        .ok_or_else(|| invalid(format!("the signed {} has no ID", signed.name())))?;
    if reference
        .attr("URI")
        .and_then(|u| u.strip_prefix('#'))
        .is_none_or(|u| u != id)
    {
        return Err(invalid(
            "the Reference does not point at the signed element",
        ));
    }
    let mut transforms = child(reference, "Transforms")?.children_named(NS_DSIG, "Transform");
    let (Some(t1), Some(t2), None) = (transforms.next(), transforms.next(), transforms.next())
    else {
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
    let expected = b64("DigestValue", &child(reference, "DigestValue")?.text_ref())?;

    // 1. The Reference: the signed element, canonical, minus this Signature.
    let mut buf = Vec::with_capacity(8 * 1024);
    c14n::canonicalize(signed, Some(sig), &inclusive_of(t2), &mut buf);
    let digest = digest_md.digest(&buf);
    let digest = digest.as_ref();
    if expected.len() != digest.len() || !openssl::memcmp::eq(&expected, digest) {
        return Err(invalid(format!(
            "the digest of {} {id:?} does not match its Reference (content changed after signing)",
            signed.name()
        )));
    }

    // 2. SignedInfo, canonical in its own namespace context.
    buf.clear();
    c14n::canonicalize(signed_info, None, &inclusive_of(c14n_method), &mut buf);
    let value = b64("SignatureValue", &child(sig, "SignatureValue")?.text_ref())?;
    let mut tried = 0usize;
    for (i, cert) in certs.iter().enumerate() {
        if cert.key.id() != key_type {
            continue;
        }
        tried += 1;
        let ok = if key_type == Id::RSA {
            cert.rsa
                .as_ref()
                .is_some_and(|rsa| rsa_pkcs1_verify(rsa, sig_md, &buf, &value))
        } else {
            ecdsa_der(&value).is_some_and(|der| {
                Verifier::new(sig_md.openssl(), &cert.key)
                    .and_then(|mut v| {
                        v.update(&buf)?;
                        v.verify(&der)
                    })
                    .unwrap_or(false)
            })
        };
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
            signed.name()
        )
    }))
}

/// RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2) the way OpenSSL's
/// `RSA_verify` does it: the signature must be exactly the modulus length,
/// the public operation must yield a well-formed type-1 padding, and what it
/// carries must be byte for byte the DER `DigestInfo` of `message`'s digest
/// (no ASN.1 parsing of attacker bytes, no alternative encodings). Done on
/// the parsed RSA key directly: OpenSSL 3's per-call EVP context set-up cost
/// a fifth of the whole verification.
fn rsa_pkcs1_verify(
    rsa: &openssl::rsa::Rsa<openssl::pkey::Public>,
    md: Hash,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let prefix = md.digest_info_prefix();
    let size = rsa.size() as usize;
    if signature.len() != size {
        return false;
    }
    let digest = md.digest(message);
    let digest = digest.as_ref();
    let mut out = vec![0u8; size];
    let Ok(n) = rsa.public_decrypt(signature, &mut out, openssl::rsa::Padding::PKCS1) else {
        return false;
    };
    let expected_len = prefix.len() + digest.len();
    n == expected_len
        && out.get(..prefix.len()) == Some(prefix)
        && out
            .get(prefix.len()..n)
            .is_some_and(|d| openssl::memcmp::eq(d, digest))
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

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use openssl::rsa::{Padding, Rsa};
    use openssl::sign::Signer;

    /// What OpenSSL's own EVP verification (libxmlsec1's path) decides.
    fn evp_verify(
        key: &PKey<openssl::pkey::Public>,
        md: MessageDigest,
        msg: &[u8],
        sig: &[u8],
    ) -> bool {
        Verifier::new(md, key)
            .and_then(|mut v| {
                v.update(msg)?;
                v.verify(sig)
            })
            .unwrap_or(false)
    }

    /// ring's digests are openssl's, for every algorithm and for inputs
    /// around the block sizes.
    #[test]
    fn digests_match_openssl() {
        for md in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            for n in [0usize, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 4099] {
                let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
                let ours = md.digest(&data);
                let theirs = openssl::hash::hash(md.openssl(), &data).unwrap();
                assert_eq!(ours.as_ref(), &theirs[..], "{md:?} {n}");
            }
        }
    }

    #[test]
    fn rsa_pkcs1_decides_like_openssl_evp() {
        let private = Rsa::generate(2048).unwrap();
        let public = Rsa::from_public_components(
            private.n().to_owned().unwrap(),
            private.e().to_owned().unwrap(),
        )
        .unwrap();
        let pkey = PKey::from_rsa(public.clone()).unwrap();
        let signing = PKey::from_rsa(private.clone()).unwrap();
        let mds = [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512];
        let msg = b"<ds:SignedInfo>...</ds:SignedInfo>";
        for md in mds {
            let mut signer = Signer::new(md.openssl(), &signing).unwrap();
            signer.update(msg).unwrap();
            let sig = signer.sign_to_vec().unwrap();
            assert!(rsa_pkcs1_verify(&public, md, msg, &sig));
            assert!(evp_verify(&pkey, md.openssl(), msg, &sig));
            // Another message, a flipped bit, another digest: refused by both.
            assert!(!rsa_pkcs1_verify(&public, md, b"other", &sig));
            let mut flipped = sig.clone();
            flipped[100] ^= 1;
            assert!(!rsa_pkcs1_verify(&public, md, msg, &flipped));
            assert!(!evp_verify(&pkey, md.openssl(), msg, &flipped));
            for other in mds.iter().filter(|o| **o != md) {
                assert!(!rsa_pkcs1_verify(&public, *other, msg, &sig));
                assert!(!evp_verify(&pkey, other.openssl(), msg, &sig));
            }
        }
        // Payloads that are not exactly DigestInfo(SHA-256, digest), correctly
        // padded by the private key: the bare digest, no NULL parameters,
        // trailing bytes. OpenSSL's EVP path refuses each; so must we.
        let md = Hash::Sha256;
        let digest = openssl::hash::hash(md.openssl(), msg).unwrap();
        let prefix = md.digest_info_prefix();
        let without_null = [
            &[0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09][..],
            &prefix[6..15],
            &[0x04, 0x20],
        ]
        .concat();
        for payload in [
            digest.to_vec(),
            [without_null.as_slice(), &digest].concat(),
            [prefix, &digest, &[0u8]].concat(),
            [prefix, &digest[..31]].concat(),
        ] {
            let mut sig = vec![0u8; private.size() as usize];
            let n = private
                .private_encrypt(&payload, &mut sig, Padding::PKCS1)
                .unwrap();
            sig.truncate(n);
            assert!(!rsa_pkcs1_verify(&public, md, msg, &sig), "{payload:02x?}");
            assert!(
                !evp_verify(&pkey, md.openssl(), msg, &sig),
                "{payload:02x?}"
            );
        }
        // A signature whose integer starts with a zero byte is valid only at
        // full length; without its leading zero both refuse it.
        let (m, sig) = (0u32..5000)
            .map(|i| {
                let m = format!("message {i}").into_bytes();
                let mut signer = Signer::new(md.openssl(), &signing).unwrap();
                signer.update(&m).unwrap();
                let s = signer.sign_to_vec().unwrap();
                (m, s)
            })
            .find(|(_, s)| s[0] == 0)
            .expect("a signature with a leading zero byte");
        assert!(rsa_pkcs1_verify(&public, md, &m, &sig));
        assert!(!rsa_pkcs1_verify(&public, md, &m, &sig[1..]));
        assert!(!evp_verify(&pkey, md.openssl(), &m, &sig[1..]));
    }
}
