//! EncryptedAssertion: XML Encryption with the SP's private key.
//!
//! Key transport RSA-OAEP (`xmlenc#rsa-oaep-mgf1p` and `xmlenc11#rsa-oaep`,
//! SHA-1/256/384/512 digests and MGF1 digests); content AES-128/192/256 in
//! GCM or CBC. RSA PKCS#1 v1.5 key transport is refused (Bleichenbacher's
//! oracle). Every length is checked before slicing: malformed ciphertext is a
//! `decryption_failed` refusal, never a panic.
//!
//! Two steps, so that the caller can decide what may be said: [`prepare`]
//! reads the structure (elements, algorithms, base64), which depends on
//! nothing secret; [`Prepared::decrypt`] then unwraps the key and decrypts.
//! When no Response signature covers the ciphertext, the caller gives every
//! failure from the key unwrap on (and of what follows on the plaintext)
//! one code and one message: otherwise the refusal would tell an attacker
//! whether a chosen ciphertext decrypted, padded or parsed (Jager and
//! Somorovsky, "How to break XML Encryption"). CBC content encryption is
//! the caller's policy too ([`Prepared::is_cbc`]).

use openssl::encrypt::Decrypter;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};

use super::error::SamlError;
use super::xml::{Element, NS_DSIG, NS_XENC};

const NS_XENC11: &str = "http://www.w3.org/2009/xmlenc11#";

fn fail(msg: impl Into<String>) -> SamlError {
    SamlError::Decryption(msg.into())
}

fn cipher_value(el: Element<'_>) -> Result<Vec<u8>, SamlError> {
    let text = el
        .child(NS_XENC, "CipherData")
        .and_then(|c| c.child(NS_XENC, "CipherValue"))
        .map(Element::text)
        .ok_or_else(|| fail("CipherData/CipherValue missing (CipherReference is not supported)"))?;
    // XML whitespace (line wrapping) only, as for DigestValue and
    // SignatureValue; anything else is not base64.
    super::decode::base64_wrapped(text.as_bytes())
        .map_err(|e| fail(format!("CipherValue is not base64: {e}")))
}

fn mgf_by_uri(uri: &str) -> Option<MessageDigest> {
    match uri {
        "http://www.w3.org/2009/xmlenc11#mgf1sha1" => Some(MessageDigest::sha1()),
        "http://www.w3.org/2009/xmlenc11#mgf1sha256" => Some(MessageDigest::sha256()),
        "http://www.w3.org/2009/xmlenc11#mgf1sha384" => Some(MessageDigest::sha384()),
        "http://www.w3.org/2009/xmlenc11#mgf1sha512" => Some(MessageDigest::sha512()),
        _ => None,
    }
}

/// The key transport of an `EncryptedKey`: RSA-OAEP with its digests.
struct Transport {
    oaep_md: MessageDigest,
    mgf_md: MessageDigest,
    wrapped: Vec<u8>,
}

/// Reads the key transport of `ek` (no secret involved).
fn transport(ek: Element<'_>) -> Result<Transport, SamlError> {
    let method = ek
        .child(NS_XENC, "EncryptionMethod")
        .ok_or_else(|| fail("EncryptedKey has no EncryptionMethod"))?;
    let alg = method.attr("Algorithm").unwrap_or("");
    let oaep_digest = || match method
        .child(NS_DSIG, "DigestMethod")
        .and_then(|d| d.attr("Algorithm"))
    {
        Some(u) => super::dsig::digest_for(u)
            .map(super::dsig::Hash::openssl)
            .ok_or_else(|| fail(format!("OAEP digest {u} unsupported"))),
        None => Ok(MessageDigest::sha1()),
    };
    let (oaep_md, mgf_md) = match alg {
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p" => {
            (oaep_digest()?, MessageDigest::sha1())
        }
        "http://www.w3.org/2009/xmlenc11#rsa-oaep" => {
            let mgf = match method
                .child(NS_XENC11, "MGF")
                .and_then(|d| d.attr("Algorithm"))
            {
                Some(u) => mgf_by_uri(u).ok_or_else(|| fail(format!("MGF {u} unsupported")))?,
                None => MessageDigest::sha1(),
            };
            (oaep_digest()?, mgf)
        }
        "http://www.w3.org/2001/04/xmlenc#rsa-1_5" => {
            return Err(fail(
                "RSA PKCS#1 v1.5 key transport is refused (padding-oracle risk); configure the IdP for RSA-OAEP",
            ));
        }
        other => return Err(fail(format!("key transport {other:?} unsupported"))),
    };
    Ok(Transport {
        oaep_md,
        mgf_md,
        wrapped: cipher_value(ek)?,
    })
}

/// Unwraps the content-encryption key.
fn unwrap_key(t: &Transport, key: &PKey<Private>) -> Result<Vec<u8>, SamlError> {
    let ossl =
        |_: openssl::error::ErrorStack| fail("the key could not be unwrapped with the SP key");
    let mut d = Decrypter::new(key).map_err(ossl)?;
    d.set_rsa_padding(Padding::PKCS1_OAEP).map_err(ossl)?;
    d.set_rsa_oaep_md(t.oaep_md).map_err(ossl)?;
    d.set_rsa_mgf1_md(t.mgf_md).map_err(ossl)?;
    let len = d.decrypt_len(&t.wrapped).map_err(ossl)?;
    let mut out = vec![0u8; len];
    let n = d.decrypt(&t.wrapped, &mut out).map_err(ossl)?;
    out.truncate(n);
    Ok(out)
}

/// An `EncryptedAssertion` read and checked for shape, not yet decrypted.
pub struct Prepared {
    transport: Transport,
    cipher: Cipher,
    gcm: bool,
    algorithm: String,
    body: Vec<u8>,
}

/// Reads an `EncryptedAssertion`: one EncryptedKey (in EncryptedData's
/// KeyInfo or beside EncryptedData), supported algorithms, base64 values.
pub fn prepare(ea: Element<'_>) -> Result<Prepared, SamlError> {
    let data = ea
        .child(NS_XENC, "EncryptedData")
        .ok_or_else(|| fail("EncryptedAssertion has no EncryptedData"))?;
    let alg = data
        .child(NS_XENC, "EncryptionMethod")
        .and_then(|m| m.attr("Algorithm"))
        .ok_or_else(|| fail("EncryptedData has no EncryptionMethod"))?;
    let (cipher, gcm) = match alg {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => (Cipher::aes_128_cbc(), false),
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => (Cipher::aes_192_cbc(), false),
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => (Cipher::aes_256_cbc(), false),
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => (Cipher::aes_128_gcm(), true),
        "http://www.w3.org/2009/xmlenc11#aes192-gcm" => (Cipher::aes_192_gcm(), true),
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => (Cipher::aes_256_gcm(), true),
        other => return Err(fail(format!("content encryption {other:?} unsupported"))),
    };
    let mut keys: Vec<Element<'_>> = Vec::new();
    if let Some(ki) = data.child(NS_DSIG, "KeyInfo") {
        keys.extend(ki.children_named(NS_XENC, "EncryptedKey"));
    }
    keys.extend(ea.children_named(NS_XENC, "EncryptedKey"));
    let &[ek] = keys.as_slice() else {
        return Err(fail(format!(
            "exactly one EncryptedKey expected, found {}",
            keys.len()
        )));
    };
    Ok(Prepared {
        transport: transport(ek)?,
        cipher,
        gcm,
        algorithm: alg.to_owned(),
        body: cipher_value(data)?,
    })
}

impl Prepared {
    /// Whether the content is AES-CBC (unauthenticated: malleable, and a
    /// padding oracle wherever failures can be told apart).
    pub fn is_cbc(&self) -> bool {
        !self.gcm
    }

    /// The content encryption algorithm URI.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// Unwraps the key and decrypts, returning the plaintext XML.
    pub fn decrypt(&self, key: &PKey<Private>) -> Result<String, SamlError> {
        let cek = unwrap_key(&self.transport, key)?;
        let (cipher, body) = (self.cipher, self.body.as_slice());
        if cek.len() != cipher.key_len() {
            return Err(fail("content key length does not match the algorithm"));
        }
        let plain = if self.gcm {
            const IV: usize = 12;
            const TAG: usize = 16;
            if body.len() < IV + TAG {
                return Err(fail("ciphertext too short"));
            }
            let (iv, rest) = body.split_at(IV);
            let (ct, tag) = rest.split_at(rest.len() - TAG);
            openssl::symm::decrypt_aead(cipher, &cek, Some(iv), &[], ct, tag)
                .map_err(|_| fail("authenticated decryption failed"))?
        } else {
            const IV: usize = 16;
            if body.len() < IV + 16 || !(body.len() - IV).is_multiple_of(16) {
                return Err(fail("ciphertext length is not a whole number of blocks"));
            }
            let (iv, ct) = body.split_at(IV);
            let ossl = |_| fail("decryption failed");
            let mut c = Crypter::new(cipher, Mode::Decrypt, &cek, Some(iv)).map_err(ossl)?;
            c.pad(false);
            let mut out = vec![0u8; ct.len() + 16];
            let mut n = c.update(ct, &mut out).map_err(ossl)?;
            n += c
                .finalize(out.get_mut(n..).unwrap_or_default())
                .map_err(ossl)?;
            out.truncate(n);
            // XML Encryption padding: the last byte gives the pad length
            // (1..=16); the other pad bytes are arbitrary.
            let pad = usize::from(out.last().copied().unwrap_or(0));
            if pad == 0 || pad > 16 || pad > out.len() {
                return Err(fail("decryption failed"));
            }
            out.truncate(out.len() - pad);
            out
        };
        String::from_utf8(plain).map_err(|_| fail("decrypted content is not UTF-8"))
    }
}
