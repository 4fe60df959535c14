//! `samlgate check-response`: runs decode → verify → checks → map on one
//! response and reports the decision as one JSON object, with a trace a
//! person can follow when debugging a customer's IdP.

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::mapping::{MappedUser, TraceLine};
use crate::saml::{self, NameId, SamlError, SignedBy, VerifyContext};

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The response proves who the user is.
    Accept,
    /// Refused.
    Reject,
}

/// Facts about an accepted assertion.
#[derive(Debug, Clone, Serialize)]
pub struct AssertionFacts {
    /// Assertion ID.
    pub id: String,
    /// Issuer.
    pub issuer: String,
    /// NameID format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_id_format: Option<String>,
    /// Request answered (None: IdP-initiated).
    pub in_response_to: Option<String>,
    /// Which signature covered it.
    pub signed_by: SignedBy,
    /// When it stops being usable.
    pub not_on_or_after: String,
    /// AuthnStatement SessionIndex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_index: Option<String>,
    /// Every attribute received.
    pub attributes: Vec<crate::mapping::SamlAttribute>,
}

/// The JSON `check-response` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// accept | reject.
    pub decision: Decision,
    /// Stable refusal code (null on accept).
    pub code: Option<&'static str>,
    /// Human reason (null on accept).
    pub reason: Option<String>,
    /// NameID value, when the assertion verified.
    pub name_id: Option<String>,
    /// The mapped user.
    pub user: Option<MappedUser>,
    /// Assertion facts, when it verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<AssertionFacts>,
    /// One line per step.
    pub trace: Vec<TraceLine>,
}

impl Report {
    fn reject(e: &SamlError, name_id: Option<String>, trace: Vec<TraceLine>) -> Self {
        Self {
            decision: Decision::Reject,
            code: Some(e.code()),
            reason: Some(e.to_string()),
            name_id,
            user: None,
            assertion: None,
            trace,
        }
    }
}

/// Runs the whole check on `input` (raw XML or the base64 POST value).
pub fn check_response(
    input: &[u8],
    config: &Config,
    outstanding: &[String],
    clock: &dyn Clock,
) -> Report {
    let mut trace = vec![TraceLine::new(
        "clock",
        format!("validating at {}", clock.now().to_rfc3339()),
    )];
    let xml = match saml::decode::decode_any(input, config.security.max_response_bytes) {
        Ok(x) => x,
        Err(e) => {
            trace.push(TraceLine::new("decode", e.to_string()));
            return Report::reject(&e, None, trace);
        }
    };
    trace.push(TraceLine::new(
        "decode",
        format!("{} bytes of XML", xml.len()),
    ));
    let ctx = VerifyContext {
        config,
        outstanding,
    };
    let verified = match saml::verify_response(&xml, &ctx, clock, &mut trace) {
        Ok(v) => v,
        Err(e) => return Report::reject(&e, None, trace),
    };
    let name_id = verified.name_id().map(|n: &NameId| n.value.clone());
    let user = match saml::map_user(&verified, config, &mut trace) {
        Ok(u) => u,
        Err(e) => return Report::reject(&e, name_id, trace),
    };
    Report {
        decision: Decision::Accept,
        code: None,
        reason: None,
        name_id,
        user: Some(user),
        assertion: Some(AssertionFacts {
            id: verified.assertion_id().to_owned(),
            issuer: verified.issuer().to_owned(),
            name_id_format: verified.name_id().and_then(|n| n.format.clone()),
            in_response_to: verified.in_response_to().map(str::to_owned),
            signed_by: verified.signed_by(),
            not_on_or_after: verified.not_on_or_after().to_rfc3339(),
            session_index: verified.session_index().map(str::to_owned),
            attributes: verified.attributes().to_vec(),
        }),
        trace,
    }
}
