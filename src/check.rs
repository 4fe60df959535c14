//! `samlgate check-response`: runs decode → verify → checks → map on one
//! response and reports the decision as one JSON object, with a trace a
//! person can follow when debugging a customer's IdP.

use serde::Serialize;

use crate::account::Account;
use crate::clock::Clock;
use crate::config::Config;
use crate::mapping::{MappedUser, Trace, TraceLine};
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
    /// The account whose settings decided (`default`: the config file's).
    pub account: String,
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
    /// The read-only provisioning verdict for the mapped user (what the
    /// gateway's login decision would do); it does not change `decision`,
    /// which judges the response itself (steps 1-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningVerdict>,
    /// One line per step.
    pub trace: Vec<TraceLine>,
}

/// What the login decision would do with an accepted response.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisioningVerdict {
    /// `would_admit` or `would_refuse`, or `unknown` when the store failed.
    pub verdict: &'static str,
    /// `created`-style action when admitted (would_create, would_update, unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<crate::provisioning::Action>,
    /// Refusal code when refused (or store_unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// For a person.
    pub detail: String,
}

/// Adds the read-only provisioning verdict to an accepted report.
pub async fn add_provisioning(
    report: &mut Report,
    store: &dyn crate::store::Store,
    config: &Config,
    account: &Account,
    owners: &dyn crate::provisioning::DomainOwners,
    clock: &dyn Clock,
) {
    let Some(user) = &report.user else { return };
    let v =
        match crate::provisioning::decide(store, config, account, owners, user, clock.now(), false)
            .await
        {
            Ok(a) => ProvisioningVerdict {
                verdict: "would_admit",
                action: Some(a.action),
                code: None,
                detail: format!(
                    "{:?} {} (status {:?})",
                    a.action, a.user.email, a.user.status
                ),
            },
            Err(crate::provisioning::Refusal::Store(e)) => ProvisioningVerdict {
                verdict: "unknown",
                action: None,
                code: Some(e.code()),
                detail: e.to_string(),
            },
            Err(r) => ProvisioningVerdict {
                verdict: "would_refuse",
                action: None,
                code: Some(r.code()),
                detail: r.to_string(),
            },
        };
    report.trace.push(TraceLine::new(
        "provision",
        format!("{}: {}", v.verdict, v.detail),
    ));
    report.provisioning = Some(v);
}

impl Report {
    fn reject(
        account: &str,
        e: &SamlError,
        name_id: Option<String>,
        trace: Vec<TraceLine>,
    ) -> Self {
        Self {
            decision: Decision::Reject,
            account: account.to_owned(),
            code: Some(e.code()),
            reason: Some(e.to_string()),
            name_id,
            user: None,
            assertion: None,
            provisioning: None,
            trace,
        }
    }
}

/// Runs the whole check on `input` (raw XML or the base64 POST value) as
/// the config file's account would. Without one (no `[idp]`) it refuses
/// with `unknown_account`: use [`check_response_for`].
pub fn check_response(
    input: &[u8],
    config: &Config,
    outstanding: &[String],
    clock: &dyn Clock,
) -> Report {
    match &config.account {
        Some(a) => check_response_for(input, config, a, outstanding, clock),
        None => Report {
            decision: Decision::Reject,
            account: crate::account::DEFAULT_ID.to_owned(),
            code: Some("unknown_account"),
            reason: Some(
                "the config has no default account ([idp]); name one with --account".into(),
            ),
            name_id: None,
            user: None,
            assertion: None,
            provisioning: None,
            trace: Vec::new(),
        },
    }
}

/// Runs the whole check on `input` as `account` would.
pub fn check_response_for(
    input: &[u8],
    config: &Config,
    account: &Account,
    outstanding: &[String],
    clock: &dyn Clock,
) -> Report {
    let id = account.id.as_str();
    let mut trace = Trace::collecting();
    trace.add("clock", || {
        format!("validating at {}", clock.now().to_rfc3339())
    });
    let xml = match saml::decode::decode_any(input, config.security.max_response_bytes) {
        Ok(x) => x,
        Err(e) => {
            trace.add("decode", || e.to_string());
            return Report::reject(id, &e, None, trace.into_lines());
        }
    };
    trace.add("decode", || format!("{} bytes of XML", xml.len()));
    let ctx = VerifyContext {
        account,
        security: &config.security,
        outstanding,
    };
    let verified = match saml::verify_response(&xml, &ctx, clock, &mut trace) {
        Ok(v) => v,
        Err(e) => return Report::reject(id, &e, None, trace.into_lines()),
    };
    let name_id = verified.name_id().map(|n: &NameId| n.value.clone());
    let user = match saml::map_user(&verified, account, &config.security, &mut trace) {
        Ok(u) => u,
        Err(e) => return Report::reject(id, &e, name_id, trace.into_lines()),
    };
    Report {
        decision: Decision::Accept,
        account: id.to_owned(),
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
        provisioning: None,
        trace: trace.into_lines(),
    }
}
