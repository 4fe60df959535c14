//! Account documents: the JSON (or, on the command line, TOML) form of an
//! account, with the config file's keys (DESIGN.md, *Accounts*).
//!
//! A document is checked whole: every unknown key, wrong type and invalid
//! value is reported at once, each naming its key (`mapping.rules[1].regex`),
//! and a document with any problem is refused without a trace (nothing is
//! half applied). [`build`] turns a checked document into an [`Account`].
//!
//! Stored, a document travels in a [`Record`] with what the gateway keeps
//! beside it: the last good copy of metadata fetched from `idp.metadata_url`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse::{self, ConfigProblem, Problems};
use super::raw::RawMapping;
use super::{Account, AccountStatus, Idp, Sp};
use crate::config::Security;
use crate::saml::metadata::IdpMetadata;

/// Most hosts one account lists.
pub const MAX_HOSTS: usize = 100;
/// Largest document accepted (inline metadata included).
pub const MAX_DOC_BYTES: usize = 1024 * 1024;

/// What the store keeps for one account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The document as accepted.
    pub doc: Value,
    /// The last good metadata fetched from `idp.metadata_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_cache: Option<String>,
}

/// The expected shape of a document's values.
enum Shape {
    Str,
    Bool,
    Int,
    Strs,
    Obj(&'static [(&'static str, Shape)]),
    /// A list of objects of this shape.
    List(&'static [(&'static str, Shape)]),
    /// A mapping field's transforms: names or `{split}`/`{regex}` tables.
    Transforms,
}

const FIELD: &[(&str, Shape)] = &[
    ("from", Shape::Strs),
    ("transforms", Shape::Transforms),
    ("default", Shape::Str),
];

const RULE: &[(&str, Shape)] = &[
    ("name", Shape::Str),
    ("attribute", Shape::Str),
    ("equals", Shape::Str),
    ("contains", Shape::Str),
    ("regex", Shape::Str),
    ("present", Shape::Bool),
    ("negate", Shape::Bool),
    ("ignore_case", Shape::Bool),
    ("license", Shape::Str),
    ("groups", Shape::Strs),
    ("features", Shape::Strs),
    ("role", Shape::Str),
];

const DOC: &[(&str, Shape)] = &[
    ("id", Shape::Str),
    ("name", Shape::Str),
    ("hosts", Shape::Strs),
    ("status", Shape::Str),
    (
        "sp",
        Shape::Obj(&[
            ("entity_id", Shape::Str),
            ("acs_url", Shape::Str),
            ("request_ttl_secs", Shape::Int),
            ("require_request_cookie", Shape::Bool),
            ("key_file", Shape::Str),
            ("cert_file", Shape::Str),
            ("sign_authn_requests", Shape::Bool),
        ]),
    ),
    (
        "idp",
        Shape::Obj(&[
            ("metadata_xml", Shape::Str),
            ("metadata_url", Shape::Str),
            ("entity_id", Shape::Str),
            ("allow_idp_initiated", Shape::Bool),
            ("metadata_refresh_secs", Shape::Int),
        ]),
    ),
    (
        "mapping",
        Shape::Obj(&[
            ("email", Shape::Obj(FIELD)),
            ("first_name", Shape::Obj(FIELD)),
            ("last_name", Shape::Obj(FIELD)),
            ("department", Shape::Obj(FIELD)),
            ("groups", Shape::Obj(FIELD)),
            ("default_license", Shape::Str),
            ("default_features", Shape::Strs),
            ("rules", Shape::List(RULE)),
        ]),
    ),
    (
        "provisioning",
        Shape::Obj(&[
            ("mode", Shape::Str),
            ("associated_domains", Shape::Strs),
            ("update_on_login", Shape::Strs),
        ]),
    ),
    (
        "session",
        Shape::Obj(&[
            ("lifetime_secs", Shape::Int),
            ("idle_timeout_secs", Shape::Int),
        ]),
    ),
];

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks `v` against `shape`; null is "not given" everywhere.
fn check_shape(v: &Value, shape: &Shape, key: &str, p: &mut Problems) {
    if v.is_null() {
        return;
    }
    match shape {
        Shape::Str if !v.is_string() => p.add(key, "must be a string"),
        Shape::Bool if !v.is_boolean() => p.add(key, "must be true or false"),
        Shape::Int if v.as_u64().is_none() => p.add(key, "must be a whole number, 0 or more"),
        Shape::Strs => match v.as_array() {
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    if !it.is_string() {
                        p.add(format!("{key}[{i}]"), "must be a string");
                    }
                }
            }
            None => p.add(key, "must be a list of strings"),
        },
        Shape::Obj(fields) => check_object(v, fields, key, p),
        Shape::List(fields) => match v.as_array() {
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    check_object(it, fields, &format!("{key}[{i}]"), p);
                }
            }
            None => p.add(key, "must be a list"),
        },
        Shape::Transforms => match v.as_array() {
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    if !it.is_string() {
                        check_object(
                            it,
                            &[("split", Shape::Str), ("regex", Shape::Str)],
                            &format!("{key}[{i}]"),
                            p,
                        );
                    }
                }
            }
            None => p.add(key, "must be a list"),
        },
        _ => {}
    }
}

fn check_object(v: &Value, fields: &[(&str, Shape)], key: &str, p: &mut Problems) {
    let Some(obj) = v.as_object() else {
        p.add(
            if key.is_empty() { "(document)" } else { key },
            "must be an object",
        );
        return;
    };
    for (k, val) in obj {
        match fields.iter().find(|(name, _)| name == k) {
            Some((_, shape)) => check_shape(val, shape, &join(key, k), p),
            None => p.add(join(key, k), "unknown key"),
        }
    }
}

/// Whether `id` is a valid account id (`^[a-z][a-z0-9-]{1,39}$`).
pub fn valid_id(id: &str) -> bool {
    let mut b = id.bytes();
    (2..=40).contains(&id.len())
        && b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// A host as accounts list it, or why it is not one: a DNS name or an IP
/// literal (IPv6 in brackets), no port, lowercased.
pub fn host(h: &str) -> Result<String, String> {
    let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| h.clone())
            .map_err(|_| format!("{h:?} is not an IPv6 literal"));
    }
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(h);
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.is_empty() || h.len() > 253 || !h.split('.').all(label_ok) {
        return Err(format!(
            "{h:?} is not a host name (letters, digits, '-' and '.', no port) or an IP address"
        ));
    }
    Ok(h)
}

/// The document's `hosts`, normalised (`[]` when absent or malformed: the
/// shape check reports that).
pub fn hosts_of(doc: &Value) -> Vec<String> {
    doc.get("hosts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|h| host(h).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// JSON merge patch (RFC 7386): `patch`'s members replace `target`'s,
/// objects merge recursively, null removes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct RawDoc {
    name: Option<String>,
    hosts: Option<Vec<String>>,
    status: Option<String>,
    #[serde(default)]
    sp: RawSp,
    #[serde(default)]
    idp: RawIdp,
    #[serde(default)]
    mapping: Option<RawMapping>,
    #[serde(default)]
    provisioning: RawProvisioning,
    #[serde(default)]
    session: RawSession,
}

#[derive(Deserialize, Default)]
struct RawSp {
    entity_id: Option<String>,
    acs_url: Option<String>,
    request_ttl_secs: Option<u64>,
    require_request_cookie: Option<bool>,
    key_file: Option<String>,
    cert_file: Option<String>,
    sign_authn_requests: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawIdp {
    metadata_xml: Option<String>,
    metadata_url: Option<String>,
    entity_id: Option<String>,
    allow_idp_initiated: Option<bool>,
    metadata_refresh_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawProvisioning {
    mode: Option<String>,
    associated_domains: Option<Vec<String>>,
    update_on_login: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawSession {
    lifetime_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
}

/// Null members removed, recursively (null means "not given").
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Where an account's metadata comes from when its document names a URL.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// The URL was fetched now: its text, or why it failed.
    Now(Result<String, String>),
    /// Not fetched now: the last good copy (the stored one).
    Cached(Option<String>),
}

/// Checks document `doc` of account `id` whole and builds the account.
/// `path_prefix`: where the SAML endpoints live (for the default SP URLs);
/// `fetched`: the metadata behind `idp.metadata_url`, when it names one.
pub fn build(
    id: &str,
    doc: &Value,
    security: &Security,
    path_prefix: &str,
    fetched: Fetched,
) -> Result<Account, Vec<ConfigProblem>> {
    let mut p = Problems::default();
    if !valid_id(id) {
        p.add("id", format!("{id:?} is not an account id (2-40 characters: a lowercase letter, then lowercase letters, digits and '-')"));
    } else if id == super::DEFAULT_ID {
        p.add(
            "id",
            "\"default\" is the config file's account: change it in the config file",
        );
    }
    check_object(doc, DOC, "", &mut p);
    if let Some(given) = doc.get("id").and_then(Value::as_str)
        && given != id
    {
        p.add(
            "id",
            format!("{given:?} differs from the id in the path ({id:?})"),
        );
    }
    if !p.0.is_empty() {
        return Err(p.0);
    }
    let raw: RawDoc = match serde_json::from_value(without_nulls(doc)) {
        Ok(r) => r,
        Err(e) => {
            p.add("(document)", e.to_string());
            return Err(p.0);
        }
    };

    // hosts
    let mut hosts: Vec<String> = Vec::new();
    let given = raw.hosts.unwrap_or_default();
    if given.is_empty() {
        p.add(
            "hosts",
            "is required: at least one host name the account is served at",
        );
    }
    if given.len() > MAX_HOSTS {
        p.add("hosts", format!("at most {MAX_HOSTS} hosts"));
    }
    for (i, h) in given.iter().enumerate().take(MAX_HOSTS) {
        match host(h) {
            Ok(h) if hosts.contains(&h) => {
                p.add(format!("hosts[{i}]"), format!("{h:?} is listed twice"))
            }
            Ok(h) => hosts.push(h),
            Err(e) => p.add(format!("hosts[{i}]"), e),
        }
    }
    if let Some(n) = &raw.name
        && (n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        p.add("name", "at most 200 characters, no control characters");
    }
    let status = match raw.status.as_deref().unwrap_or("active") {
        "active" => AccountStatus::Active,
        "suspended" => AccountStatus::Suspended,
        other => {
            p.add(
                "status",
                format!("{other:?} is not \"active\" or \"suspended\""),
            );
            AccountStatus::Active
        }
    };

    // sp (default: the first host, over https)
    let first = hosts.first().cloned().unwrap_or_default();
    let entity_id = raw
        .sp
        .entity_id
        .or_else(|| (!first.is_empty()).then(|| format!("https://{first}{path_prefix}/metadata")));
    let acs_url = raw
        .sp
        .acs_url
        .or_else(|| (!first.is_empty()).then(|| format!("https://{first}{path_prefix}/acs")));
    let (entity_id, acs_url) = parse::sp_urls(entity_id, acs_url, &mut p);
    let request_ttl_secs = raw.sp.request_ttl_secs.unwrap_or(600);
    if !(30..=3600).contains(&request_ttl_secs) {
        p.add("sp.request_ttl_secs", "must be between 30 and 3600");
    }
    // The SP key and certificate: files every replica has at this path.
    for (k, f) in [
        ("sp.key_file", &raw.sp.key_file),
        ("sp.cert_file", &raw.sp.cert_file),
    ] {
        if f.as_deref().is_some_and(|f| !f.starts_with('/')) {
            p.add(k, "must be an absolute path (on every replica)");
        }
    }
    let (sp_key, sp_cert) = if raw
        .sp
        .key_file
        .as_deref()
        .is_some_and(|f| f.starts_with('/'))
        || raw
            .sp
            .cert_file
            .as_deref()
            .is_some_and(|f| f.starts_with('/'))
    {
        parse::sp_key_and_cert(
            raw.sp.key_file.as_deref().filter(|f| f.starts_with('/')),
            raw.sp.cert_file.as_deref().filter(|f| f.starts_with('/')),
            &|f: &str| std::path::PathBuf::from(f),
            &mut p,
        )
    } else {
        (None, None)
    };
    if raw.sp.key_file.is_some() != raw.sp.cert_file.is_some() {
        p.add("sp.cert_file", "sp.key_file and sp.cert_file go together");
    }
    if raw.sp.sign_authn_requests == Some(true) && raw.sp.key_file.is_none() {
        p.add("sp.sign_authn_requests", "needs sp.key_file");
    }
    let sign_authn_requests = raw.sp.sign_authn_requests.unwrap_or(sp_key.is_some());

    // idp
    let idp = raw.idp;
    let metadata_refresh_secs = parse::idp_refresh(
        idp.metadata_url.as_deref(),
        idp.metadata_refresh_secs,
        &mut p,
    );
    let metadata = match (&idp.metadata_xml, &idp.metadata_url) {
        (Some(_), Some(_)) => {
            p.add(
                "idp.metadata_xml",
                "give idp.metadata_xml or idp.metadata_url, not both",
            );
            None
        }
        (None, None) => {
            p.add("idp.metadata_xml", "is required (or idp.metadata_url)");
            None
        }
        (Some(xml), None) => metadata(xml, &idp, "idp.metadata_xml", "inline", security, &mut p),
        (None, Some(url)) => match fetched {
            Fetched::Now(Ok(text)) => {
                metadata(&text, &idp, "idp.metadata_url", url, security, &mut p)
            }
            Fetched::Now(Err(e)) => {
                p.add("idp.metadata_url", format!("{url}: {e}"));
                None
            }
            Fetched::Cached(Some(text)) => {
                metadata(&text, &idp, "idp.metadata_url", url, security, &mut p)
            }
            Fetched::Cached(None) => {
                p.add(
                    "idp.metadata_url",
                    format!("{url} has not been fetched yet"),
                );
                None
            }
        },
    };

    let mapping = parse::mapping_from_raw(raw.mapping.unwrap_or_default(), &mut p);
    let pr = raw.provisioning;
    let provisioning =
        parse::provisioning(pr.mode, pr.associated_domains, pr.update_on_login, &mut p);
    let session = parse::lifetimes(
        raw.session.lifetime_secs,
        raw.session.idle_timeout_secs,
        &mut p,
    );

    match (p.0.is_empty(), entity_id, acs_url, metadata) {
        (true, Some(entity_id), Some(acs_url), Some((metadata, metadata_source))) => Ok(Account {
            id: id.to_owned(),
            name: raw.name.unwrap_or_default(),
            hosts,
            status,
            sp: Sp {
                entity_id,
                acs_url,
                key: sp_key,
                cert_pem: sp_cert,
                sign_authn_requests,
                request_ttl_secs,
                require_request_cookie: raw.sp.require_request_cookie.unwrap_or(false),
            },
            idp: Idp {
                metadata,
                metadata_source,
                allow_idp_initiated: idp.allow_idp_initiated.unwrap_or(true),
                metadata_url: idp.metadata_url,
                metadata_refresh_secs,
                entity_selector: idp.entity_id,
            },
            mapping,
            provisioning,
            session,
        }),
        _ => {
            if p.0.is_empty() {
                p.add("(document)", "incomplete");
            }
            Err(p.0)
        }
    }
}

fn metadata(
    text: &str,
    idp: &RawIdp,
    key: &str,
    source: &str,
    security: &Security,
    p: &mut Problems,
) -> Option<(IdpMetadata, String)> {
    match IdpMetadata::parse(text, idp.entity_id.as_deref()).and_then(|m| {
        m.check_key_sizes(security.insecure_allow_rsa_1024)?;
        Ok(m)
    }) {
        Ok(m) => Some((m, source.to_owned())),
        Err(e) => {
            p.add(key, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["ab", "acme", "acme-2", &format!("a{}", "b".repeat(39))] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in [
            "a",
            "Acme",
            "1acme",
            "-acme",
            "acme_x",
            "acme.x",
            "",
            &"a".repeat(41),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host("Acme.Example.COM.").unwrap(), "acme.example.com");
        assert_eq!(host("127.0.0.2").unwrap(), "127.0.0.2");
        assert_eq!(host("[::1]").unwrap(), "[::1]");
        for bad in [
            "acme.example.com:8443",
            "a b",
            "",
            "-a.example",
            "a..b",
            "[nope]",
        ] {
            assert!(host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_shape_problem_is_named_at_once() {
        let doc = serde_json::json!({
            "hosts": "acme.example.com",
            "colour": "red",
            "sp": {"entity_id": 5, "acs": "x"},
            "mapping": {"rules": [{"attribute": "a", "licence": "licensed"}],
                        "email": {"transforms": ["trim", {"splt": ","}]}},
            "session": {"lifetime_secs": -1}
        });
        let problems = build(
            "acme",
            &doc,
            &Security::default(),
            "/saml",
            Fetched::Cached(None),
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        let long = serde_json::json!({"name": "x".repeat(201), "hosts": ["a.test"]});
        let p = build(
            "acme",
            &long,
            &Security::default(),
            "/saml",
            Fetched::Cached(None),
        )
        .unwrap_err();
        assert!(p.iter().any(|p| p.key == "name"), "{p:?}");
        for k in [
            "hosts",
            "colour",
            "sp.entity_id",
            "sp.acs",
            "mapping.rules[0].licence",
            "mapping.email.transforms[1].splt",
            "session.lifetime_secs",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1], "e": 1});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": {"b": null, "x": 3}, "d": [2], "e": null}),
        );
        assert_eq!(t, serde_json::json!({"a": {"c": 2, "x": 3}, "d": [2]}));
    }
}
