//! IdP metadata: entity id, SSO endpoints and signing certificates.
//!
//! Metadata without a signing certificate is refused outright: a verifier
//! with no key must never degrade to "skip verification" (samael does).
//! Several signing certificates are kept (key rollover): a signature that
//! verifies with any of them is accepted.

use base64::Engine;
use openssl::x509::X509;

use super::xml::{self, Element};

/// SAML 2.0 metadata namespace.
pub const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// HTTP-Redirect binding.
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// HTTP-POST binding.
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// One signing certificate from metadata.
#[derive(Debug, Clone)]
pub struct SigningCert {
    /// DER bytes, as handed to libxmlsec1.
    pub der: Vec<u8>,
    /// Subject, for traces.
    pub subject: String,
    /// SHA-256 fingerprint (hex, colon-separated), for traces and logs.
    pub fingerprint: String,
    /// The public key, parsed once for the native verifier.
    pub key: openssl::pkey::PKey<openssl::pkey::Public>,
    /// The same key as RSA, when it is one (the native verifier's RSA path
    /// works on it directly, without a per-signature EVP context).
    pub rsa: Option<openssl::rsa::Rsa<openssl::pkey::Public>>,
}

/// An SSO or SLO endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Binding URI.
    pub binding: String,
    /// Location URL.
    pub location: String,
    /// ResponseLocation (SLO: where LogoutResponses go, when not
    /// `location`).
    pub response_location: Option<String>,
}

/// What samlgate needs from the IdP's metadata.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    /// The IdP's entity id (expected Issuer).
    pub entity_id: String,
    /// SingleSignOnService endpoints.
    pub sso: Vec<Endpoint>,
    /// SingleLogoutService endpoints.
    pub slo: Vec<Endpoint>,
    /// Signing certificates (at least one).
    pub signing_certs: Vec<SigningCert>,
}

impl IdpMetadata {
    /// Parses metadata XML. `want_entity` picks one entity when the document
    /// is an `EntitiesDescriptor` holding several IdPs.
    pub fn parse(text: &str, want_entity: Option<&str>) -> Result<Self, String> {
        let doc = xml::parse(text).map_err(|e| e.to_string())?;
        let root = doc.root();
        let mut candidates: Vec<Element<'_>> = Vec::new();
        root.walk(&mut |e, _| {
            if e.is(NS_MD, "EntityDescriptor") && e.child(NS_MD, "IDPSSODescriptor").is_some() {
                candidates.push(e);
            }
        });
        let entity = match want_entity {
            Some(id) => candidates
                .iter()
                .find(|e| e.attr("entityID") == Some(id))
                .ok_or_else(|| format!("no IdP entity {id:?} in the metadata"))?,
            None => match candidates.as_slice() {
                [one] => one,
                [] => return Err("no EntityDescriptor with an IDPSSODescriptor".into()),
                _ => {
                    return Err(format!(
                        "the metadata describes {} IdPs; set [idp] entity_id to choose one",
                        candidates.len()
                    ));
                }
            },
        };
        let entity_id = entity
            .attr("entityID")
            .filter(|s| !s.is_empty())
            .ok_or("EntityDescriptor has no entityID")?
            .to_owned();
        let mut sso = Vec::new();
        let mut slo = Vec::new();
        let mut signing_certs = Vec::new();
        let endpoint = |s: Element<'_>| {
            let (b, l) = (s.attr("Binding")?, s.attr("Location")?);
            Some(Endpoint {
                binding: b.to_owned(),
                location: l.to_owned(),
                response_location: s
                    .attr("ResponseLocation")
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            })
        };
        for idp in entity.children_named(NS_MD, "IDPSSODescriptor") {
            sso.extend(
                idp.children_named(NS_MD, "SingleSignOnService")
                    .filter_map(endpoint),
            );
            slo.extend(
                idp.children_named(NS_MD, "SingleLogoutService")
                    .filter_map(endpoint)
                    .filter(|e| e.binding == BINDING_REDIRECT || e.binding == BINDING_POST),
            );
            for kd in idp.children_named(NS_MD, "KeyDescriptor") {
                if kd.attr("use").is_some_and(|u| u != "signing") {
                    continue;
                }
                let mut found: Vec<String> = Vec::new();
                kd.walk(&mut |e, _| {
                    if e.is(xml::NS_DSIG, "X509Certificate") {
                        found.push(e.text());
                    }
                });
                for b64 in found {
                    signing_certs.push(parse_cert(&b64)?);
                }
            }
        }
        if signing_certs.is_empty() {
            return Err(format!(
                "IdP {entity_id:?} publishes no signing certificate; refusing to run without one"
            ));
        }
        Ok(Self {
            entity_id,
            sso,
            slo,
            signing_certs,
        })
    }

    /// Refuses signing keys below the policy: RSA keys under 2048 bits
    /// unless `allow_rsa_1024` (`security.insecure_allow_rsa_1024`). The
    /// message names each weak certificate by fingerprint.
    pub fn check_key_sizes(&self, allow_rsa_1024: bool) -> Result<(), String> {
        if allow_rsa_1024 {
            return Ok(());
        }
        let weak: Vec<String> = self
            .signing_certs
            .iter()
            .filter_map(|c| {
                let bits = c.rsa.as_ref()?.size() * 8;
                (bits < 2048).then(|| format!("{} ({bits}-bit RSA)", c.fingerprint))
            })
            .collect();
        if weak.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "signing certificate(s) with RSA keys under 2048 bits: {}; have the IdP sign with a 2048-bit key or more (security.insecure_allow_rsa_1024 = true accepts them)",
                weak.join(", ")
            ))
        }
    }

    /// The IdP's SingleLogoutService: HTTP-Redirect when published, else
    /// HTTP-POST.
    pub fn slo_endpoint(&self) -> Option<&Endpoint> {
        self.slo
            .iter()
            .find(|e| e.binding == BINDING_REDIRECT)
            .or_else(|| self.slo.iter().find(|e| e.binding == BINDING_POST))
    }

    /// The SSO URL for the HTTP-Redirect binding, if published.
    pub fn redirect_sso_url(&self) -> Option<&str> {
        self.sso
            .iter()
            .find(|e| e.binding == BINDING_REDIRECT)
            .map(|e| e.location.as_str())
    }
}

/// Decodes a base64 X509Certificate (whitespace tolerated) and reads it.
fn parse_cert(b64: &str) -> Result<SigningCert, String> {
    let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| format!("X509Certificate is not base64: {e}"))?;
    let cert =
        X509::from_der(&der).map_err(|e| format!("X509Certificate is not a certificate: {e}"))?;
    let fp = cert
        .digest(openssl::hash::MessageDigest::sha256())
        .map_err(|e| e.to_string())?;
    let fingerprint = fp
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let subject = cert
        .subject_name()
        .entries()
        .filter_map(|e| e.data().to_string().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let key = cert
        .public_key()
        .map_err(|e| format!("X509Certificate has no usable public key: {e}"))?;
    let rsa = key.rsa().ok();
    Ok(SigningCert {
        der,
        subject,
        fingerprint,
        key,
        rsa,
    })
}
