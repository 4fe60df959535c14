//! Step 3: one function per rule of the SAML Web SSO profile. Each takes the
//! element it judges and returns the one error variant that names it.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::error::SamlError;
use super::xml::{Element, NS_ASSERTION, NS_PROTOCOL};

/// `urn:oasis:names:tc:SAML:2.0:status:Success`.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// Bearer subject confirmation method.
pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Entity NameID format (for Issuer).
const FORMAT_ENTITY: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";

/// What time checks need.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    /// The validation clock.
    pub now: DateTime<Utc>,
    /// Skew allowance.
    pub skew: Duration,
    /// Oldest IssueInstant accepted (before skew).
    pub max_issue_delay: Duration,
}

/// Parses an `xs:dateTime` (a missing zone is read as UTC).
pub fn parse_time(element: &'static str, s: &str) -> Result<DateTime<Utc>, SamlError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|_| SamlError::BadTime {
            element,
            value: s.chars().take(64).collect(),
        })
}

/// Status must be Success (read from the message, signed or not: a
/// non-Success answer is a refusal either way, and the IdP's reason helps).
pub fn check_status(response: Element<'_>) -> Result<(), SamlError> {
    let status = response
        .child(NS_PROTOCOL, "Status")
        .ok_or_else(|| SamlError::MalformedXml("Response has no Status".into()))?;
    let code = status
        .child(NS_PROTOCOL, "StatusCode")
        .and_then(|c| c.attr("Value"))
        .unwrap_or("");
    if code == STATUS_SUCCESS {
        return Ok(());
    }
    let sub = status
        .child(NS_PROTOCOL, "StatusCode")
        .and_then(|c| c.child(NS_PROTOCOL, "StatusCode"))
        .and_then(|c| c.attr("Value"))
        .map(str::to_owned);
    let message = status
        .child(NS_PROTOCOL, "StatusMessage")
        .map(|m| m.text().chars().take(200).collect::<String>());
    Err(SamlError::StatusNotSuccess {
        code: code.to_owned(),
        sub,
        message,
    })
}

/// Issuer of `el` must be the IdP's entity id. `required` for assertions;
/// optional on the Response (checked when present).
pub fn check_issuer(
    el: Element<'_>,
    element: &'static str,
    expected: &str,
    required: bool,
) -> Result<(), SamlError> {
    let Some(issuer) = el.child(NS_ASSERTION, "Issuer") else {
        if required {
            return Err(SamlError::IssuerMismatch {
                element,
                found: String::new(),
                expected: expected.to_owned(),
            });
        }
        return Ok(());
    };
    let found = issuer.text_ref();
    let format_ok = issuer.attr("Format").is_none_or(|f| f == FORMAT_ENTITY);
    if found.trim() != expected || !format_ok {
        return Err(SamlError::IssuerMismatch {
            element,
            found: found.into_owned(),
            expected: expected.to_owned(),
        });
    }
    Ok(())
}

/// Response/@Destination, when present, must be the ACS URL.
///
/// A signed Response must carry one (SAML Bindings §3.5.5.2: a signed
/// message on the POST binding names its destination, so that it cannot be
/// posted to another SP that trusts the same IdP).
pub fn check_destination(
    response: Element<'_>,
    acs_url: &str,
    response_signed: bool,
) -> Result<(), SamlError> {
    match response.attr("Destination") {
        Some(d) if d != acs_url => Err(SamlError::DestinationMismatch {
            found: d.to_owned(),
            expected: acs_url.to_owned(),
        }),
        None if response_signed => Err(SamlError::DestinationMismatch {
            found: String::new(),
            expected: acs_url.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// IssueInstant must be neither in the future nor older than the allowed delay.
pub fn check_issue_instant(
    el: Element<'_>,
    element: &'static str,
    w: &TimeWindow,
) -> Result<(), SamlError> {
    let raw = el
        .attr("IssueInstant")
        .ok_or_else(|| SamlError::MalformedXml(format!("{element} has no IssueInstant")))?;
    let t = parse_time(element, raw)?;
    if t > w.now + w.skew {
        return Err(SamlError::NotYetValid {
            element,
            at: raw.to_owned(),
            now: w.now.to_rfc3339(),
            skew_secs: w.skew.num_seconds(),
        });
    }
    if t + w.max_issue_delay + w.skew < w.now {
        return Err(SamlError::Expired {
            element,
            at: (t + w.max_issue_delay).to_rfc3339(),
            now: w.now.to_rfc3339(),
            skew_secs: w.skew.num_seconds(),
        });
    }
    Ok(())
}

/// NotBefore must have passed and NotOnOrAfter not (both with skew).
fn check_window(
    el: Element<'_>,
    element: &'static str,
    w: &TimeWindow,
    require_not_on_or_after: bool,
) -> Result<(), SamlError> {
    if let Some(nb) = el.attr("NotBefore") {
        let t = parse_time(element, nb)?;
        if t > w.now + w.skew {
            return Err(SamlError::NotYetValid {
                element,
                at: nb.to_owned(),
                now: w.now.to_rfc3339(),
                skew_secs: w.skew.num_seconds(),
            });
        }
    }
    match el.attr("NotOnOrAfter") {
        Some(na) => {
            let t = parse_time(element, na)?;
            if t + w.skew <= w.now {
                return Err(SamlError::Expired {
                    element,
                    at: na.to_owned(),
                    now: w.now.to_rfc3339(),
                    skew_secs: w.skew.num_seconds(),
                });
            }
            Ok(())
        }
        None if require_not_on_or_after => Err(SamlError::SubjectConfirmation(format!(
            "{element} has no NotOnOrAfter"
        ))),
        None => Ok(()),
    }
}

/// Conditions: time window, and at least one AudienceRestriction with every
/// one of them naming the SP.
pub fn check_conditions(
    assertion: Element<'_>,
    sp_entity_id: &str,
    w: &TimeWindow,
) -> Result<(), SamlError> {
    let conditions = assertion.child(NS_ASSERTION, "Conditions").ok_or_else(|| {
        SamlError::AudienceMismatch(
            "the assertion has no Conditions (and so no AudienceRestriction)".into(),
        )
    })?;
    check_window(conditions, "Conditions", w, false)?;
    check_audience(conditions, sp_entity_id)
}

/// AudienceRestriction is required; each must contain the SP entity id.
pub fn check_audience(conditions: Element<'_>, sp_entity_id: &str) -> Result<(), SamlError> {
    let restrictions: Vec<Element<'_>> = conditions
        .children_named(NS_ASSERTION, "AudienceRestriction")
        .collect();
    if restrictions.is_empty() {
        return Err(SamlError::AudienceMismatch(
            "the assertion has no AudienceRestriction; one naming this SP is required".into(),
        ));
    }
    for r in restrictions {
        let audiences: Vec<String> = r
            .children_named(NS_ASSERTION, "Audience")
            .map(|a| a.text_ref().trim().to_owned())
            .collect();
        if !audiences.iter().any(|a| a == sp_entity_id) {
            return Err(SamlError::AudienceMismatch(format!(
                "AudienceRestriction names {audiences:?}, not this SP {sp_entity_id:?} ([sp] entity_id)"
            )));
        }
    }
    Ok(())
}

/// The outcome of the subject confirmation check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// InResponseTo of the confirmation that satisfied the profile.
    pub in_response_to: Option<String>,
    /// Its NotOnOrAfter.
    pub not_on_or_after: DateTime<Utc>,
}

/// At least one bearer SubjectConfirmation whose data names the ACS as
/// Recipient, has not expired, carries no NotBefore, and (when it answers a
/// request) names an outstanding request.
pub fn check_subject_confirmation(
    subject: Element<'_>,
    acs_url: &str,
    w: &TimeWindow,
) -> Result<Confirmed, SamlError> {
    let mut first_error: Option<SamlError> = None;
    let mut saw_bearer = false;
    for sc in subject.children_named(NS_ASSERTION, "SubjectConfirmation") {
        if sc.attr("Method") != Some(CM_BEARER) {
            continue;
        }
        saw_bearer = true;
        let result = (|| {
            let data = sc
                .child(NS_ASSERTION, "SubjectConfirmationData")
                .ok_or_else(|| {
                    SamlError::SubjectConfirmation(
                        "bearer SubjectConfirmation has no SubjectConfirmationData".into(),
                    )
                })?;
            let recipient = data.attr("Recipient").unwrap_or("");
            if recipient != acs_url {
                return Err(SamlError::RecipientMismatch {
                    found: recipient.to_owned(),
                    expected: acs_url.to_owned(),
                });
            }
            if data.attr("NotBefore").is_some() {
                return Err(SamlError::SubjectConfirmation(
                    "bearer SubjectConfirmationData must not carry NotBefore".into(),
                ));
            }
            check_window(data, "SubjectConfirmationData", w, true)?;
            let na = data
                .attr("NotOnOrAfter")
                .map(|s| parse_time("SubjectConfirmationData", s))
                .transpose()?
                .unwrap_or(w.now);
            Ok(Confirmed {
                in_response_to: data.attr("InResponseTo").map(str::to_owned),
                not_on_or_after: na,
            })
        })();
        match result {
            Ok(c) => return Ok(c),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    if !saw_bearer {
        return Err(SamlError::SubjectConfirmation(
            "no SubjectConfirmation with Method bearer".into(),
        ));
    }
    Err(first_error
        .unwrap_or_else(|| SamlError::SubjectConfirmation("no usable bearer confirmation".into())))
}

/// The request a response answers, read from signed data only: the signed
/// `SubjectConfirmationData/@InResponseTo`, or the Response's when the
/// Response is signed (both must agree when both are present). An unsigned
/// Response's InResponseTo proves nothing: anyone can write one, and a
/// request id is easy to mint with `GET /saml/login`. It may only repeat
/// the signed value; one that differs from it (or stands alone) is refused.
pub fn signed_in_response_to(
    signed_response_irt: Option<&str>,
    unsigned_response_irt: Option<&str>,
    confirmation_irt: Option<&str>,
) -> Result<Option<String>, SamlError> {
    let signed = match (signed_response_irt, confirmation_irt) {
        (Some(a), Some(b)) if a != b => {
            return Err(SamlError::InResponseToMismatch(format!(
                "Response InResponseTo {a:?} differs from SubjectConfirmationData InResponseTo {b:?}"
            )));
        }
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    if let Some(u) = unsigned_response_irt
        && signed != Some(u)
    {
        return Err(SamlError::InResponseToMismatch(match signed {
            Some(s) => format!(
                "the unsigned Response InResponseTo {u:?} differs from the signed InResponseTo {s:?}"
            ),
            None => format!(
                "the unsigned Response claims InResponseTo {u:?}, but nothing signed names a request (only signed data decides whether a response was solicited)"
            ),
        }));
    }
    Ok(signed.map(str::to_owned))
}

/// A response that answers a request must name an outstanding one; a
/// response that answers none is unsolicited and allowed only when
/// IdP-initiated login is. Returns the request id answered, if any.
pub fn check_solicitation(
    signed_irt: Option<&str>,
    outstanding: &[String],
    allow_idp_initiated: bool,
) -> Result<Option<String>, SamlError> {
    match signed_irt {
        Some(id) => {
            if outstanding.iter().any(|o| o == id) {
                Ok(Some(id.to_owned()))
            } else if outstanding.is_empty() {
                Err(SamlError::InResponseToMismatch(format!(
                    "the response answers request {id:?}, but no request is outstanding"
                )))
            } else {
                Err(SamlError::InResponseToMismatch(format!(
                    "the response answers request {id:?}, which is not an outstanding request"
                )))
            }
        }
        None if allow_idp_initiated => Ok(None),
        None => Err(SamlError::IdpInitiatedRefused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irt_rules() {
        let out = vec!["id-1".to_string()];
        let solicited = |r: Option<&str>, u: Option<&str>, c: Option<&str>| {
            signed_in_response_to(r, u, c).map_err(|e| e.code())
        };
        assert_eq!(solicited(None, None, Some("id-1")), Ok(Some("id-1".into())));
        assert_eq!(solicited(Some("id-1"), None, None), Ok(Some("id-1".into())));
        assert_eq!(
            solicited(Some("id-1"), None, Some("id-2")),
            Err("in_response_to_mismatch")
        );
        // The unsigned Response may repeat the signed value, nothing else.
        assert_eq!(
            solicited(None, Some("id-1"), Some("id-1")),
            Ok(Some("id-1".into()))
        );
        assert_eq!(
            solicited(None, Some("id-1"), None),
            Err("in_response_to_mismatch")
        );
        assert_eq!(
            solicited(None, Some("id-1"), Some("id-2")),
            Err("in_response_to_mismatch")
        );
        assert_eq!(solicited(None, None, None), Ok(None));

        assert_eq!(
            check_solicitation(Some("id-1"), &out, false).unwrap(),
            Some("id-1".into())
        );
        assert_eq!(
            check_solicitation(Some("id-9"), &out, true)
                .unwrap_err()
                .code(),
            "in_response_to_mismatch"
        );
        assert_eq!(
            check_solicitation(Some("id-9"), &[], true)
                .unwrap_err()
                .code(),
            "in_response_to_mismatch"
        );
        assert_eq!(check_solicitation(None, &out, true).unwrap(), None);
        assert_eq!(
            check_solicitation(None, &[], false).unwrap_err(),
            SamlError::IdpInitiatedRefused
        );
    }

    #[test]
    fn times_parse() {
        assert!(parse_time("x", "2026-01-01T00:00:00Z").is_ok());
        assert!(parse_time("x", "2026-01-01T00:00:00.123Z").is_ok());
        assert!(parse_time("x", "2026-01-01T00:00:00").is_ok());
        assert!(parse_time("x", "2026-01-01T01:00:00+01:00").is_ok());
        assert_eq!(
            parse_time("x", "yesterday").unwrap_err().code(),
            "malformed_xml"
        );
    }
}
