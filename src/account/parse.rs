//! Parsing shared by the config file and account documents: both write an
//! account's sections with the same keys, checked by the same rules, and
//! every problem names its key.

use regex::Regex;

use super::raw::{RawField, RawMapping, RawTransform};
use super::{Provisioning, ProvisioningMode, SessionLifetimes};
use crate::mapping::{FieldRule, License, Mapping, Matcher, Rule, Source, Transform};

/// One problem in the config, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path, e.g. `sp.acs_url` or `mapping.rules[1].regex`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Collects problems while converting.
#[derive(Default)]
pub struct Problems(pub Vec<ConfigProblem>);

impl Problems {
    /// Records a problem at `key`.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// `v`, recording "is required" at `key` when it is absent.
    pub fn required<T>(&mut self, v: Option<T>, key: &str) -> Option<T> {
        if v.is_none() {
            self.add(key, "is required");
        }
        v
    }
}

fn field_from_raw(
    raw: Option<RawField>,
    key: &str,
    default: FieldRule,
    p: &mut Problems,
) -> FieldRule {
    let Some(raw) = raw else { return default };
    let from = match raw.from {
        Some(v) if v.is_empty() => {
            p.add(
                format!("{key}.from"),
                "must name at least one attribute (or \"nameid\")",
            );
            default.from.clone()
        }
        Some(v) => v.iter().map(|s| Source::parse(s)).collect(),
        None => default.from.clone(),
    };
    let transforms = match raw.transforms {
        None => default.transforms.clone(),
        Some(list) => {
            let mut out = Vec::new();
            for (i, t) in list.into_iter().enumerate() {
                let k = format!("{key}.transforms[{i}]");
                match t {
                    RawTransform::Named(n) => match n.as_str() {
                        "trim" => out.push(Transform::Trim),
                        "lowercase" => out.push(Transform::Lowercase),
                        "uppercase" => out.push(Transform::Uppercase),
                        other => p.add(k, format!("unknown transform {other:?} (trim, lowercase, uppercase, {{ split = \",\" }}, {{ regex = \"...\" }})")),
                    },
                    RawTransform::Table(t) => match (t.split, t.regex) {
                        (Some(s), None) if !s.is_empty() => out.push(Transform::Split(s)),
                        (None, Some(r)) => match Regex::new(&r) {
                            Ok(re) => out.push(Transform::Regex(re)),
                            Err(e) => p.add(format!("{k}.regex"), format!("invalid regex: {e}")),
                        },
                        _ => p.add(k, "a transform table holds exactly one of split (non-empty) or regex"),
                    },
                }
            }
            out
        }
    };
    FieldRule {
        from,
        transforms,
        default: raw.default,
    }
}

/// `[mapping]` / an account's `mapping`.
pub fn mapping_from_raw(raw: RawMapping, p: &mut Problems) -> Mapping {
    let d = Mapping::default();
    let default_license = match raw.default_license.as_deref() {
        None => License::Basic,
        Some(s) => License::parse(s).unwrap_or_else(|| {
            p.add(
                "mapping.default_license",
                format!("{s:?} is not basic, licensed or on_prem"),
            );
            License::Basic
        }),
    };
    let mut rules = Vec::new();
    for (i, r) in raw.rules.unwrap_or_default().into_iter().enumerate() {
        let key = format!("mapping.rules[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("rule {}", i + 1));
        let Some(attribute) = r.attribute.filter(|a| !a.is_empty()) else {
            p.add(format!("{key}.attribute"), "is required");
            continue;
        };
        let given = [
            r.equals.is_some(),
            r.contains.is_some(),
            r.regex.is_some(),
            r.present.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            p.add(
                key.clone(),
                "exactly one of equals, contains, regex, present is required",
            );
            continue;
        }
        let matcher = if let Some(x) = r.equals {
            Matcher::Equals(x)
        } else if let Some(x) = r.contains {
            Matcher::Contains(x)
        } else if let Some(x) = r.regex {
            let pattern = if r.ignore_case == Some(true) {
                format!("(?i){x}")
            } else {
                x
            };
            match Regex::new(&pattern) {
                Ok(re) => Matcher::Regex(re),
                Err(e) => {
                    p.add(format!("{key}.regex"), format!("invalid regex: {e}"));
                    continue;
                }
            }
        } else if r.present == Some(true) {
            Matcher::Present
        } else {
            p.add(format!("{key}.present"), "must be true when given");
            continue;
        };
        let license = match r.license.as_deref() {
            None => None,
            Some(s) => match License::parse(s) {
                Some(l) => Some(l),
                None => {
                    p.add(
                        format!("{key}.license"),
                        format!("{s:?} is not basic, licensed or on_prem"),
                    );
                    continue;
                }
            },
        };
        let admin = match r.role.as_deref() {
            None => false,
            Some("admin") => true,
            Some(other) => {
                p.add(
                    format!("{key}.role"),
                    format!(
                        "{other:?} is not a role: the one role is \"admin\" (the account's console)"
                    ),
                );
                continue;
            }
        };
        let groups = r.groups.unwrap_or_default();
        let features = r.features.unwrap_or_default();
        if license.is_none() && groups.is_empty() && features.is_empty() && !admin {
            p.add(
                key.clone(),
                "does nothing: set license, groups, features or role",
            );
        }
        rules.push(Rule {
            name,
            source: Source::parse(&attribute),
            matcher,
            negate: r.negate.unwrap_or(false),
            ignore_case: r.ignore_case.unwrap_or(false),
            license,
            groups,
            features,
            admin,
        });
    }
    Mapping {
        email: field_from_raw(raw.email, "mapping.email", d.email, p),
        first_name: field_from_raw(raw.first_name, "mapping.first_name", d.first_name, p),
        last_name: field_from_raw(raw.last_name, "mapping.last_name", d.last_name, p),
        department: field_from_raw(raw.department, "mapping.department", d.department, p),
        groups: field_from_raw(raw.groups, "mapping.groups", d.groups, p),
        default_license,
        default_features: raw.default_features.unwrap_or_default(),
        rules,
    }
}

/// `[provisioning]` `mode`, `associated_domains`, `update_on_login` (the
/// keys an account has of its own).
pub fn provisioning(
    mode: Option<String>,
    associated_domains: Option<Vec<String>>,
    update_on_login: Option<Vec<String>>,
    p: &mut Problems,
) -> Provisioning {
    let mode = match mode.as_deref().unwrap_or("jit") {
        "jit" => ProvisioningMode::Jit,
        "prior_to_sign_in" => ProvisioningMode::PriorToSignIn,
        other => {
            p.add(
                "provisioning.mode",
                format!("{other:?} is not \"jit\" or \"prior_to_sign_in\""),
            );
            ProvisioningMode::Jit
        }
    };
    let mut domains = Vec::new();
    for (i, dom) in associated_domains
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let dom = dom.trim().trim_start_matches('@').to_ascii_lowercase();
        if dom.is_empty() || dom.contains('@') || !dom.contains('.') {
            p.add(
                format!("provisioning.associated_domains[{i}]"),
                format!("{dom:?} is not a domain"),
            );
        } else if !dom.is_ascii() {
            p.add(
                format!("provisioning.associated_domains[{i}]"),
                format!("{dom:?} is not ASCII: write an internationalised domain in its xn-- (IDNA) form"),
            );
        } else {
            domains.push(dom);
        }
    }

    const UPDATABLE: &[&str] = &[
        "first_name",
        "last_name",
        "department",
        "groups",
        "license",
        "features",
    ];
    let update_on_login = update_on_login.unwrap_or_else(|| {
        ["first_name", "last_name", "department", "groups"]
            .map(String::from)
            .to_vec()
    });
    for (i, f) in update_on_login.iter().enumerate() {
        if !UPDATABLE.contains(&f.as_str()) {
            p.add(
                format!("provisioning.update_on_login[{i}]"),
                format!("{f:?} is not one of {UPDATABLE:?} (the email never changes)"),
            );
        }
    }
    Provisioning {
        mode,
        associated_domains: domains,
        update_on_login,
    }
}

/// `[session]` `lifetime_secs` and `idle_timeout_secs`.
pub fn lifetimes(
    lifetime_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    p: &mut Problems,
) -> SessionLifetimes {
    let l = SessionLifetimes {
        lifetime_secs: lifetime_secs.unwrap_or(8 * 3600),
        idle_timeout_secs: idle_timeout_secs.unwrap_or(3600),
    };
    if !(60..=30 * 86_400).contains(&l.lifetime_secs) {
        p.add("session.lifetime_secs", "must be between 60 and 2592000");
    }
    if !(30..=l.lifetime_secs.max(30)).contains(&l.idle_timeout_secs) {
        p.add(
            "session.idle_timeout_secs",
            "must be between 30 and session.lifetime_secs",
        );
    }
    l
}

/// `sp.entity_id` and `sp.acs_url`: both required, the ACS an http(s) URL.
pub fn sp_urls(
    entity_id: Option<String>,
    acs_url: Option<String>,
    p: &mut Problems,
) -> (Option<String>, Option<String>) {
    let entity_id = p.required(entity_id.filter(|s| !s.is_empty()), "sp.entity_id");
    let acs_url = p.required(acs_url.filter(|s| !s.is_empty()), "sp.acs_url");
    if let Some(a) = &acs_url
        && !(a.starts_with("https://") || a.starts_with("http://"))
    {
        p.add("sp.acs_url", format!("{a:?} is not an http(s) URL"));
    }
    (entity_id, acs_url)
}

/// `sp.key_file` and `sp.cert_file` (paths through `resolve`): the SP's
/// private key (decrypts assertions, signs AuthnRequests and logout
/// messages) and its certificate (published in the SP metadata), which
/// must carry that key's public half.
pub fn sp_key_and_cert(
    key_file: Option<&str>,
    cert_file: Option<&str>,
    resolve: &dyn Fn(&str) -> std::path::PathBuf,
    p: &mut Problems,
) -> (
    Option<openssl::pkey::PKey<openssl::pkey::Private>>,
    Option<String>,
) {
    let key = key_file.and_then(|f| {
        let path = resolve(f);
        match std::fs::read(&path) {
            Ok(pem) => match openssl::pkey::PKey::private_key_from_pem(&pem) {
                Ok(k) => Some(k),
                Err(e) => {
                    p.add(
                        "sp.key_file",
                        format!("{}: not a PEM private key ({e})", path.display()),
                    );
                    None
                }
            },
            Err(e) => {
                p.add("sp.key_file", format!("{}: {e}", path.display()));
                None
            }
        }
    });
    let cert = cert_file.and_then(|f| {
        let path = resolve(f);
        match std::fs::read_to_string(&path) {
            Ok(pem) => match openssl::x509::X509::from_pem(pem.as_bytes()) {
                Ok(c) => Some((pem, c)),
                Err(e) => {
                    p.add(
                        "sp.cert_file",
                        format!("{}: not a PEM certificate ({e})", path.display()),
                    );
                    None
                }
            },
            Err(e) => {
                p.add("sp.cert_file", format!("{}: {e}", path.display()));
                None
            }
        }
    });
    if let (Some(k), Some((_, c))) = (&key, &cert)
        && !c.public_key().is_ok_and(|pk| pk.public_eq(k))
    {
        p.add(
            "sp.cert_file",
            "the certificate does not carry sp.key_file's public key",
        );
    }
    (key, cert.map(|(pem, _)| pem))
}

/// `idp.metadata_url` (when given) and `idp.metadata_refresh_secs`.
pub fn idp_refresh(
    metadata_url: Option<&str>,
    metadata_refresh_secs: Option<u64>,
    p: &mut Problems,
) -> u64 {
    if let Some(u) = metadata_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        p.add("idp.metadata_url", format!("{u:?} is not an http(s) URL"));
    }
    let secs = metadata_refresh_secs.unwrap_or(3600);
    if !(10..=7 * 86_400).contains(&secs) {
        p.add("idp.metadata_refresh_secs", "must be between 10 and 604800");
    }
    secs
}
