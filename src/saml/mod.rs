//! The verification core: `decode → pre-check → verify → checks`, producing a
//! [`VerifiedAssertion`] that only this module can build.
//!
//! * decode: base64, size cap, UTF-8 ([`decode`]).
//! * pre-check: one bounded parse refusing DTDs, PIs and deep nesting
//!   ([`xml`]), then the strict signature profile and message shape
//!   ([`precheck`]), before any cryptography.
//! * verify: libxmlsec1 verify-then-reduce ([`signature`]); the assertion
//!   read afterwards comes from the signed content only.
//! * checks: one function per rule ([`checks`]).

pub mod c14n;
pub mod checks;
pub mod decode;
pub mod decrypt;
pub mod dsig;
pub mod error;
pub mod logout;
pub mod metadata;
pub mod precheck;
pub mod signature;
pub mod xml;

use chrono::{DateTime, Duration, Utc};

use crate::account::Account;
use crate::clock::Clock;
use crate::config::{Security, VerifierKind};
use crate::mapping::{MappedUser, MappingInput, SamlAttribute, Trace};
use checks::TimeWindow;
pub use error::SamlError;
use precheck::AlgorithmPolicy;
use xml::{Element, NS_ASSERTION};

/// The Subject's NameID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NameId {
    /// Full text (comments never truncate it).
    pub value: String,
    /// Format, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// NameQualifier, if given (sent back as received in a LogoutRequest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_qualifier: Option<String>,
    /// SPNameQualifier, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_name_qualifier: Option<String>,
}

/// Which signature covered the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedBy {
    /// The enclosing Response's signature.
    Response,
    /// The Assertion's own signature.
    Assertion,
    /// Both.
    Both,
}

/// An assertion that passed every check. Private fields: only
/// [`verify_response`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    assertion_id: String,
    issuer: String,
    name_id: Option<NameId>,
    session_index: Option<String>,
    session_not_on_or_after: Option<DateTime<Utc>>,
    not_on_or_after: DateTime<Utc>,
    in_response_to: Option<String>,
    attributes: Vec<SamlAttribute>,
    signed_by: SignedBy,
}

impl VerifiedAssertion {
    /// Assertion ID (the replay-cache key).
    pub fn assertion_id(&self) -> &str {
        &self.assertion_id
    }
    /// The IdP entity id that issued it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The NameID, if any.
    pub fn name_id(&self) -> Option<&NameId> {
        self.name_id.as_ref()
    }
    /// AuthnStatement SessionIndex.
    pub fn session_index(&self) -> Option<&str> {
        self.session_index.as_deref()
    }
    /// AuthnStatement SessionNotOnOrAfter (caps the local session).
    pub fn session_not_on_or_after(&self) -> Option<DateTime<Utc>> {
        self.session_not_on_or_after
    }
    /// When the assertion stops being usable (how long a replay cache must remember it).
    pub fn not_on_or_after(&self) -> DateTime<Utc> {
        self.not_on_or_after
    }
    /// The request answered, `None` for IdP-initiated.
    pub fn in_response_to(&self) -> Option<&str> {
        self.in_response_to.as_deref()
    }
    /// All attributes.
    pub fn attributes(&self) -> &[SamlAttribute] {
        &self.attributes
    }
    /// Which signature covered the assertion.
    pub fn signed_by(&self) -> SignedBy {
        self.signed_by
    }
    /// What the mapping reads.
    pub fn mapping_input(&self) -> MappingInput<'_> {
        MappingInput {
            name_id: self.name_id.as_ref().map(|n| n.value.as_str()),
            attributes: &self.attributes,
        }
    }
}

/// What a verification needs: the account the response was posted to and
/// the gateway's security policy.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    /// The account whose ACS received the response.
    pub account: &'a Account,
    /// The gateway's security policy.
    pub security: &'a Security,
    /// Request ids outstanding for this browser / login.
    pub outstanding: &'a [String],
}

/// Parses decoded response XML, refusing it first when over
/// `security.max_response_bytes`.
pub fn parse_response<'a>(
    xml_text: &'a str,
    security: &Security,
) -> Result<xml::Document<'a>, SamlError> {
    let limit = security.max_response_bytes;
    if xml_text.len() > limit {
        return Err(SamlError::TooLarge {
            what: "decoded XML",
            size: xml_text.len(),
            limit,
        });
    }
    xml::parse(xml_text)
}

/// Verifies decoded response XML. `trace` receives one line per step.
pub fn verify_response(
    xml_text: &str,
    ctx: &VerifyContext<'_>,
    clock: &dyn Clock,
    trace: &mut Trace,
) -> Result<VerifiedAssertion, SamlError> {
    let parsed = parse_response(xml_text, ctx.security)?;
    verify_parsed(xml_text, &parsed, ctx, clock, trace)
}

/// [`verify_response`] on a document already parsed from `xml_text` by
/// [`parse_response`]; `xml_text` is what libxmlsec1 verifies when it is
/// the configured verifier.
pub fn verify_parsed(
    xml_text: &str,
    parsed_doc: &xml::Document<'_>,
    ctx: &VerifyContext<'_>,
    clock: &dyn Clock,
    trace: &mut Trace,
) -> Result<VerifiedAssertion, SamlError> {
    verify_unresolved(
        xml_text,
        parsed_doc,
        ctx.account,
        ctx.security,
        clock,
        trace,
    )?
    .resolve(ctx.outstanding, trace)
}

/// A response whose every check passed but one: whether the request it
/// answers (its *signed* InResponseTo) is outstanding. The gateway learns
/// that from the store and the browser after the CPU-heavy part has run off
/// its async workers; the only way on to a [`VerifiedAssertion`] is
/// [`Unresolved::resolve`].
#[derive(Debug)]
pub struct Unresolved {
    assertion: VerifiedAssertion,
    signed_in_response_to: Option<String>,
    allow_idp_initiated: bool,
}

impl Unresolved {
    /// The request this response answers, from signed data only.
    pub fn in_response_to(&self) -> Option<&str> {
        self.signed_in_response_to.as_deref()
    }

    /// Decides solicitation: a response answering a request must name one of
    /// `outstanding`; one answering none needs `allow_idp_initiated`.
    pub fn resolve(
        self,
        outstanding: &[String],
        trace: &mut Trace,
    ) -> Result<VerifiedAssertion, SamlError> {
        let answered = checks::check_solicitation(
            self.signed_in_response_to.as_deref(),
            outstanding,
            self.allow_idp_initiated,
        )?;
        trace.add("checks", || match &answered {
            Some(id) => format!("answers outstanding request {id:?}"),
            None => "unsolicited (IdP-initiated)".into(),
        });
        Ok(VerifiedAssertion {
            in_response_to: answered,
            ..self.assertion
        })
    }
}

/// Every check of [`verify_parsed`] but whether the request answered is
/// outstanding (see [`Unresolved`]).
pub fn verify_unresolved(
    xml_text: &str,
    parsed_doc: &xml::Document<'_>,
    cfg: &Account,
    sec: &Security,
    clock: &dyn Clock,
    trace: &mut Trace,
) -> Result<Unresolved, SamlError> {
    let policy = AlgorithmPolicy {
        insecure_allow_sha1: sec.insecure_allow_sha1,
    };
    let doc = parsed_doc.root();
    let shape = precheck::precheck_response(doc, policy)?;
    trace.add("precheck", || {
        format!(
            "Response {:?}: response signed {}, assertion signed {}, encrypted {}, algorithms {:?}",
            doc.attr("ID").unwrap_or(""),
            shape.response_signed,
            shape.assertion_signed,
            shape.encrypted,
            shape.signature_algorithms
        )
    });
    checks::check_status(doc)?;
    let raw_assertion = doc
        .elements()
        .find(|e| e.is(NS_ASSERTION, "Assertion") || e.is(NS_ASSERTION, "EncryptedAssertion"))
        .ok_or(SamlError::NoAssertion)?;

    let certs = &cfg.idp.metadata.signing_certs;
    let allow_sha1 = sec.insecure_allow_sha1;

    // Signature: obtain the signed Response (if signed) and the signed
    // assertion. libxmlsec1 hands back a reduced copy (what its verified
    // signatures cover); the native verifier hands back nodes of `doc` itself.
    let native = sec.verifier == VerifierKind::Native;
    // Declared before the documents that borrow from them.
    let reduced_xml: String;
    let plain: String;
    let reduced_plain: String;
    let reduced: Option<xml::Document<'_>>;
    let signed_doc: Option<Element<'_>> = if !(shape.response_signed || shape.assertion_signed) {
        if !shape.encrypted {
            return Err(SamlError::SignatureMissing);
        }
        None
    } else if native {
        let mut top = None;
        if shape.response_signed {
            let v = dsig::verify_element(doc, certs)?;
            trace.add("signature", || signature_trace(&v, certs));
            top = Some(v.element());
        }
        if shape.assertion_signed {
            let v = dsig::verify_element(raw_assertion, certs)?;
            trace.add("signature", || signature_trace(&v, certs));
            top = top.or(Some(v.element()));
        }
        top
    } else {
        reduced_xml =
            signature::verify_and_reduce(xml_text, certs, allow_sha1, dsig_signatures(doc))?
                .signed_xml;
        let parsed = xml::parse(&reduced_xml)?;
        trace.add("signature", || format!(
                "libxmlsec1 verified against {} metadata certificate(s); signed content rooted at {}",
                certs.len(),
                parsed.root().name()
            ));
        reduced = Some(parsed);
        reduced.as_ref().map(xml::Document::root)
    };

    let signed_response: Option<Element<'_>> = match signed_doc {
        Some(d) if shape.response_signed => {
            if !d.is(xml::NS_PROTOCOL, "Response") {
                return Err(SamlError::SignatureInvalid(
                    "the signed content is not the Response".into(),
                ));
            }
            Some(d)
        }
        _ => None,
    };
    let decrypted_doc: Option<xml::Document<'_>>;
    let mut signed_by = match (shape.response_signed, shape.assertion_signed) {
        (true, true) => SignedBy::Both,
        (true, false) => SignedBy::Response,
        _ => SignedBy::Assertion,
    };
    let assertion: Element<'_> = if shape.encrypted {
        let key = cfg.sp.key.as_ref().ok_or_else(|| {
            SamlError::Decryption(
                "the assertion is encrypted but no [sp] key_file is configured".into(),
            )
        })?;
        // Take the ciphertext from the signed content when the Response is signed.
        let ea = match signed_response {
            Some(r) => r
                .child(NS_ASSERTION, "EncryptedAssertion")
                .ok_or(SamlError::AssertionNotSigned)?,
            None => raw_assertion,
        };
        let prepared = decrypt::prepare(ea)?;
        // CBC is malleable: accepted only when configured and when a
        // Response signature covers the ciphertext (and with it the
        // EncryptionMethod, so no GCM key is ever probed as CBC).
        if prepared.is_cbc() && !(sec.allow_cbc_encryption && signed_response.is_some()) {
            return Err(SamlError::Decryption(format!(
                "content encryption {} (CBC) is refused: it needs security.allow_cbc_encryption = true and a signed Response; configure the IdP for AES-GCM",
                prepared.algorithm()
            )));
        }
        // With no Response signature over the ciphertext, every failure
        // from here until the inner signature verifies is one answer (see
        // `decrypt`); the reason goes to the trace only.
        let opaque = signed_response.is_none();
        let hide = |e: SamlError, trace: &mut Trace| -> SamlError {
            if !opaque {
                return e;
            }
            trace.add("decrypt", || format!("withheld from the refusal: {e}"));
            SamlError::Decryption(OPAQUE_DECRYPTION.into())
        };
        plain = prepared.decrypt(key).map_err(|e| hide(e, trace))?;
        if plain.len() > sec.max_response_bytes {
            let e = SamlError::TooLarge {
                what: "decrypted assertion",
                size: plain.len(),
                limit: sec.max_response_bytes,
            };
            return Err(hide(e, trace));
        }
        let parsed = xml::parse(&plain).map_err(|e| hide(e, trace))?;
        let inner_sig =
            precheck::precheck_assertion(parsed.root(), policy).map_err(|e| hide(e, trace))?;
        trace.add("decrypt", || {
            format!(
                "EncryptedAssertion decrypted; inner signature: {}",
                inner_sig.as_deref().unwrap_or("none")
            )
        });
        decrypted_doc = match inner_sig {
            Some(_) => {
                let signed = if native {
                    let v =
                        dsig::verify_element(parsed.root(), certs).map_err(|e| hide(e, trace))?;
                    trace.add("signature", || signature_trace(&v, certs));
                    parsed
                } else {
                    reduced_plain = signature::verify_and_reduce(
                        &plain,
                        certs,
                        allow_sha1,
                        dsig_signatures(parsed.root()),
                    )
                    .map_err(|e| hide(e, trace))?
                    .signed_xml;
                    xml::parse(&reduced_plain).map_err(|e| hide(e, trace))?
                };
                if !signed.root().is(NS_ASSERTION, "Assertion") {
                    return Err(hide(SamlError::AssertionNotSigned, trace));
                }
                signed_by = if signed_response.is_some() {
                    SignedBy::Both
                } else {
                    SignedBy::Assertion
                };
                Some(signed)
            }
            None if signed_response.is_some() => {
                signed_by = SignedBy::Response;
                Some(parsed)
            }
            None => return Err(hide(SamlError::AssertionNotSigned, trace)),
        };
        decrypted_doc
            .as_ref()
            .map(xml::Document::root)
            .ok_or(SamlError::AssertionNotSigned)?
    } else {
        match signed_doc {
            Some(d) if d.is(xml::NS_PROTOCOL, "Response") => {
                let mut found = d.children_named(NS_ASSERTION, "Assertion");
                let a = found.next().ok_or(SamlError::AssertionNotSigned)?;
                if found.next().is_some() {
                    return Err(SamlError::MultipleAssertions(2));
                }
                a
            }
            Some(d) if d.is(NS_ASSERTION, "Assertion") && !shape.response_signed => d,
            _ => return Err(SamlError::AssertionNotSigned),
        }
    };
    // The assertion read must be the one the message carried.
    if !shape.encrypted && raw_assertion.attr("ID") != assertion.attr("ID") {
        return Err(SamlError::AssertionNotSigned);
    }
    let assertion_id = assertion
        .attr("ID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SamlError::MalformedXml("Assertion has no ID".into()))?
        .to_owned();
    trace.add("signature", || {
        format!("assertion {assertion_id:?} covered by the {signed_by:?} signature")
    });

    // Checks. Response-level values come from the signed Response when it is
    // signed; otherwise from the message (those checks can only refuse).
    let envelope = signed_response.unwrap_or(doc);
    let window = TimeWindow {
        now: clock.now(),
        skew: Duration::seconds(sec.clock_skew_secs),
        max_issue_delay: Duration::seconds(sec.max_issue_delay_secs),
    };
    let idp_id = &cfg.idp.metadata.entity_id;
    checks::check_issuer(envelope, "Response", idp_id, false)?;
    checks::check_issuer(assertion, "Assertion", idp_id, true)?;
    checks::check_destination(envelope, &cfg.sp.acs_url, signed_response.is_some())?;
    checks::check_issue_instant(envelope, "Response IssueInstant", &window)?;
    checks::check_issue_instant(assertion, "Assertion IssueInstant", &window)?;
    checks::check_conditions(assertion, &cfg.sp.entity_id, &window)?;
    let subject = assertion
        .child(NS_ASSERTION, "Subject")
        .ok_or(SamlError::SubjectMissing)?;
    let confirmed = checks::check_subject_confirmation(subject, &cfg.sp.acs_url, &window)?;
    // Solicitation from signed data only: the unsigned Response's
    // InResponseTo may at most repeat it.
    let signed_in_response_to = checks::signed_in_response_to(
        signed_response.and_then(|r| r.attr("InResponseTo")),
        if signed_response.is_none() {
            doc.attr("InResponseTo")
        } else {
            None
        },
        confirmed.in_response_to.as_deref(),
    )?;
    trace.add("checks", || {
        format!(
            "issuer, destination, audience, time window and bearer confirmation OK; signed InResponseTo {:?}",
            signed_in_response_to.as_deref().unwrap_or("(none)")
        )
    });

    let name_id = subject.child(NS_ASSERTION, "NameID").map(|n| NameId {
        // XML whitespace only: trimming Unicode White_Space (NBSP, U+3000)
        // would make two different signed NameIDs one.
        value: crate::email::trim_xml_space(&n.text_ref()).to_owned(),
        format: n.attr("Format").map(str::to_owned),
        name_qualifier: n.attr("NameQualifier").map(str::to_owned),
        sp_name_qualifier: n.attr("SPNameQualifier").map(str::to_owned),
    });
    let mut session_index = None;
    let mut session_not_on_or_after = None;
    if let Some(authn) = assertion.child(NS_ASSERTION, "AuthnStatement") {
        session_index = authn.attr("SessionIndex").map(str::to_owned);
        if let Some(s) = authn.attr("SessionNotOnOrAfter") {
            let t = checks::parse_time("AuthnStatement SessionNotOnOrAfter", s)?;
            if t + window.skew <= window.now {
                return Err(SamlError::Expired {
                    element: "AuthnStatement SessionNotOnOrAfter",
                    at: s.to_owned(),
                    now: window.now.to_rfc3339(),
                    skew_secs: sec.clock_skew_secs,
                });
            }
            session_not_on_or_after = Some(t);
        }
    }
    let mut attributes = Vec::new();
    for st in assertion.children_named(NS_ASSERTION, "AttributeStatement") {
        for a in st.children_named(NS_ASSERTION, "Attribute") {
            attributes.push(SamlAttribute {
                name: a.attr("Name").unwrap_or("").to_owned(),
                friendly_name: a.attr("FriendlyName").map(str::to_owned),
                name_format: a.attr("NameFormat").map(str::to_owned),
                values: a
                    .children_named(NS_ASSERTION, "AttributeValue")
                    .map(Element::text)
                    .collect(),
            });
        }
    }
    let conditions_end = assertion
        .child(NS_ASSERTION, "Conditions")
        .and_then(|c| c.attr("NotOnOrAfter"))
        .and_then(|s| checks::parse_time("Conditions", s).ok());
    let not_on_or_after = conditions_end.map_or(confirmed.not_on_or_after, |c| {
        c.max(confirmed.not_on_or_after)
    });
    Ok(Unresolved {
        assertion: VerifiedAssertion {
            assertion_id,
            issuer: idp_id.clone(),
            name_id,
            session_index,
            session_not_on_or_after,
            not_on_or_after,
            in_response_to: None,
            attributes,
            signed_by,
        },
        signed_in_response_to,
        allow_idp_initiated: cfg.idp.allow_idp_initiated,
    })
}

/// The one refusal message for an EncryptedAssertion no Response signature
/// covers, whatever failed from the key unwrap until its own signature
/// verified: telling those failures apart would be a decryption oracle.
pub const OPAQUE_DECRYPTION: &str = "the EncryptedAssertion did not decrypt to an assertion signed by the IdP (the Response is unsigned, so why is not said; `samlgate check-response` traces it)";

/// How many XML-DSig Signature elements `root`'s subtree holds (what the
/// pre-check judged; libxml2 must see as many).
fn dsig_signatures(root: Element<'_>) -> usize {
    let mut n = 0;
    root.walk(&mut |e, _| {
        if e.is(xml::NS_DSIG, "Signature") {
            n += 1;
        }
    });
    n
}

/// The trace line of a natively verified signature.
fn signature_trace(v: &dsig::Verified<'_>, certs: &[metadata::SigningCert]) -> String {
    format!(
        "{} {:?} verified natively with metadata certificate {}",
        v.element().name(),
        v.element().attr("ID").unwrap_or(""),
        certs
            .get(v.cert_index())
            .map_or("?", |c| c.fingerprint.as_str())
    )
}

/// Applies the configured mapping; a mapping failure is a refusal.
pub fn map_user(
    verified: &VerifiedAssertion,
    account: &Account,
    security: &Security,
    trace: &mut Trace,
) -> Result<MappedUser, SamlError> {
    let mut user = account
        .mapping
        .apply(&verified.mapping_input(), trace)
        .map_err(SamlError::Mapping)?;
    // The key every entry point stores: see `crate::email`.
    user.email =
        crate::email::canonical(&user.email, security.allow_international_email).map_err(|e| {
            match e {
                crate::email::EmailError::NotAscii(_) => {
                    SamlError::EmailNotAscii(format!("mapping.email: {e}"))
                }
                crate::email::EmailError::NotAnEmail(_) => {
                    SamlError::Mapping(format!("mapping.email: {e}"))
                }
            }
        })?;
    Ok(user)
}
