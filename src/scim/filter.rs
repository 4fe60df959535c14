//! SCIM filters (RFC 7644 §3.4.2.2) and attribute paths, evaluated over a
//! resource's JSON representation.
//!
//! Grammar: `attrPath pr`, `attrPath op value` (`eq ne co sw ew gt ge lt
//! le`), `attrPath[filter]` (a value filter over a multi-valued attribute),
//! `not (filter)`, `(filter)`, and `and` / `or` (`and` binds tighter).
//! Attribute names and operators are case-insensitive; string comparisons
//! are too, except for the case-exact attributes `id` and `externalId`.
//!
//! Bounded: at most [`MAX_FILTER`] bytes, [`MAX_TERMS`] comparisons and
//! [`MAX_DEPTH`] levels of nesting; beyond, `invalidFilter`.

use serde_json::Value;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER: usize = 4096;
/// Most comparisons in one filter.
pub const MAX_TERMS: usize = 64;
/// Deepest nesting of parentheses, `not` and value filters.
pub const MAX_DEPTH: usize = 16;

/// Why a filter or path is refused (the `detail` of an `invalidFilter` or
/// `invalidPath` error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

/// An attribute path: `[schema:]name[.sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN, when the path named one.
    pub schema: Option<String>,
    /// The attribute.
    pub name: String,
    /// The sub-attribute.
    pub sub: Option<String>,
}

impl AttrPath {
    /// Parses `urn:...:User:name.sub`, `name.sub` or `name`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let (schema, rest) = if text
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        {
            match text.rsplit_once(':') {
                Some((s, a)) => (Some(s.to_owned()), a),
                None => return fail(format!("bad attribute path {text:?}")),
            }
        } else {
            (None, text)
        };
        let (name, sub) = match rest.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (rest, None),
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
        };
        if !ok(name) || sub.is_some_and(|s| !ok(s)) {
            return fail(format!("bad attribute path {text:?}"));
        }
        Ok(Self {
            schema,
            name: name.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }

    /// Whether values of this attribute compare case-sensitively.
    fn case_exact(&self) -> bool {
        self.sub.is_none()
            && (self.name.eq_ignore_ascii_case("id")
                || self.name.eq_ignore_ascii_case("externalId"))
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater or equal
    Ge,
    /// less than
    Lt,
    /// less or equal
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr pr`
    Present(AttrPath),
    /// `attr op value`
    Compare(AttrPath, Op, Value),
    /// `attr[filter]`
    ValuePath(AttrPath, Box<Filter>),
    /// `a and b`
    And(Box<Filter>, Box<Filter>),
    /// `a or b`
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`
    Not(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    LBracket,
    RBracket,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, FilterError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '[' => {
                chars.next();
                out.push(Tok::LBracket);
            }
            ']' => {
                chars.next();
                out.push(Tok::RBracket);
            }
            '"' => {
                // A JSON string: find its end, then let serde decode the
                // escapes.
                chars.next();
                let mut end = None;
                let mut escaped = false;
                for (j, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' {
                        end = Some(j);
                        break;
                    }
                }
                let Some(end) = end else {
                    return fail("unterminated string");
                };
                let raw = text.get(i..=end).unwrap_or("\"\"");
                match serde_json::from_str::<String>(raw) {
                    Ok(s) => out.push(Tok::Str(s)),
                    Err(_) => return fail("bad string escape"),
                }
            }
            _ => {
                let mut end = text.len();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_whitespace() || matches!(d, '(' | ')' | '[' | ']' | '"') {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                out.push(Tok::Word(text.get(i..end).unwrap_or("").to_owned()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if depth > MAX_DEPTH {
            return fail("filter nested too deeply");
        }
        let mut left = self.and(depth)?;
        while self.peek_word("or") {
            self.next();
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.unary(depth)?;
        while self.peek_word("and") {
            self.next();
            let right = self.unary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if self.peek_word("not") {
            self.next();
            if self.next() != Some(Tok::Open) {
                return fail("\"not\" must be followed by \"(\"");
            }
            let f = self.or(depth + 1)?;
            if self.next() != Some(Tok::Close) {
                return fail("missing \")\"");
            }
            return Ok(Filter::Not(Box::new(f)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.next();
            let f = self.or(depth + 1)?;
            if self.next() != Some(Tok::Close) {
                return fail("missing \")\"");
            }
            return Ok(f);
        }
        self.term(depth)
    }

    fn term(&mut self, depth: usize) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return fail(format!("more than {MAX_TERMS} comparisons"));
        }
        let Some(Tok::Word(path)) = self.next() else {
            return fail("expected an attribute name");
        };
        let path = AttrPath::parse(&path)?;
        if self.peek() == Some(&Tok::LBracket) {
            self.next();
            let inner = self.or(depth + 1)?;
            if self.next() != Some(Tok::RBracket) {
                return fail("missing \"]\"");
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let Some(Tok::Word(op)) = self.next() else {
            return fail("expected an operator");
        };
        if op.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let Some(op) = Op::parse(&op) else {
            return fail(format!("unknown operator {op:?}"));
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => match serde_json::from_str::<serde_json::Number>(&w) {
                    Ok(n) => Value::Number(n),
                    Err(_) => return fail(format!("bad comparison value {w:?}")),
                },
            },
            _ => return fail("expected a comparison value"),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

/// Parses a filter.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    if text.len() > MAX_FILTER {
        return fail(format!("the filter is longer than {MAX_FILTER} bytes"));
    }
    let toks = tokenize(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        terms: 0,
    };
    let f = p.or(0)?;
    if p.pos < p.toks.len() {
        return fail("unexpected text after the filter");
    }
    Ok(f)
}

/// `obj[name]`, the name compared case-insensitively.
pub fn get_ci<'v>(obj: &'v Value, name: &str) -> Option<&'v Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The values `path` names in `resource` (an array attribute gives each of
/// its elements, or each element's sub-attribute).
fn values<'v>(resource: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let base = match &path.schema {
        Some(s) => {
            let Some(ext) = get_ci(resource, s) else {
                // The core schema's own URN names top-level attributes.
                return if s.to_ascii_lowercase().contains(":core:") {
                    values(
                        resource,
                        &AttrPath {
                            schema: None,
                            ..path.clone()
                        },
                    )
                } else {
                    Vec::new()
                };
            };
            get_ci(ext, &path.name)
        }
        None => get_ci(resource, &path.name).or_else(|| {
            // An extension attribute named without its schema.
            resource.as_object().and_then(|o| {
                o.iter()
                    .filter(|(k, _)| k.starts_with("urn:"))
                    .find_map(|(_, ext)| get_ci(ext, &path.name))
            })
        }),
    };
    let Some(v) = base else { return Vec::new() };
    let elems: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    match &path.sub {
        Some(sub) => elems.into_iter().filter_map(|e| get_ci(e, sub)).collect(),
        None => elems
            .into_iter()
            // `emails eq "x"` compares each element's `value`.
            .map(|e| {
                if e.is_object() {
                    get_ci(e, "value").unwrap_or(e)
                } else {
                    e
                }
            })
            .collect(),
    }
}

fn compare(have: &Value, op: Op, want: &Value, exact: bool) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (have, want) {
        (Value::String(a), Value::String(b)) => {
            let (a, b) = if exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                Op::Co => return a.contains(&b),
                Op::Sw => return a.starts_with(&b),
                Op::Ew => return a.ends_with(&b),
                _ => Some(a.cmp(&b)),
            }
        }
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::Bool(a), Value::Bool(b)) => match op {
            Op::Eq => return a == b,
            Op::Ne => return a != b,
            _ => None,
        },
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Ne, None) => true,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        _ => false,
    }
}

/// Whether `resource` matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, resource) && matches(b, resource),
        Filter::Or(a, b) => matches(a, resource) || matches(b, resource),
        Filter::Not(a) => !matches(a, resource),
        Filter::Present(p) => values(resource, p).iter().any(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }),
        Filter::Compare(p, op, want) => {
            let have = values(resource, p);
            if *op == Op::Ne {
                // `ne` holds when no value equals.
                return !have
                    .iter()
                    .any(|v| compare(v, Op::Eq, want, p.case_exact()));
            }
            have.iter().any(|v| compare(v, *op, want, p.case_exact()))
        }
        Filter::ValuePath(p, inner) => {
            let Some(arr) = (match &p.schema {
                Some(s) => get_ci(resource, s).and_then(|e| get_ci(e, &p.name)),
                None => get_ci(resource, &p.name),
            }) else {
                return false;
            };
            match arr {
                Value::Array(a) => a.iter().any(|e| matches(inner, e)),
                other => matches(inner, other),
            }
        }
    }
}

/// `attr eq "value"` on exactly this attribute (no schema, no
/// sub-attribute): the value. Lets a lookup by `userName` or `id` skip the
/// scan.
pub fn equality_on<'f>(filter: &'f Filter, attr: &str) -> Option<&'f str> {
    match filter {
        Filter::Compare(p, Op::Eq, Value::String(v))
            if p.sub.is_none()
                && p.name.eq_ignore_ascii_case(attr)
                && p.schema
                    .as_deref()
                    .is_none_or(|s| s.to_ascii_lowercase().contains(":core:")) =>
        {
            Some(v)
        }
        _ => None,
    }
}

/// A PATCH path: `attrPath`, or `attrPath[filter]` with an optional
/// `.sub` after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (its `sub` is the part after `.`, outside brackets).
    pub attr: AttrPath,
    /// The value filter, when bracketed.
    pub filter: Option<Filter>,
    /// The sub-attribute after the brackets.
    pub sub: Option<String>,
}

/// Parses a PATCH `path`.
pub fn parse_path(text: &str) -> Result<PatchPath, FilterError> {
    let text = text.trim();
    if text.len() > MAX_FILTER {
        return fail("the path is too long");
    }
    let Some(open) = text.find('[') else {
        return Ok(PatchPath {
            attr: AttrPath::parse(text)?,
            filter: None,
            sub: None,
        });
    };
    let Some(close) = text.rfind(']') else {
        return fail("missing \"]\" in the path");
    };
    let (head, inner, tail) = (
        text.get(..open).unwrap_or(""),
        text.get(open + 1..close).unwrap_or(""),
        text.get(close + 1..).unwrap_or(""),
    );
    let attr = AttrPath::parse(head)?;
    if attr.sub.is_some() {
        return fail("a value filter follows a multi-valued attribute, not a sub-attribute");
    }
    let sub = match tail {
        "" => None,
        t => match t.strip_prefix('.') {
            Some(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Some(s.to_owned())
            }
            _ => return fail(format!("bad text after the value filter: {t:?}")),
        },
    };
    Ok(PatchPath {
        attr,
        filter: Some(parse(inner)?),
        sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "AbC", "externalId": "Ext-1", "userName": "Bob@Example.com",
            "displayName": "Bob Smith", "active": true,
            "name": {"givenName": "Bob", "familyName": "Smith"},
            "emails": [{"value": "bob@example.com", "type": "work", "primary": true},
                       {"value": "bob@home.example", "type": "home"}],
            "meta": {"lastModified": "2026-01-02T00:00:00Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}
        })
    }

    fn m(f: &str) -> bool {
        matches(&parse(f).unwrap(), &user())
    }

    #[test]
    fn comparisons_and_logic() {
        assert!(m(r#"userName eq "bob@example.com""#));
        assert!(m(r#"USERNAME Eq "BOB@EXAMPLE.COM""#));
        assert!(!m(r#"externalId eq "ext-1""#), "externalId is case-exact");
        assert!(m(r#"externalId eq "Ext-1""#));
        assert!(m(r#"displayName co "smi""#));
        assert!(m(r#"displayName sw "bob" and displayName ew "SMITH""#));
        assert!(m(r#"userName eq "x" or active eq true"#));
        assert!(!m(r#"active eq false"#));
        assert!(m(r#"not (active eq false)"#));
        assert!(m(r#"emails.value eq "bob@home.example""#));
        assert!(m(r#"emails eq "bob@home.example""#));
        assert!(m(r#"emails[type eq "work" and value co "example.com"]"#));
        assert!(!m(r#"emails[type eq "other"]"#));
        assert!(m(r#"name.familyName pr"#));
        assert!(!m(r#"title pr"#));
        assert!(m(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "sales""#
        ));
        assert!(m(r#"department eq "Sales""#));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bob""#
        ));
        assert!(m(
            r#"(userName eq "nope" or displayName eq "bob smith") and active eq true"#
        ));
        assert!(m(r#"userName ne "alice@example.com""#));
        // and binds tighter than or
        assert!(m(
            r#"userName eq "x" and active eq false or active eq true"#
        ));
    }

    #[test]
    fn refusals_are_invalid_filter_errors() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName zz "x""#,
            r#"userName eq "x"#,
            r#"(userName eq "x""#,
            r#"userName eq "x" and"#,
            r#"userName eq "x" garbage"#,
            r#"emails[type eq "work""#,
            r#"user$Name!! eq "x""#,
            "userName eq bogus",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let deep = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).is_err());
        let many = vec![r#"userName eq "x""#; 100].join(" or ");
        assert!(parse(&many).is_err());
        assert!(parse(&"a".repeat(MAX_FILTER + 1)).is_err());
    }

    #[test]
    fn equality_shortcut() {
        let f = parse(r#"userName eq "A@x.example""#).unwrap();
        assert_eq!(equality_on(&f, "username"), Some("A@x.example"));
        let f = parse(r#"userName eq "a" and active eq true"#).unwrap();
        assert_eq!(equality_on(&f, "userName"), None);
        let f = parse(r#"emails.userName eq "a""#).unwrap();
        assert_eq!(equality_on(&f, "userName"), None);
    }

    #[test]
    fn patch_paths() {
        let p = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr.name, "emails");
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert!(p.filter.is_some());
        let p = parse_path("name.givenName").unwrap();
        assert_eq!(
            (p.attr.name.as_str(), p.attr.sub.as_deref()),
            ("name", Some("givenName"))
        );
        let p = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
            .unwrap();
        assert_eq!(p.attr.name, "department");
        assert!(p.attr.schema.unwrap().ends_with("enterprise:2.0:User"));
        let p = parse_path(r#"members[value eq "2819c223"]"#).unwrap();
        assert_eq!(p.attr.name, "members");
        assert!(parse_path(r#"emails[type eq "work"]x"#).is_err());
        assert!(parse_path("").is_err());
    }
}
