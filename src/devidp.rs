//! TEST-ONLY development identity provider: the demo's login form and the
//! integration tests' response signer. It signs with whatever key it is
//! given (the demo uses the public key pair in `certs/`): never point a real
//! deployment's metadata at it. It is reachable only when `[demo] enabled`.
//!
//! Responses are built as text and the Assertion is signed through
//! libxmlsec1 (samael), RSA-SHA256, exclusive c14n, in the same shape as
//! SimpleSAMLphp's.

use base64::Engine;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use samael::crypto::{CryptoProvider, XmlSec};

use crate::saml::xml;

/// Everything that varies between responses.
#[derive(Debug, Clone)]
pub struct ResponseParams {
    /// NameID (an email).
    pub name_id: String,
    /// Attributes: (name, values).
    pub attributes: Vec<(String, Vec<String>)>,
    /// The ACS URL (Destination, Recipient).
    pub acs_url: String,
    /// The SP entity id (Audience).
    pub audience: String,
    /// The request answered; None for IdP-initiated.
    pub in_response_to: Option<String>,
    /// Issue time.
    pub now: DateTime<Utc>,
    /// How long the assertion is valid.
    pub validity: Duration,
    /// Assertion ID (random when None).
    pub assertion_id: Option<String>,
}

/// The development IdP's signing identity.
pub struct DevIdp {
    entity_id: String,
    key_der: Vec<u8>,
    cert_b64: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A random SAML ID (`_` + 32 hex digits: 128 bits).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("_{hex}")
}

impl DevIdp {
    /// From a PEM private key and certificate.
    pub fn new(entity_id: &str, key_pem: &[u8], cert_pem: &[u8]) -> Result<Self, String> {
        let key = openssl::pkey::PKey::private_key_from_pem(key_pem).map_err(|e| e.to_string())?;
        let key_der = key.private_key_to_der().map_err(|e| e.to_string())?;
        let cert = openssl::x509::X509::from_pem(cert_pem).map_err(|e| e.to_string())?;
        let cert_b64 = base64::engine::general_purpose::STANDARD
            .encode(cert.to_der().map_err(|e| e.to_string())?);
        Ok(Self {
            entity_id: entity_id.to_owned(),
            key_der,
            cert_b64,
        })
    }

    /// The IdP entity id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// A signed (Assertion-signed) Response as XML text.
    pub fn response(&self, p: &ResponseParams) -> Result<String, String> {
        let signed = self.sign_assertion(&self.assertion_template(p))?;
        Ok(self.wrap(p, &signed))
    }

    /// The unsigned assertion of [`DevIdp::response`], its Signature
    /// template in place (empty DigestValue and SignatureValue): tests
    /// change it, then [`DevIdp::sign_assertion`] and [`DevIdp::wrap`].
    pub fn assertion_template(&self, p: &ResponseParams) -> String {
        let t = |d: DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Secs, true);
        let now = t(p.now);
        let until = t(p.now + p.validity);
        let before = t(p.now - Duration::seconds(60));
        let aid = p.assertion_id.clone().unwrap_or_else(random_id);
        let irt = p
            .in_response_to
            .as_ref()
            .map(|i| format!(" InResponseTo=\"{}\"", esc(i)))
            .unwrap_or_default();
        let attrs: String = p
            .attributes
            .iter()
            .map(|(n, vs)| {
                let values: String = vs
                    .iter()
                    .map(|v| format!("<saml:AttributeValue xsi:type=\"xs:string\">{}</saml:AttributeValue>", esc(v)))
                    .collect();
                format!(
                    "<saml:Attribute Name=\"{}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\">{values}</saml:Attribute>",
                    esc(n)
                )
            })
            .collect();
        let assertion = format!(
            "<saml:Assertion xmlns:saml=\"{sa}\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ID=\"{aid}\" Version=\"2.0\" IssueInstant=\"{now}\">\
<saml:Issuer>{iss}</saml:Issuer>\
<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/><ds:Reference URI=\"#{aid}\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/><ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
</ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>\
<ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>\
<saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">{nameid}</saml:NameID>\
<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData NotOnOrAfter=\"{until}\" Recipient=\"{acs}\"{irt}/></saml:SubjectConfirmation></saml:Subject>\
<saml:Conditions NotBefore=\"{before}\" NotOnOrAfter=\"{until}\"><saml:AudienceRestriction><saml:Audience>{aud}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
<saml:AuthnStatement AuthnInstant=\"{now}\" SessionIndex=\"_s{aid}\"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>\
<saml:AttributeStatement>{attrs}</saml:AttributeStatement></saml:Assertion>",
            sa = xml::NS_ASSERTION,
            iss = esc(&self.entity_id),
            cert = self.cert_b64,
            nameid = esc(&p.name_id),
            acs = esc(&p.acs_url),
            aud = esc(&p.audience),
        );
        assertion
    }

    /// Signs an assertion template (libxmlsec1, the IdP key).
    pub fn sign_assertion(&self, template: &str) -> Result<String, String> {
        let signed =
            XmlSec::sign_xml(template.as_bytes(), &self.key_der).map_err(|e| e.to_string())?;
        // libxml2 prepends an XML declaration; the assertion is embedded.
        match signed.find("<saml:Assertion") {
            Some(i) => Ok(signed.get(i..).unwrap_or_default().trim_end().to_owned()),
            None => Err("signed output lost the assertion".into()),
        }
    }

    /// The (unsigned) Response around a signed assertion.
    pub fn wrap(&self, p: &ResponseParams, signed: &str) -> String {
        let t = |d: DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Secs, true);
        let now = t(p.now);
        let irt = p
            .in_response_to
            .as_ref()
            .map(|i| format!(" InResponseTo=\"{}\"", esc(i)))
            .unwrap_or_default();
        format!(
            "<samlp:Response xmlns:samlp=\"{sp}\" xmlns:saml=\"{sa}\" ID=\"{rid}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{acs}\"{irt}>\
<saml:Issuer>{iss}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{signed}</samlp:Response>",
            sp = xml::NS_PROTOCOL,
            sa = xml::NS_ASSERTION,
            rid = random_id(),
            acs = esc(&p.acs_url),
            iss = esc(&self.entity_id),
        )
    }

    /// The response base64-encoded, as a browser POSTs it.
    pub fn response_b64(&self, p: &ResponseParams) -> Result<String, String> {
        self.response(p)
            .map(|x| base64::engine::general_purpose::STANDARD.encode(x))
    }
}
