//! The SCIM `User` resource: a platform user ([`UserRecord`]) rendered as
//! SCIM JSON, a SCIM body read back into the fields the platform keeps,
//! and PATCH operations applied to the JSON form.

use serde_json::{Map, Value, json};

use super::ScimError;
use super::filter::{self, AttrPath, PatchPath, get_ci};
use crate::mapping::License;
use crate::store::{ScimEmail, UserRecord, UserStatus};

/// The core User schema.
pub const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The enterprise extension (`department`).
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// samlgate's extension (`license`, `features`, `status`).
pub const OURS: &str = "urn:samlgate:params:scim:schemas:extension:2.0:User";

/// Most `emails` entries on a user.
pub const MAX_EMAILS: usize = 10;
/// Most `features` on a user.
pub const MAX_FEATURES: usize = 32;
/// Longest `displayName`, `externalId`, `department`, email type or
/// feature, in characters.
pub const MAX_TEXT: usize = 256;
/// Longest given or family name, in characters (as the admin API).
pub const MAX_NAME: usize = 64;

/// The SCIM id of a user that has none stored yet: derived from what
/// never changes for a record (account, email and creation time), so every
/// replica that first shows the user agrees on it.
pub fn derived_id(user: &UserRecord) -> String {
    let d = openssl::sha::sha256(
        format!(
            "samlgate-scim-user\0{}\0{}\0{}",
            user.account, user.email, user.created_at
        )
        .as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
    super::uuid_form(&b)
}

/// The user's SCIM id (stored, or derived).
pub fn id_of(user: &UserRecord) -> String {
    match &user.scim {
        Some(s) if !s.id.is_empty() => s.id.clone(),
        _ => derived_id(user),
    }
}

/// `meta.version`: a weak ETag over the whole stored record.
pub fn version(user: &UserRecord) -> String {
    super::weak_etag(&serde_json::to_vec(user).unwrap_or_default())
}

fn status_str(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::PendingVerification => "pending_verification",
        UserStatus::Deactivated => "deactivated",
    }
}

/// The user as a SCIM resource. `groups` are the `{value, display, $ref}`
/// of the SCIM groups it is a member of.
pub fn render(user: &UserRecord, base: &str, groups: Vec<Value>) -> Value {
    let id = id_of(user);
    let scim = user.scim.clone().unwrap_or_default();
    let mut o = Map::new();
    o.insert("schemas".into(), json!([CORE, ENTERPRISE, OURS]));
    o.insert("id".into(), json!(id));
    if let Some(x) = &scim.external_id {
        o.insert("externalId".into(), json!(x));
    }
    o.insert("userName".into(), json!(user.email));
    let formatted = format!("{} {}", user.first_name, user.last_name)
        .trim()
        .to_owned();
    let mut name = Map::new();
    if !user.first_name.is_empty() {
        name.insert("givenName".into(), json!(user.first_name));
    }
    if !user.last_name.is_empty() {
        name.insert("familyName".into(), json!(user.last_name));
    }
    if !formatted.is_empty() {
        name.insert("formatted".into(), json!(formatted));
    }
    if !name.is_empty() {
        o.insert("name".into(), Value::Object(name));
    }
    match (&scim.display_name, formatted.is_empty()) {
        (Some(d), _) => {
            o.insert("displayName".into(), json!(d));
        }
        (None, false) => {
            o.insert("displayName".into(), json!(formatted));
        }
        _ => {}
    }
    let emails = if scim.emails.is_empty() {
        json!([{"value": user.email, "type": "work", "primary": true}])
    } else {
        serde_json::to_value(&scim.emails).unwrap_or_else(|_| json!([]))
    };
    o.insert("emails".into(), emails);
    o.insert(
        "active".into(),
        json!(user.status != UserStatus::Deactivated),
    );
    if !groups.is_empty() {
        o.insert("groups".into(), Value::Array(groups));
    }
    o.insert(ENTERPRISE.into(), json!({"department": user.department}));
    let mut ours = json!({
        "license": user.license.as_str(),
        "features": user.features,
        "status": status_str(user.status),
        "ssoOnly": user.sso_only,
        "source": user.source,
    });
    if let (Some(v), Some(m)) = (&user.vanity, ours.as_object_mut()) {
        m.insert("vanityName".into(), json!(v));
    }
    o.insert(OURS.into(), ours);
    o.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": user.created_at,
            "lastModified": user.updated_at,
            "location": format!("{base}/Users/{id}"),
            "version": version(user),
        }),
    );
    Value::Object(o)
}

/// What a SCIM body says about a user, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserInput {
    /// `userName` as sent (canonicalised by the caller).
    pub user_name: String,
    /// `name.givenName`.
    pub given: String,
    /// `name.familyName`.
    pub family: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `externalId`.
    pub external_id: Option<String>,
    /// `emails`.
    pub emails: Vec<ScimEmail>,
    /// `active` (absent: unchanged, or active on create).
    pub active: Option<bool>,
    /// The enterprise extension's `department`.
    pub department: String,
    /// Our extension's `license` (absent: unchanged, or the account's
    /// default on create).
    pub license: Option<License>,
    /// Our extension's `features` (absent: unchanged).
    pub features: Option<Vec<String>>,
    /// `id`, if the body carried one.
    pub id: Option<String>,
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad("invalidValue", detail)
}

/// A string attribute: absent or null is `None`; any other type, an
/// overlong value or control characters are `invalidValue`.
fn text(v: Option<&Value>, what: &str, max: usize) -> Result<Option<String>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > max {
                Err(invalid(format!("{what} is longer than {max} characters")))
            } else if s.chars().any(char::is_control) {
                Err(invalid(format!("{what} contains control characters")))
            } else {
                Ok(Some(s.to_owned()))
            }
        }
        Some(_) => Err(invalid(format!("{what} must be a string"))),
    }
}

/// A boolean, also as the strings `"True"`/`"False"` (any case) that
/// Entra ID sends.
pub fn boolean(v: Option<&Value>, what: &str) -> Result<Option<bool>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(invalid(format!("{what} must be true or false"))),
    }
}

/// Reads a User body (POST, PUT, or the result of a PATCH).
pub fn read(body: &Value) -> Result<UserInput, ScimError> {
    if !body.is_object() {
        return Err(ScimError::bad(
            "invalidSyntax",
            "the body must be a JSON object",
        ));
    }
    let user_name = text(get_ci(body, "userName"), "userName", 320)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("userName is required"))?;
    let name = get_ci(body, "name");
    if name.is_some_and(|n| !n.is_object() && !n.is_null()) {
        return Err(invalid("name must be an object"));
    }
    let given = text(
        name.and_then(|n| get_ci(n, "givenName")),
        "name.givenName",
        MAX_NAME,
    )?
    .unwrap_or_default();
    let family = text(
        name.and_then(|n| get_ci(n, "familyName")),
        "name.familyName",
        MAX_NAME,
    )?
    .unwrap_or_default();
    let display_name =
        text(get_ci(body, "displayName"), "displayName", MAX_TEXT)?.filter(|s| !s.is_empty());
    let external_id =
        text(get_ci(body, "externalId"), "externalId", MAX_TEXT)?.filter(|s| !s.is_empty());
    let id = match get_ci(body, "id") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let emails = match get_ci(body, "emails") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            if a.len() > MAX_EMAILS {
                return Err(invalid(format!("more than {MAX_EMAILS} emails")));
            }
            let mut out = Vec::with_capacity(a.len());
            for (i, e) in a.iter().enumerate() {
                let value = text(get_ci(e, "value"), &format!("emails[{i}].value"), 320)?
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid(format!("emails[{i}].value is required")))?;
                out.push(ScimEmail {
                    value,
                    kind: text(get_ci(e, "type"), &format!("emails[{i}].type"), MAX_TEXT)?,
                    primary: boolean(get_ci(e, "primary"), &format!("emails[{i}].primary"))?
                        .unwrap_or(false),
                });
            }
            out
        }
        Some(_) => return Err(invalid("emails must be an array")),
    };
    let active = boolean(get_ci(body, "active"), "active")?;
    let department = text(
        get_ci(body, ENTERPRISE).and_then(|e| get_ci(e, "department")),
        "department",
        MAX_TEXT,
    )?
    .unwrap_or_default();
    let ours = get_ci(body, OURS);
    let license = match ours.and_then(|o| get_ci(o, "license")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            License::parse(&s.to_ascii_lowercase())
                .ok_or_else(|| invalid("license must be basic, licensed or on_prem"))?,
        ),
        Some(_) => return Err(invalid("license must be a string")),
    };
    let features = match ours.and_then(|o| get_ci(o, "features")) {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            if a.len() > MAX_FEATURES {
                return Err(invalid(format!("more than {MAX_FEATURES} features")));
            }
            let mut out = Vec::with_capacity(a.len());
            for f in a {
                match text(Some(f), "features[]", 64)? {
                    Some(s) if !s.is_empty() => out.push(s),
                    _ => return Err(invalid("features must be non-empty strings")),
                }
            }
            Some(out)
        }
        Some(_) => return Err(invalid("features must be an array of strings")),
    };
    Ok(UserInput {
        user_name,
        given,
        family,
        display_name,
        external_id,
        emails,
        active,
        department,
        license,
        features,
        id,
    })
}

/// Attributes a client may not change (`mutability`); changes to them in a
/// PATCH are refused, in a PUT ignored unless they differ (`id`).
const READ_ONLY: &[&str] = &["id", "meta", "groups", "schemas"];

/// The canonical spelling of a known attribute (SCIM names are
/// case-insensitive; the JSON form keeps one spelling).
fn canonical(name: &str) -> String {
    const KNOWN: &[&str] = &[
        "id",
        "externalId",
        "userName",
        "name",
        "givenName",
        "familyName",
        "formatted",
        "displayName",
        "emails",
        "value",
        "type",
        "primary",
        "active",
        "groups",
        "meta",
        "schemas",
        "department",
        "license",
        "features",
        "members",
        "display",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

/// The schema URN a path names, in its canonical spelling.
fn canonical_schema(s: &str) -> Option<&'static str> {
    [CORE, ENTERPRISE, OURS]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(s))
}

/// The object a path's attribute lives in (the resource, or an extension
/// object, created when absent).
fn container<'v>(
    resource: &'v mut Value,
    attr: &AttrPath,
) -> Result<&'v mut Map<String, Value>, ScimError> {
    let ext = match attr.schema.as_deref() {
        None => None,
        Some(s) => match canonical_schema(s) {
            Some(CORE) => None,
            Some(k) => Some(k),
            None => return Err(ScimError::bad("invalidPath", format!("unknown schema {s}"))),
        },
    };
    // An extension attribute named without its schema.
    let ext = ext.or_else(|| {
        let n = attr.name.to_ascii_lowercase();
        if n == "department" {
            Some(ENTERPRISE)
        } else if n == "license" || n == "features" {
            Some(OURS)
        } else {
            None
        }
    });
    let root = resource
        .as_object_mut()
        .ok_or_else(|| ScimError::bad("invalidSyntax", "not an object"))?;
    match ext {
        None => Ok(root),
        Some(k) => {
            let e = root.entry(k).or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            e.as_object_mut()
                .ok_or_else(|| ScimError::bad("invalidSyntax", "not an object"))
        }
    }
}

/// PATCH operation kinds (`op`, case-insensitive: Entra ID sends `Add`,
/// `Replace`, `Remove`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    /// add
    Add,
    /// replace
    Replace,
    /// remove
    Remove,
}

impl PatchOp {
    /// Parses an `op`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "add" => Some(Self::Add),
            "replace" => Some(Self::Replace),
            "remove" => Some(Self::Remove),
            _ => None,
        }
    }
}

/// Most operations in one PATCH.
pub const MAX_OPERATIONS: usize = 1000;

/// Applies the `Operations` of a PATCH body to `resource` (a rendered
/// resource). `multi` lists the resource's multi-valued attributes.
pub fn apply_patch(resource: &mut Value, body: &Value, multi: &[&str]) -> Result<(), ScimError> {
    let ops = match get_ci(body, "Operations") {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(ScimError::bad(
                "invalidSyntax",
                "Operations must be an array",
            ));
        }
    };
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::bad(
            "invalidSyntax",
            format!("more than {MAX_OPERATIONS} operations"),
        ));
    }
    for (i, o) in ops.iter().enumerate() {
        let op = get_ci(o, "op")
            .and_then(Value::as_str)
            .and_then(PatchOp::parse)
            .ok_or_else(|| {
                ScimError::bad(
                    "invalidSyntax",
                    format!("Operations[{i}].op must be add, replace or remove"),
                )
            })?;
        let value = get_ci(o, "value").cloned();
        match get_ci(o, "path")
            .and_then(Value::as_str)
            .filter(|p| !p.trim().is_empty())
        {
            Some(p) => {
                let path = filter::parse_path(p)
                    .map_err(|e| ScimError::bad("invalidPath", format!("{p}: {e}")))?;
                apply_at(resource, op, &path, value, multi)?;
            }
            None => {
                if op == PatchOp::Remove {
                    return Err(ScimError::bad(
                        "noTarget",
                        format!("Operations[{i}]: remove needs a path"),
                    ));
                }
                let Some(Value::Object(fields)) = value else {
                    return Err(ScimError::bad(
                        "invalidValue",
                        format!("Operations[{i}]: without a path, value must be an object"),
                    ));
                };
                for (k, v) in fields {
                    // An extension object: each of its attributes.
                    if let Some(schema) = canonical_schema(&k).filter(|s| *s != CORE)
                        && let Value::Object(inner) = &v
                    {
                        for (ik, iv) in inner {
                            let path = filter::parse_path(&format!("{schema}:{ik}"))
                                .map_err(|e| ScimError::bad("invalidPath", e.0))?;
                            apply_at(resource, op, &path, Some(iv.clone()), multi)?;
                        }
                        continue;
                    }
                    // A key may be a path itself (Entra ID sends
                    // `"name.givenName"` and URN-qualified keys).
                    let path = filter::parse_path(&k)
                        .map_err(|e| ScimError::bad("invalidPath", format!("{k}: {e}")))?;
                    apply_at(resource, op, &path, Some(v), multi)?;
                }
            }
        }
    }
    Ok(())
}

/// What identifies an element of a multi-valued attribute: its `value`
/// (members, emails), else the whole element.
fn element_key(e: &Value) -> String {
    match get_ci(e, "value").unwrap_or(e) {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_multi(name: &str, multi: &[&str]) -> bool {
    multi.iter().any(|m| m.eq_ignore_ascii_case(name))
}

fn apply_at(
    resource: &mut Value,
    op: PatchOp,
    path: &PatchPath,
    value: Option<Value>,
    multi: &[&str],
) -> Result<(), ScimError> {
    let name = canonical(&path.attr.name);
    if READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(&name)) && path.attr.schema.is_none() {
        // Okta's group rename carries the unchanged `id` beside the new
        // name: a read-only attribute set to what it is changes nothing.
        let unchanged = path.filter.is_none()
            && path.attr.sub.is_none()
            && op != PatchOp::Remove
            && value.is_some()
            && resource.get(&name) == value.as_ref();
        if unchanged {
            return Ok(());
        }
        return Err(ScimError::bad("mutability", format!("{name} is read-only")));
    }
    if op != PatchOp::Remove && value.is_none() {
        return Err(ScimError::bad(
            "invalidValue",
            format!("{name}: value is required"),
        ));
    }
    let obj = container(resource, &path.attr)?;
    match (&path.filter, &path.attr.sub) {
        // `name.givenName`
        (None, Some(sub)) => {
            let sub = canonical(sub);
            let parent = obj.entry(name).or_insert_with(|| json!({}));
            if !parent.is_object() {
                *parent = json!({});
            }
            if let Some(p) = parent.as_object_mut() {
                match op {
                    PatchOp::Remove => {
                        p.remove(&sub);
                    }
                    _ => {
                        p.insert(sub, value.unwrap_or(Value::Null));
                    }
                }
            }
        }
        // `emails`, `active`, `displayName`
        (None, None) => match op {
            // Entra ID removes group members with `path: members` and the
            // members to remove as the value (RFC 7644 would remove all).
            PatchOp::Remove
                if is_multi(&name, multi) && value.as_ref().is_some_and(Value::is_array) =>
            {
                let gone: std::collections::HashSet<String> = match value {
                    Some(Value::Array(a)) => a.iter().map(element_key).collect(),
                    _ => Default::default(),
                };
                if let Some(Value::Array(arr)) = obj.get_mut(&name) {
                    arr.retain(|e| !gone.contains(&element_key(e)));
                }
            }
            PatchOp::Remove => {
                obj.remove(&name);
            }
            PatchOp::Add if is_multi(&name, multi) => {
                let add = match value {
                    Some(Value::Array(a)) => a,
                    Some(v) => vec![v],
                    None => Vec::new(),
                };
                let cur = obj.entry(name).or_insert_with(|| json!([]));
                if !cur.is_array() {
                    *cur = json!([]);
                }
                if let Some(arr) = cur.as_array_mut() {
                    let mut have: std::collections::HashSet<String> =
                        arr.iter().map(element_key).collect();
                    for v in add {
                        if have.insert(element_key(&v)) {
                            arr.push(v);
                        }
                    }
                }
            }
            PatchOp::Add | PatchOp::Replace => {
                let v = value.unwrap_or(Value::Null);
                // `add` of an object merges into the object there.
                if op == PatchOp::Add
                    && let (Value::Object(new), Some(Value::Object(cur))) = (&v, obj.get_mut(&name))
                {
                    for (k, x) in new {
                        cur.insert(canonical(k), x.clone());
                    }
                } else {
                    obj.insert(name, v);
                }
            }
        },
        // `emails[type eq "work"]` and `emails[type eq "work"].value`
        (Some(f), _) => {
            let sub = path.sub.as_ref().map(|s| canonical(s));
            let cur = obj.entry(name.clone()).or_insert_with(|| json!([]));
            if !cur.is_array() {
                *cur = json!([]);
            }
            let Some(arr) = cur.as_array_mut() else {
                return Ok(());
            };
            let hit: Vec<usize> = arr
                .iter()
                .enumerate()
                .filter(|(_, e)| filter::matches(f, e))
                .map(|(i, _)| i)
                .collect();
            match op {
                PatchOp::Remove => match &sub {
                    None => {
                        let hit: std::collections::HashSet<usize> = hit.iter().copied().collect();
                        let mut i = 0;
                        arr.retain(|_| {
                            let keep = !hit.contains(&i);
                            i += 1;
                            keep
                        });
                    }
                    Some(s) => {
                        for &i in &hit {
                            if let Some(Value::Object(e)) = arr.get_mut(i) {
                                e.remove(s);
                            }
                        }
                    }
                },
                PatchOp::Add | PatchOp::Replace => {
                    let v = value.unwrap_or(Value::Null);
                    if hit.is_empty() {
                        // No element matches: one is made from the
                        // filter's equalities (`type eq "work"`) and the
                        // value (what Entra ID expects of a first work
                        // email).
                        let mut e = Map::new();
                        seed(f, &mut e);
                        match (&sub, v.clone()) {
                            (Some(s), v) => {
                                e.insert(s.clone(), v);
                            }
                            (None, Value::Object(o)) => {
                                for (k, x) in o {
                                    e.insert(canonical(&k), x);
                                }
                            }
                            (None, other) => {
                                e.insert("value".into(), other);
                            }
                        }
                        arr.push(Value::Object(e));
                    }
                    for &i in &hit {
                        if let Some(Value::Object(e)) = arr.get_mut(i) {
                            match (&sub, &v) {
                                (Some(s), v) => {
                                    e.insert(s.clone(), v.clone());
                                }
                                (None, Value::Object(o)) => {
                                    if op == PatchOp::Replace {
                                        e.clear();
                                    }
                                    for (k, x) in o {
                                        e.insert(canonical(k), x.clone());
                                    }
                                }
                                (None, other) => {
                                    e.insert("value".into(), other.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The `attr eq "v"` parts of a value filter, as fields of a new element.
fn seed(f: &filter::Filter, into: &mut Map<String, Value>) {
    match f {
        filter::Filter::Compare(p, filter::Op::Eq, v) if p.sub.is_none() => {
            into.insert(canonical(&p.name), v.clone());
        }
        filter::Filter::And(a, b) => {
            seed(a, into);
            seed(b, into);
        }
        _ => {}
    }
}

/// `attributes` / `excludedAttributes` of a response (RFC 7644 §3.9):
/// `id` and `schemas` are always returned.
pub fn project(resource: Value, attributes: &[String], excluded: &[String]) -> Value {
    let Value::Object(mut o) = resource else {
        return resource;
    };
    let always = |k: &str| k == "id" || k == "schemas";
    if !attributes.is_empty() {
        let wanted = |k: &str| {
            attributes.iter().any(|a| {
                let a = a
                    .rsplit_once(':')
                    .filter(|_| a.starts_with("urn:"))
                    .map_or(a.as_str(), |(_, x)| x);
                a.split('.')
                    .next()
                    .is_some_and(|h| h.eq_ignore_ascii_case(k))
            })
        };
        o.retain(|k, v| {
            if always(k) || wanted(k) {
                return true;
            }
            // An extension object: keep the attributes asked for.
            if k.starts_with("urn:")
                && let Value::Object(inner) = v
            {
                inner.retain(|ik, _| {
                    attributes
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(&format!("{k}:{ik}")))
                });
                return !inner.is_empty();
            }
            false
        });
        // `name.givenName`: only that sub-attribute.
        for a in attributes {
            if let Some((head, sub)) = a.split_once('.')
                && !a.starts_with("urn:")
                && let Some(Value::Object(inner)) = o
                    .iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case(head))
                    .map(|(_, v)| v)
            {
                let subs: Vec<&str> = attributes
                    .iter()
                    .filter_map(|x| x.split_once('.'))
                    .filter(|(h, _)| h.eq_ignore_ascii_case(head))
                    .map(|(_, s)| s)
                    .collect();
                let _ = sub;
                inner.retain(|ik, _| subs.iter().any(|s| s.eq_ignore_ascii_case(ik)));
            }
        }
    }
    for x in excluded {
        let (ext, name) = match x.rsplit_once(':').filter(|_| x.starts_with("urn:")) {
            Some((e, n)) => (Some(e), n),
            None => (None, x.as_str()),
        };
        let (head, sub) = match name.split_once('.') {
            Some((h, s)) => (h, Some(s)),
            None => (name, None),
        };
        if always(head) {
            continue;
        }
        let target = match ext {
            Some(e) => o
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(e))
                .and_then(|(_, v)| v.as_object_mut()),
            None => Some(&mut o),
        };
        let Some(t) = target else { continue };
        match sub {
            None => t.retain(|k, _| !k.eq_ignore_ascii_case(head)),
            Some(s) => {
                if let Some(Value::Object(inner)) = t
                    .iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case(head))
                    .map(|(_, v)| v)
                {
                    inner.retain(|k, _| !k.eq_ignore_ascii_case(s));
                }
            }
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserSource;

    fn record() -> UserRecord {
        UserRecord {
            email: "bob@acme.example".into(),
            account: "acme".into(),
            first_name: "Bob".into(),
            last_name: "Smith".into(),
            department: "Sales".into(),
            groups: vec![],
            license: License::Basic,
            features: vec![],
            sso_only: true,
            status: UserStatus::Active,
            vanity: None,
            source: UserSource::Scim,
            created_at: "2026-01-01T00:00:00+00:00".into(),
            updated_at: "2026-01-01T00:00:00+00:00".into(),
            scim: None,
        }
    }

    fn patched(ops: Value) -> Result<UserInput, ScimError> {
        let mut r = render(&record(), "https://h/scim/v2", vec![]);
        apply_patch(&mut r, &json!({ "Operations": ops }), &["emails"])?;
        read(&r)
    }

    #[test]
    fn render_reads_back() {
        let r = render(&record(), "https://h/scim/v2", vec![]);
        let i = read(&r).unwrap();
        assert_eq!(i.user_name, "bob@acme.example");
        assert_eq!((i.given.as_str(), i.family.as_str()), ("Bob", "Smith"));
        assert_eq!(i.department, "Sales");
        assert_eq!(i.active, Some(true));
        assert_eq!(i.license, Some(License::Basic));
        assert_eq!(
            r["meta"]["location"],
            format!("https://h/scim/v2/Users/{}", derived_id(&record()))
        );
    }

    #[test]
    fn patch_ops_with_and_without_path() {
        let i = patched(json!([{"op": "Replace", "path": "active", "value": "False"}])).unwrap();
        assert_eq!(i.active, Some(false));
        let i = patched(json!([{"op": "replace", "value": {"active": false}}])).unwrap();
        assert_eq!(i.active, Some(false));
        let i = patched(json!([{"op": "Add", "value": {"name.givenName": "Robert", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops"}}])).unwrap();
        assert_eq!((i.given.as_str(), i.department.as_str()), ("Robert", "Ops"));
        let i = patched(json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@acme.example"}])).unwrap();
        assert_eq!(i.emails[0].value, "b@acme.example");
        assert_eq!(i.emails.len(), 1);
        let i = patched(json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "b@home.example"}])).unwrap();
        assert_eq!(i.emails.len(), 2);
        assert_eq!(i.emails[1].kind.as_deref(), Some("home"));
        let i = patched(json!([{"op": "remove", "path": "emails[type eq \"work\"]"}])).unwrap();
        assert!(i.emails.is_empty());
        let i = patched(json!([{"op": "remove", "path": "name.familyName"}])).unwrap();
        assert_eq!(i.family, "");
        let i = patched(json!([{"op": "replace", "path": "urn:samlgate:params:scim:schemas:extension:2.0:User:license", "value": "licensed"}])).unwrap();
        assert_eq!(i.license, Some(License::Licensed));
        let i = patched(json!([{"op": "replace", "value": {"urn:samlgate:params:scim:schemas:extension:2.0:User": {"features": ["recording"]}}}])).unwrap();
        assert_eq!(i.features, Some(vec!["recording".to_owned()]));
        let i = patched(json!([{"op": "add", "path": "emails", "value": [{"value": "x@y.example", "type": "other"}]}])).unwrap();
        assert_eq!(i.emails.len(), 2);
    }

    #[test]
    fn patch_refusals() {
        let e = patched(json!([{"op": "replace", "path": "id", "value": "x"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("mutability"));
        let e = patched(json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e =
            patched(json!([{"op": "frobnicate", "path": "active", "value": true}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidSyntax"));
        let e = patched(json!([{"op": "replace", "path": "emails[type eq", "value": "x"}]))
            .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        let e =
            patched(json!([{"op": "replace", "path": "active", "value": "maybe"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"));
        let e = patched(json!([{"op": "replace", "path": "userName", "value": null}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"));
    }

    #[test]
    fn projection() {
        let r = render(&record(), "https://h/scim/v2", vec![]);
        let p = project(
            r.clone(),
            &["userName".into(), "name.givenName".into()],
            &[],
        );
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert!(keys.iter().any(|k| *k == "userName") && keys.iter().any(|k| *k == "id"));
        assert!(!keys.iter().any(|k| *k == "emails"));
        assert_eq!(p["name"], json!({"givenName": "Bob"}));
        let p = project(r, &[], &["emails".into(), "id".into()]);
        assert!(p.get("emails").is_none() && p.get("id").is_some());
    }
}
