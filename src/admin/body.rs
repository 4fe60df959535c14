//! The user API's JSON bodies (`ssoCreate`, `PATCH /users/{email}`) and
//! their validation, apart from any store: the handlers and the
//! `admin_json` fuzz target share them.

use serde::Deserialize;

use crate::mapping::License;
use crate::store::{UserRecord, UserStatus};

/// Longest first or last name (characters).
pub const MAX_NAME: usize = 64;
/// Longest department (characters).
pub const MAX_DEPARTMENT: usize = 256;
/// Most groups on a user.
pub const MAX_GROUPS: usize = 1000;
/// Longest group name (characters), as in a CSV import.
pub const MAX_GROUP: usize = 128;
/// Most features on a user (as SCIM allows).
pub const MAX_FEATURES: usize = crate::scim::user::MAX_FEATURES;
/// Longest feature name (characters).
pub const MAX_FEATURE: usize = 64;

/// A refused body: 400 with a stable code, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    /// Stable code (`invalid_field`, `missing_field`, `invalid_type`, ...).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// The JSON field it is about (dotted).
    pub field: &'static str,
}

fn refuse(code: &'static str, message: impl Into<String>, field: &'static str) -> BodyError {
    BodyError {
        code,
        message: message.into(),
        field,
    }
}

/// `POST /api/v2/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Must be `ssoCreate`.
    pub action: String,
    /// The user.
    pub user_info: Option<UserInfo>,
}

/// `user_info` of an `ssoCreate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    email: Option<String>,
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// `PATCH /api/v2/users/{email}`: each field present is changed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    first_name: Option<String>,
    last_name: Option<String>,
    department: Option<String>,
    groups: Option<Vec<String>>,
    license: Option<String>,
    #[serde(rename = "type")]
    kind: Option<u8>,
    features: Option<Vec<String>>,
    status: Option<String>,
    sso_only: Option<bool>,
}

/// The user an `ssoCreate` asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Canonical email.
    pub email: String,
    /// From `type` 1, 2 or 3.
    pub license: License,
    /// Trimmed.
    pub first_name: String,
    /// Trimmed.
    pub last_name: String,
}

/// The platform's user types: 1 basic, 2 licensed, 3 on-prem (a number or
/// a string of one).
fn license_of_type(v: &serde_json::Value) -> Option<License> {
    match v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))?
    {
        1 => Some(License::Basic),
        2 => Some(License::Licensed),
        3 => Some(License::OnPrem),
        _ => None,
    }
}

/// A name: trimmed, at most [`MAX_NAME`] characters, no control
/// characters.
fn name(v: Option<&str>, field: &'static str) -> Result<String, BodyError> {
    let s = v.unwrap_or("").trim().to_owned();
    text_ok(&s, MAX_NAME, field)?;
    Ok(s)
}

fn text_ok(s: &str, max: usize, field: &'static str) -> Result<(), BodyError> {
    if s.chars().count() > max {
        Err(refuse(
            "invalid_field",
            format!("{field} is longer than {max} characters"),
            field,
        ))
    } else if s.chars().any(char::is_control) {
        Err(refuse(
            "invalid_field",
            format!("{field} contains control characters"),
            field,
        ))
    } else {
        Ok(())
    }
}

/// A list of non-empty names, at most `most` of them, each at most `max`
/// characters without control characters.
fn names(
    list: Vec<String>,
    most: usize,
    max: usize,
    field: &'static str,
) -> Result<Vec<String>, BodyError> {
    if list.len() > most {
        return Err(refuse(
            "invalid_field",
            format!("{field} has more than {most} entries"),
            field,
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let t = v.trim();
        if t.is_empty() {
            return Err(refuse(
                "invalid_field",
                format!("{field} has an empty entry"),
                field,
            ));
        }
        text_ok(t, max, field)?;
        if !out.iter().any(|o: &String| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// Checks an `ssoCreate`'s `user_info` (the action and the account's mode
/// are the handler's).
pub fn new_user(req: CreateRequest, allow_international: bool) -> Result<NewUser, BodyError> {
    let Some(info) = req.user_info else {
        return Err(refuse(
            "missing_field",
            "user_info is required",
            "user_info",
        ));
    };
    let raw_email = info.email.as_deref().unwrap_or("");
    if crate::email::trim_xml_space(raw_email).is_empty() {
        return Err(refuse(
            "missing_field",
            "user_info.email is required",
            "user_info.email",
        ));
    }
    let email = crate::email::canonical(raw_email, allow_international)
        .map_err(|e| refuse(e.code(), format!("user_info.email: {e}"), "user_info.email"))?;
    let Some(license) = info.kind.as_ref().and_then(license_of_type) else {
        return Err(refuse(
            "invalid_type",
            "user_info.type must be 1 (basic), 2 (licensed) or 3 (on_prem)",
            "user_info.type",
        ));
    };
    Ok(NewUser {
        email,
        license,
        first_name: name(info.first_name.as_deref(), "user_info.first_name")?,
        last_name: name(info.last_name.as_deref(), "user_info.last_name")?,
    })
}

/// Applies a PATCH to `user`; on an error `user` may be partly changed
/// (the handler then writes nothing).
pub fn apply_patch(p: PatchRequest, user: &mut UserRecord) -> Result<(), BodyError> {
    if p.first_name.is_some() {
        user.first_name = name(p.first_name.as_deref(), "first_name")?;
    }
    if p.last_name.is_some() {
        user.last_name = name(p.last_name.as_deref(), "last_name")?;
    }
    if let Some(d) = p.department {
        let d = d.trim();
        text_ok(d, MAX_DEPARTMENT, "department")?;
        d.clone_into(&mut user.department);
    }
    if let Some(g) = p.groups {
        user.groups = names(g, MAX_GROUPS, MAX_GROUP, "groups")?;
    }
    if let Some(f) = p.features {
        user.features = names(f, MAX_FEATURES, MAX_FEATURE, "features")?;
    }
    if let Some(s) = p.sso_only {
        user.sso_only = s;
    }
    if let Some(l) = p.license {
        user.license = License::parse(&l).ok_or_else(|| {
            refuse(
                "invalid_license",
                "license must be basic, licensed or on_prem",
                "license",
            )
        })?;
    }
    if let Some(t) = p.kind {
        user.license = license_of_type(&serde_json::Value::from(t))
            .ok_or_else(|| refuse("invalid_type", "type must be 1, 2 or 3", "type"))?;
    }
    if let Some(s) = p.status {
        user.status = match s.as_str() {
            "active" => UserStatus::Active,
            "deactivated" => UserStatus::Deactivated,
            "pending_verification" => UserStatus::PendingVerification,
            _ => {
                return Err(refuse(
                    "invalid_status",
                    "status must be active, deactivated or pending_verification",
                    "status",
                ));
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserRecord {
        UserRecord {
            email: "bob@example.com".into(),
            account: "default".into(),
            first_name: String::new(),
            last_name: String::new(),
            department: String::new(),
            groups: Vec::new(),
            license: License::Basic,
            features: Vec::new(),
            sso_only: true,
            status: UserStatus::Active,
            vanity: None,
            source: crate::store::UserSource::Api,
            created_at: String::new(),
            updated_at: String::new(),
            scim: None,
        }
    }

    fn patch(json: &str) -> Result<UserRecord, BodyError> {
        let mut u = user();
        apply_patch(serde_json::from_str(json).unwrap(), &mut u).map(|()| u)
    }

    #[test]
    fn patch_bounds_every_list_and_text() {
        let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        let e = patch(&serde_json::json!({ "groups": many }).to_string()).unwrap_err();
        assert_eq!((e.code, e.field), ("invalid_field", "groups"));
        let e = patch(&serde_json::json!({ "features": vec!["f"; MAX_FEATURES + 1] }).to_string())
            .unwrap_err();
        assert_eq!(e.field, "features");
        let e =
            patch(&serde_json::json!({ "department": "d".repeat(MAX_DEPARTMENT + 1) }).to_string())
                .unwrap_err();
        assert_eq!(e.field, "department");
        let e = patch(r#"{"groups": ["ok", " "]}"#).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e = patch(r#"{"department": "a\u0007b"}"#).unwrap_err();
        assert!(e.message.contains("control"), "{e}");
        let u = patch(r#"{"groups": [" Sales ", "Sales", "Ops"], "department": " R&D "}"#).unwrap();
        assert_eq!(u.groups, ["Sales", "Ops"]);
        assert_eq!(u.department, "R&D");
    }

    #[test]
    fn create_checks_user_info() {
        let c = |j: &str| new_user(serde_json::from_str(j).unwrap(), false);
        let ok = c(r#"{"action":"ssoCreate","user_info":{"email":" Bob@Example.com ","type":"2","first_name":" Bob "}}"#).unwrap();
        assert_eq!(
            (ok.email.as_str(), ok.license, ok.first_name.as_str()),
            ("bob@example.com", License::Licensed, "Bob")
        );
        assert_eq!(
            c(r#"{"action":"ssoCreate"}"#).unwrap_err().field,
            "user_info"
        );
        assert_eq!(
            c(r#"{"action":"ssoCreate","user_info":{"email":"b@e.com","type":4}}"#)
                .unwrap_err()
                .code,
            "invalid_type"
        );
        assert_eq!(
            c(r#"{"action":"ssoCreate","user_info":{"email":"  "}}"#)
                .unwrap_err()
                .code,
            "missing_field"
        );
    }
}
