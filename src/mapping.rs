//! Attribute mapping: turns a verified assertion's NameID and attributes into
//! the fields of a platform user, as ops configure it in `[mapping]`.
//!
//! This module is pure: it never sees XML or the network, only the values
//! the verification step extracted, so it is cheap to test and to fuzz.
//!
//! * Each user field has an ordered list of candidates (an attribute `Name`,
//!   else a `FriendlyName`, or `nameid`), transforms (`trim`, `lowercase`,
//!   `uppercase`, `{ split = "," }`, `{ regex = "^([^@]+)" }`) and a default.
//!   The first candidate that yields a non-empty value wins.
//! * Rules map attribute values to a license, groups and features:
//!   `equals`, `contains`, `regex` or `present`, optionally `negate`d and
//!   case-insensitive. The license comes from the first matching rule that
//!   sets one (else `default_license`); groups and features from every
//!   matching rule.

use std::fmt;

use regex::Regex;
use serde::Serialize;

/// A license type (DESIGN.md: basic | licensed | on_prem).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum License {
    /// Type 1.
    #[default]
    Basic,
    /// Type 2.
    Licensed,
    /// Type 3.
    OnPrem,
}

impl License {
    /// Parses `basic`, `licensed` or `on_prem`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "basic" => Some(Self::Basic),
            "licensed" => Some(Self::Licensed),
            "on_prem" => Some(Self::OnPrem),
            _ => None,
        }
    }

    /// The config/JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Licensed => "licensed",
            Self::OnPrem => "on_prem",
        }
    }
}

/// One SAML attribute as asserted (values in document order).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct SamlAttribute {
    /// `Name`.
    pub name: String,
    /// `FriendlyName`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// `NameFormat`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_format: Option<String>,
    /// Text of each `AttributeValue`.
    pub values: Vec<String>,
}

/// What the mapping reads.
#[derive(Debug, Clone, Default)]
pub struct MappingInput<'a> {
    /// NameID text, if any.
    pub name_id: Option<&'a str>,
    /// Every attribute of the assertion's AttributeStatements.
    pub attributes: &'a [SamlAttribute],
}

/// Where a candidate value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The Subject's NameID.
    NameId,
    /// An attribute, matched on `Name` first, then on `FriendlyName`.
    Attribute(String),
}

impl Source {
    /// Parses a candidate as written in config (`nameid` is special, any case).
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("nameid") {
            Self::NameId
        } else {
            Self::Attribute(s.to_owned())
        }
    }

    /// What this source matches in `input`, if anything.
    fn find<'i>(&self, input: &MappingInput<'i>) -> Option<Found<'i>> {
        match self {
            Self::NameId => input.name_id.map(Found::NameId),
            Self::Attribute(n) => {
                let attrs = input.attributes;
                attrs
                    .iter()
                    .find(|a| a.name == *n)
                    .map(|a| Found::Attribute(a, false))
                    .or_else(|| {
                        attrs
                            .iter()
                            .find(|a| a.friendly_name.as_deref() == Some(n.as_str()))
                            .map(|a| Found::Attribute(a, true))
                    })
            }
        }
    }
}

/// What a [`Source`] matched: the NameID, or an attribute (found by its
/// `FriendlyName` or not). Described only when a trace asks.
#[derive(Debug, Clone, Copy)]
enum Found<'i> {
    /// The NameID text.
    NameId(&'i str),
    /// An attribute; `true` when matched on its `FriendlyName`.
    Attribute(&'i SamlAttribute, bool),
}

impl<'i> Found<'i> {
    /// Its values, borrowed.
    fn each(self) -> impl Iterator<Item = &'i str> {
        let (one, many) = match self {
            Found::NameId(v) => (Some(v), &[][..]),
            Found::Attribute(a, _) => (None, a.values.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// Where a field's value came from, for traces.
#[derive(Debug, Clone, Copy)]
enum Desc<'i> {
    Found(Found<'i>),
    Default,
}

impl fmt::Display for Desc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Desc::Found(Found::NameId(_)) => f.write_str("NameID"),
            Desc::Found(Found::Attribute(a, false)) => write!(f, "attribute {}", a.name),
            Desc::Found(Found::Attribute(a, true)) => write!(
                f,
                "attribute {} (FriendlyName {})",
                a.name,
                a.friendly_name.as_deref().unwrap_or("")
            ),
            Desc::Default => f.write_str("default"),
        }
    }
}

/// A value transform.
#[derive(Debug, Clone)]
pub enum Transform {
    /// Strip surrounding XML whitespace (space, TAB, CR, LF; not NBSP or
    /// other Unicode spaces, which would merge different signed values).
    Trim,
    /// Lowercase ASCII letters (never Unicode case folding: U+212A KELVIN
    /// SIGN stays itself rather than becoming `k`).
    Lowercase,
    /// Uppercase ASCII letters.
    Uppercase,
    /// Split each value on a separator (empty parts dropped).
    Split(String),
    /// Keep capture group 1 (or the whole match); values that do not match are dropped.
    Regex(Regex),
}

impl Transform {
    fn apply(&self, values: Vec<String>) -> Vec<String> {
        match self {
            Self::Trim => values
                .into_iter()
                .map(|v| crate::email::trim_xml_space(&v).to_owned())
                .collect(),
            Self::Lowercase => values.into_iter().map(|v| v.to_ascii_lowercase()).collect(),
            Self::Uppercase => values.into_iter().map(|v| v.to_ascii_uppercase()).collect(),
            Self::Split(sep) => values
                .iter()
                .flat_map(|v| v.split(sep.as_str()))
                .map(crate::email::trim_xml_space)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Self::Regex(re) => values
                .iter()
                .filter_map(|v| {
                    re.captures(v)
                        .and_then(|c| c.get(1).or_else(|| c.get(0)).map(|m| m.as_str().to_owned()))
                })
                .collect(),
        }
    }
}

/// How one user field is filled.
#[derive(Debug, Clone)]
pub struct FieldRule {
    /// Candidates in order.
    pub from: Vec<Source>,
    /// Transforms applied to each candidate's values.
    pub transforms: Vec<Transform>,
    /// Used when no candidate yields a value.
    pub default: Option<String>,
}

impl FieldRule {
    /// A rule from candidate names with the given transforms.
    pub fn new(from: &[&str], transforms: Vec<Transform>) -> Self {
        Self {
            from: from.iter().map(|s| Source::parse(s)).collect(),
            transforms,
            default: None,
        }
    }

    /// The first candidate with a non-empty value after transforms.
    fn resolve<'i>(
        &self,
        input: &MappingInput<'i>,
        accept: &dyn Fn(&str) -> bool,
    ) -> Option<(Vec<String>, Desc<'i>)> {
        for source in &self.from {
            let Some(found) = source.find(input) else {
                continue;
            };
            let desc = Desc::Found(found);
            let mut values: Vec<String> = found.each().map(str::to_owned).collect();
            for t in &self.transforms {
                values = t.apply(values);
            }
            values.retain(|v| !v.is_empty());
            if !values.is_empty() && values.iter().all(|v| accept(v)) {
                return Some((values, desc));
            }
        }
        self.default
            .as_ref()
            .map(|d| (vec![d.clone()], Desc::Default))
    }

    fn describe(&self) -> String {
        self.from
            .iter()
            .map(|s| match s {
                Source::NameId => "nameid".to_owned(),
                Source::Attribute(a) => a.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How a rule tests values.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A value equals this.
    Equals(String),
    /// A value contains this.
    Contains(String),
    /// A value matches this.
    Regex(Regex),
    /// The attribute has a non-empty value.
    Present,
}

/// A rule mapping attribute values to license, groups and features.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name used in traces and errors.
    pub name: String,
    /// The attribute tested.
    pub source: Source,
    /// The test.
    pub matcher: Matcher,
    /// Invert the test.
    pub negate: bool,
    /// Compare case-insensitively (equals, contains).
    pub ignore_case: bool,
    /// License set when this is the first matching rule with one.
    pub license: Option<License>,
    /// Groups added.
    pub groups: Vec<String>,
    /// Features added.
    pub features: Vec<String>,
    /// `role = "admin"`: the user is an admin of the account's console.
    pub admin: bool,
}

impl Rule {
    fn matches(&self, input: &MappingInput<'_>) -> bool {
        let found = self.source.find(input);
        let values = || found.into_iter().flat_map(Found::each);
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        let hit = match &self.matcher {
            Matcher::Present => values().any(|v| !v.trim().is_empty()),
            Matcher::Equals(x) => values().any(|v| fold(v) == fold(x)),
            Matcher::Contains(x) => values().any(|v| fold(v).contains(&fold(x))),
            Matcher::Regex(re) => values().any(|v| re.is_match(v)),
        };
        hit != self.negate
    }
}

/// The whole mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Email (required; the user's key).
    pub email: FieldRule,
    /// First name.
    pub first_name: FieldRule,
    /// Last name.
    pub last_name: FieldRule,
    /// Department.
    pub department: FieldRule,
    /// Groups (multi-valued).
    pub groups: FieldRule,
    /// License when no rule sets one.
    pub default_license: License,
    /// Features every user gets.
    pub default_features: Vec<String>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

/// Default candidate names: Entra ID/ADFS claim URIs, Shibboleth-style
/// `urn:oid:` names, Okta's and other plain friendly names.
pub const DEFAULT_EMAIL: &[&str] = &[
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "email",
    "mail",
    "Email",
    "emailAddress",
    "EmailAddress",
    "http://schemas.xmlsoap.org/claims/EmailAddress",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "nameid",
];
/// Default first-name candidates.
pub const DEFAULT_FIRST_NAME: &[&str] = &[
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    "urn:oid:2.5.4.42",
    "firstName",
    "first_name",
    "givenName",
    "FirstName",
    "given_name",
];
/// Default last-name candidates.
pub const DEFAULT_LAST_NAME: &[&str] = &[
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
    "urn:oid:2.5.4.4",
    "lastName",
    "last_name",
    "sn",
    "surname",
    "LastName",
    "family_name",
];
/// Default department candidates.
pub const DEFAULT_DEPARTMENT: &[&str] = &[
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/department",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/department",
    "urn:oid:2.5.4.11",
    "department",
    "Department",
    "ou",
];
/// Default group candidates.
pub const DEFAULT_GROUPS: &[&str] = &[
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    "http://schemas.xmlsoap.org/claims/Group",
    "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
    "groups",
    "memberOf",
    "Groups",
    "isMemberOf",
];

impl Default for Mapping {
    fn default() -> Self {
        Self {
            email: FieldRule::new(DEFAULT_EMAIL, vec![Transform::Trim, Transform::Lowercase]),
            first_name: FieldRule::new(DEFAULT_FIRST_NAME, vec![Transform::Trim]),
            last_name: FieldRule::new(DEFAULT_LAST_NAME, vec![Transform::Trim]),
            department: FieldRule::new(DEFAULT_DEPARTMENT, vec![Transform::Trim]),
            groups: FieldRule::new(DEFAULT_GROUPS, vec![Transform::Trim]),
            default_license: License::Basic,
            default_features: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// The user fields a response maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedUser {
    /// Lowercased email: the user's key.
    pub email: String,
    /// First name ("" when absent).
    pub first_name: String,
    /// Last name ("" when absent).
    pub last_name: String,
    /// Department ("" when absent).
    pub department: String,
    /// Groups, deduplicated, in order of first appearance.
    pub groups: Vec<String>,
    /// License.
    pub license: License,
    /// Features, deduplicated.
    pub features: Vec<String>,
    /// A rule set the license (else it is the default).
    pub license_by_rule: bool,
    /// A matching rule gave `role = "admin"`: the user may sign in to the
    /// account's console (at `/console/` on its hosts).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// What the rules make of a user's directory (SCIM) groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryOutcome {
    /// The license of the first matching rule that sets one.
    pub license: Option<License>,
    /// Groups the matching rules add.
    pub groups: Vec<String>,
    /// Features the matching rules add.
    pub features: Vec<String>,
}

/// One line of the mapping trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceLine {
    /// Pipeline step ("decode", "signature", "map", "rule", ...).
    pub step: &'static str,
    /// What happened, for a person.
    pub detail: String,
}

impl TraceLine {
    /// A trace line.
    pub fn new(step: &'static str, detail: impl Into<String>) -> Self {
        Self {
            step,
            detail: detail.into(),
        }
    }
}

/// Where the pipeline explains itself: collected for `check-response` (and
/// its JSON report), switched off on the gateway's login path, where nobody
/// reads it and formatting it cost about a twentieth of a whole check.
/// Lines are built by closures, so an off trace formats nothing.
#[derive(Debug, Default)]
pub struct Trace {
    lines: Option<Vec<TraceLine>>,
}

impl Trace {
    /// A trace that keeps its lines.
    pub fn collecting() -> Self {
        Self {
            lines: Some(Vec::new()),
        }
    }

    /// A trace that drops everything without formatting it.
    pub fn off() -> Self {
        Self { lines: None }
    }

    /// Adds a line; `detail` runs only when the trace is collecting.
    #[inline]
    pub fn add(&mut self, step: &'static str, detail: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            push_line(lines, step, detail);
        }
    }

    /// The lines collected (none when off).
    pub fn into_lines(self) -> Vec<TraceLine> {
        self.lines.unwrap_or_default()
    }
}

/// Out of line and cold: the login path runs with the trace off, and the
/// formatting code of every step would otherwise sit inline in the hot
/// functions that call [`Trace::add`].
#[cold]
#[inline(never)]
fn push_line(lines: &mut Vec<TraceLine>, step: &'static str, detail: impl FnOnce() -> String) {
    lines.push(TraceLine {
        step,
        detail: detail(),
    });
}

pub use crate::email::is_email_shaped;

impl Mapping {
    /// Maps `input` to a user, appending to `trace`. Fails (naming the rule)
    /// when no email can be produced.
    pub fn apply(&self, input: &MappingInput<'_>, trace: &mut Trace) -> Result<MappedUser, String> {
        let email = match self.email.resolve(input, &|v| is_email_shaped(v)) {
            Some((values, desc)) => {
                let v = values.into_iter().next().unwrap_or_default();
                trace.add("map", || format!("email = {v:?} from {desc}"));
                v
            }
            None => {
                return Err(format!(
                    "mapping.email: no email-shaped value in any of [{}]",
                    self.email.describe()
                ));
            }
        };
        let mut single = |name: &'static str, rule: &FieldRule| -> String {
            match rule.resolve(input, &|_| true) {
                Some((values, desc)) => {
                    let n = values.len();
                    let v = values.into_iter().next().unwrap_or_default();
                    trace.add("map", || {
                        let extra = if n > 1 {
                            format!(" (first of {n} values)")
                        } else {
                            String::new()
                        };
                        format!("{name} = {v:?} from {desc}{extra}")
                    });
                    v
                }
                None => {
                    trace.add("map", || {
                        format!("{name}: none of [{}] present, left empty", rule.describe())
                    });
                    String::new()
                }
            }
        };
        let first_name = single("first_name", &self.first_name);
        let last_name = single("last_name", &self.last_name);
        let department = single("department", &self.department);

        let mut groups = Unique::default();
        match self.groups.resolve(input, &|_| true) {
            Some((values, desc)) => {
                trace.add("map", || format!("groups = {values:?} from {desc}"));
                for v in values {
                    groups.push(v);
                }
            }
            None => trace.add("map", || {
                format!("groups: none of [{}] present", self.groups.describe())
            }),
        }

        let mut license: Option<(License, &str)> = None;
        let mut admin = false;
        let mut features = Unique::default();
        for f in &self.default_features {
            features.push(f.clone());
        }
        for rule in &self.rules {
            if !rule.matches(input) {
                trace.add("rule", || format!("{}: no match", rule.name));
                continue;
            }
            // (license, whether an earlier rule had already set one)
            let rule_license = rule.license.map(|l| (l, license.is_some()));
            if let Some(l) = rule.license
                && license.is_none()
            {
                license = Some((l, &rule.name));
            }
            for g in &rule.groups {
                groups.push(g.clone());
            }
            for f in &rule.features {
                features.push(f.clone());
            }
            admin |= rule.admin;
            trace.add("rule", || {
                let mut did = Vec::new();
                match rule_license {
                    Some((l, false)) => did.push(format!("license {}", l.as_str())),
                    Some((l, true)) => did.push(format!(
                        "license {} ignored (an earlier rule set it)",
                        l.as_str()
                    )),
                    None => {}
                }
                if !rule.groups.is_empty() {
                    did.push(format!("groups +{:?}", rule.groups));
                }
                if !rule.features.is_empty() {
                    did.push(format!("features +{:?}", rule.features));
                }
                if rule.admin {
                    did.push("role admin".into());
                }
                format!("{}: matched → {}", rule.name, did.join(", "))
            });
        }
        let license_by_rule = license.is_some();
        let license = match license {
            Some((l, _)) => l,
            None => {
                trace.add("rule", || {
                    format!(
                        "no rule set a license: default {}",
                        self.default_license.as_str()
                    )
                });
                self.default_license
            }
        };
        Ok(MappedUser {
            email,
            first_name,
            last_name,
            department,
            groups: groups.list,
            license,
            features: features.list,
            license_by_rule,
            admin,
        })
    }

    /// The attribute names the rules see a user's directory (SCIM) groups
    /// under: those the mapping reads groups from, and `groups`.
    fn directory_attributes(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .groups
            .from
            .iter()
            .filter_map(|s| match s {
                Source::Attribute(n) => Some(n.clone()),
                Source::NameId => None,
            })
            .collect();
        if !names.iter().any(|n| n == "groups") {
            names.push("groups".into());
        }
        names
    }

    /// What the rules make of directory groups `names` alone (as values of
    /// the attributes the mapping reads groups from).
    pub fn directory_outcome(&self, names: &[String]) -> DirectoryOutcome {
        let mut out = DirectoryOutcome::default();
        if names.is_empty() {
            return out;
        }
        let attributes: Vec<SamlAttribute> = self
            .directory_attributes()
            .into_iter()
            .map(|name| SamlAttribute {
                name,
                values: names.to_vec(),
                ..Default::default()
            })
            .collect();
        let input = MappingInput {
            name_id: None,
            attributes: &attributes,
        };
        for rule in &self.rules {
            // A rule about another attribute sees nothing here (a negated
            // one would match every user): only rules over the groups
            // attributes count.
            let about_groups = matches!(&rule.source, Source::Attribute(a) if attributes.iter().any(|x| &x.name == a));
            if !about_groups || !rule.matches(&input) {
                continue;
            }
            if out.license.is_none() {
                out.license = rule.license;
            }
            for g in &rule.groups {
                if !out.groups.contains(g) {
                    out.groups.push(g.clone());
                }
            }
            for f in &rule.features {
                if !out.features.contains(f) {
                    out.features.push(f.clone());
                }
            }
        }
        out
    }
}

/// Values deduplicated in order of first appearance: a list searched while
/// short, a hash set beside it once long (an IdP may send thousands of
/// group values; a list search each would be quadratic).
#[derive(Default)]
struct Unique {
    list: Vec<String>,
    seen: Option<std::collections::HashSet<String>>,
}

impl Unique {
    const FEW: usize = 16;

    fn push(&mut self, s: String) {
        if let Some(seen) = &mut self.seen {
            if seen.insert(s.clone()) {
                self.list.push(s);
            }
            return;
        }
        if self.list.contains(&s) {
            return;
        }
        self.list.push(s);
        if self.list.len() > Self::FEW {
            self.seen = Some(self.list.iter().cloned().collect());
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn attr(name: &str, friendly: Option<&str>, values: &[&str]) -> SamlAttribute {
        SamlAttribute {
            name: name.into(),
            friendly_name: friendly.map(Into::into),
            name_format: None,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_read_entra_claims() {
        let attrs = vec![
            attr(
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                None,
                &[" Alice@Example.COM "],
            ),
            attr(
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                None,
                &["Alice"],
            ),
            attr(
                "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                None,
                &["g1", "g2", "g1"],
            ),
        ];
        let input = MappingInput {
            name_id: Some("opaque-id"),
            attributes: &attrs,
        };
        let mut trace = Trace::collecting();
        let u = Mapping::default().apply(&input, &mut trace).unwrap();
        assert_eq!(u.email, "alice@example.com");
        assert_eq!(u.first_name, "Alice");
        assert_eq!(u.groups, vec!["g1", "g2"]);
        assert_eq!(u.license, License::Basic);
    }

    #[test]
    fn falls_back_to_email_shaped_nameid_only() {
        let input = MappingInput {
            name_id: Some("Bob@Example.org"),
            attributes: &[],
        };
        let u = Mapping::default().apply(&input, &mut Trace::off()).unwrap();
        assert_eq!(u.email, "bob@example.org");
        let input = MappingInput {
            name_id: Some("not-an-email"),
            attributes: &[],
        };
        let err = Mapping::default()
            .apply(&input, &mut Trace::off())
            .unwrap_err();
        assert!(err.contains("mapping.email"), "{err}");
    }

    /// The trace says where each field came from: NameID, an attribute by
    /// Name, an attribute by FriendlyName, or the rule's default.
    #[test]
    fn trace_names_each_source() {
        let attrs = vec![
            attr("urn:oid:2.5.4.42", Some("givenName"), &["Carol"]),
            attr("dept", None, &["Sales"]),
        ];
        let input = MappingInput {
            name_id: Some("c@example.com"),
            attributes: &attrs,
        };
        let mut m = Mapping::default();
        m.email = FieldRule::new(&["nameid"], vec![]);
        m.first_name = FieldRule::new(&["givenName"], vec![]);
        m.department = FieldRule::new(&["dept"], vec![]);
        m.last_name = FieldRule::new(&["sn"], vec![]);
        m.last_name.default = Some("Unknown".into());
        let mut trace = Trace::collecting();
        m.apply(&input, &mut trace).unwrap();
        let text: Vec<String> = trace.into_lines().into_iter().map(|l| l.detail).collect();
        for want in [
            "email = \"c@example.com\" from NameID",
            "first_name = \"Carol\" from attribute urn:oid:2.5.4.42 (FriendlyName givenName)",
            "department = \"Sales\" from attribute dept",
            "last_name = \"Unknown\" from default",
        ] {
            assert!(text.iter().any(|t| t == want), "{want:?} not in {text:#?}");
        }
    }

    #[test]
    fn friendly_name_matches_after_name() {
        let attrs = vec![attr("urn:oid:2.5.4.42", Some("givenName"), &["Carol"])];
        let input = MappingInput {
            name_id: Some("c@example.com"),
            attributes: &attrs,
        };
        let mut m = Mapping::default();
        m.first_name = FieldRule::new(&["givenName"], vec![]);
        assert_eq!(
            m.apply(&input, &mut Trace::off()).unwrap().first_name,
            "Carol"
        );
    }

    #[test]
    fn rules_first_license_wins_and_groups_accumulate() {
        let attrs = vec![attr(
            "memberOf",
            None,
            &["CN=Meetings-Licensed,OU=Groups", "CN=Staff"],
        )];
        let input = MappingInput {
            name_id: Some("d@example.com"),
            attributes: &attrs,
        };
        let mut m = Mapping::default();
        m.rules = vec![
            Rule {
                name: "licensed".into(),
                source: Source::parse("memberOf"),
                matcher: Matcher::Contains("meetings-licensed".into()),
                negate: false,
                ignore_case: true,
                license: Some(License::Licensed),
                groups: vec!["licensed".into()],
                features: vec!["recording".into()],
                admin: false,
            },
            Rule {
                name: "onprem".into(),
                source: Source::parse("memberOf"),
                matcher: Matcher::Regex(Regex::new("^CN=Staff$").unwrap()),
                negate: false,
                ignore_case: false,
                license: Some(License::OnPrem),
                groups: vec![],
                features: vec!["webinar".into()],
                admin: false,
            },
            Rule {
                name: "not-contractor".into(),
                source: Source::parse("memberOf"),
                matcher: Matcher::Equals("CN=Contractors".into()),
                negate: true,
                ignore_case: false,
                license: None,
                groups: vec!["employees".into()],
                features: vec![],
                admin: false,
            },
        ];
        let mut trace = Trace::collecting();
        let u = m.apply(&input, &mut trace).unwrap();
        assert_eq!(u.license, License::Licensed);
        assert_eq!(u.features, vec!["recording", "webinar"]);
        assert!(u.groups.contains(&"licensed".to_string()));
        assert!(u.groups.contains(&"employees".to_string()));
        assert!(
            trace
                .into_lines()
                .iter()
                .any(|t| t.detail.contains("ignored"))
        );
    }

    #[test]
    fn split_and_regex_transforms() {
        let attrs = vec![attr("groups", None, &["a, b,,c"])];
        let input = MappingInput {
            name_id: Some("e@example.com"),
            attributes: &attrs,
        };
        let mut m = Mapping::default();
        m.groups = FieldRule::new(&["groups"], vec![Transform::Split(",".into())]);
        m.first_name = FieldRule::new(
            &["nameid"],
            vec![Transform::Regex(Regex::new("^([^@]+)@").unwrap())],
        );
        let u = m.apply(&input, &mut Trace::off()).unwrap();
        assert_eq!(u.groups, vec!["a", "b", "c"]);
        assert_eq!(u.first_name, "e");
    }

    /// Deduplication keeps the first appearance, on both sides of the
    /// switch to the hash set.
    #[test]
    fn unique_values_keep_first_appearance() {
        for n in [1usize, Unique::FEW, Unique::FEW + 1, 500] {
            let mut u = Unique::default();
            for round in 0..2 {
                for i in (0..n).rev() {
                    u.push(format!("g{i}"));
                }
                let _ = round;
            }
            let want: Vec<String> = (0..n).rev().map(|i| format!("g{i}")).collect();
            assert_eq!(u.list, want, "{n}");
        }
    }

    #[test]
    fn email_shape() {
        assert!(is_email_shaped("a@b.co"));
        assert!(!is_email_shaped("a@b"));
        assert!(!is_email_shaped("a b@c.d"));
        assert!(!is_email_shaped("@c.d"));
        assert!(!is_email_shaped("a@c.d@e.f"));
    }
}
