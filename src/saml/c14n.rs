//! Exclusive XML canonicalisation (`xml-exc-c14n#`, without comments) of an
//! element subtree of the parsed document, as XML-DSig needs it for the SAML
//! signature profile: the signed element minus its enveloped Signature, and
//! SignedInfo.
//!
//! Rules (W3C Exclusive XML Canonicalization 1.0 and C14N 1.0):
//!
//! * an element renders only the namespaces it visibly uses (its own prefix,
//!   or the default namespace when unprefixed, and its attributes' prefixes;
//!   never `xml`), skipping one an output ancestor already rendered with the
//!   same value; `xmlns=""` only when an output ancestor rendered a non-empty
//!   default. Prefixes in the `InclusiveNamespaces` PrefixList (`#default` for
//!   the default namespace) follow the inclusive rules instead: rendered
//!   wherever in scope and not already rendered with that value. The apex
//!   inherits declarations from its ancestors in the document.
//! * declarations sort by prefix (default first), attributes by namespace URI
//!   then local name (unqualified first); a QName inside an attribute value
//!   does not count as use.
//! * text escapes `& < >` and CR; attribute values `& < "`, TAB, LF, CR;
//!   empty elements are written as start/end pairs; comments are dropped
//!   (the parser already joined the text around them); CDATA is text.

use std::borrow::Cow;

use super::xml::{Attr, Element, Node, same, same_opt};

/// A namespace binding: prefix (`None` = default) and URI.
type Binding<'a> = (Option<&'a str>, &'a str);

/// Canonicalises `apex` into `out`. The declarations of the apex's
/// ancestors in the document are in scope at the apex; `exclude` is an
/// element left out with its subtree (the enveloped Signature); `inclusive`
/// is the PrefixList (`None` for `#default`).
pub fn canonicalize(
    apex: Element<'_>,
    exclude: Option<Element<'_>>,
    inclusive: &[Option<&str>],
    out: &mut Vec<u8>,
) {
    let mut c = Canon {
        scope: Vec::with_capacity(16),
        rendered: Vec::with_capacity(16),
        inclusive,
        exclude,
        cands: Vec::with_capacity(8),
        attrs: Vec::with_capacity(8),
        at_apex: true,
    };
    let mut ancestors = Vec::with_capacity(8);
    let mut up = apex.parent();
    while let Some(a) = up {
        ancestors.push(a);
        up = a.parent();
    }
    // From the root down, so inner declarations come last (and win).
    for a in ancestors.iter().rev() {
        for d in a.ns_decls() {
            c.scope.push((d.prefix, d.uri.as_ref()));
        }
    }
    c.element(apex, out);
}

/// Parses an `InclusiveNamespaces` PrefixList (`#default` → `None`).
pub fn prefix_list(list: &str) -> Vec<Option<&str>> {
    let mut out: Vec<Option<&str>> = Vec::new();
    for p in list.split_ascii_whitespace() {
        let p = if p == "#default" { None } else { Some(p) };
        // The pre-check caps the list's length, so this stays short.
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

struct Canon<'a> {
    /// In-scope bindings, innermost last.
    scope: Vec<Binding<'a>>,
    /// Bindings rendered by output ancestors, innermost last.
    rendered: Vec<Binding<'a>>,
    inclusive: &'a [Option<&'a str>],
    exclude: Option<Element<'a>>,
    /// Scratch buffers, reused per element (free again before recursing).
    cands: Vec<Option<&'a str>>,
    attrs: Vec<&'a Attr<'a>>,
    /// The next element canonicalised is the apex.
    at_apex: bool,
}

fn lookup<'a>(stack: &[Binding<'a>], prefix: Option<&str>) -> Option<&'a str> {
    stack
        .iter()
        .rev()
        .find(|(p, _)| same_opt(*p, prefix))
        .map(|(_, uri)| *uri)
}

impl<'a> Canon<'a> {
    fn element(&mut self, e: Element<'a>, out: &mut Vec<u8>) {
        let scope_len = self.scope.len();
        let rendered_len = self.rendered.len();
        let (prefix, name, attrs_of) = (e.prefix(), e.name(), e.attrs());
        for d in e.ns_decls() {
            self.scope.push((d.prefix, d.uri.as_ref()));
        }
        // Candidate prefixes: visibly used, then the inclusive list.
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        // `xml` is never rendered, even when an explicit `xmlns:xml` is in
        // scope (exclusive c14n, as libxml2 does it).
        if prefix != Some("xml") {
            cands.push(prefix);
        }
        for a in attrs_of {
            if let Some(p) = a.prefix
                && p != "xml"
                && !cands.iter().any(|c| same_opt(*c, Some(p)))
            {
                cands.push(Some(p));
            }
        }
        // An inclusive prefix renders where its in-scope value differs from
        // what an output ancestor rendered: at the apex, and after that only
        // where an element declares it (every element between the apex and
        // here is output, and each left it rendered as it was in scope). So
        // below the apex only this element's own declarations are looked up
        // in the list, and a long list costs nothing per element.
        let listed = |p: Option<&str>| p != Some("xml") && self.inclusive.contains(&p);
        if self.at_apex {
            for p in self.inclusive {
                if *p != Some("xml") && !cands.iter().any(|c| same_opt(*c, *p)) {
                    cands.push(*p);
                }
            }
            self.at_apex = false;
        } else {
            for d in e.ns_decls() {
                if listed(d.prefix) && !cands.iter().any(|c| same_opt(*c, d.prefix)) {
                    cands.push(d.prefix);
                }
            }
        }
        for &p in &cands {
            let uri = match (p, lookup(&self.scope, p)) {
                (_, Some(u)) => u,
                (None, None) => "",
                // A listed prefix not in scope here: nothing to render.
                (Some(_), None) => continue,
            };
            let prev = lookup(&self.rendered, p);
            let render = if p.is_none() && uri.is_empty() {
                prev.is_some_and(|v| !v.is_empty())
            } else {
                !prev.is_some_and(|v| same(v, uri))
            };
            if render {
                self.rendered.push((p, uri));
            }
        }
        self.cands = cands;
        // This element's declarations are the tail of `rendered`. Default
        // (None) sorts before any prefix, prefixes by code point.
        let decls = self.rendered.get_mut(rendered_len..).unwrap_or_default();
        decls.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        out.push(b'<');
        write_qname(out, prefix, name);
        for (p, uri) in self.rendered.get(rendered_len..).unwrap_or_default() {
            out.extend_from_slice(b" xmlns");
            if let Some(p) = p {
                out.push(b':');
                out.extend_from_slice(p.as_bytes());
            }
            out.extend_from_slice(b"=\"");
            escape_attr_str(out, uri, any_byte(uri.as_bytes(), 2));
            out.push(b'"');
        }
        let mut attrs = std::mem::take(&mut self.attrs);
        attrs.clear();
        attrs.extend(attrs_of.iter());
        if attrs.len() > 1 {
            // Unqualified first (a namespace name is never empty), then by
            // namespace URI, then local name.
            attrs.sort_unstable_by(|a, b| match (&a.ns, &b.ns) {
                (None, None) => a.name.cmp(b.name),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.cmp(y).then_with(|| a.name.cmp(b.name)),
            });
        }
        for a in attrs.iter() {
            out.push(b' ');
            write_qname(out, a.prefix, a.name);
            out.extend_from_slice(b"=\"");
            escape_attr(out, &a.value);
            out.push(b'"');
        }
        self.attrs = attrs;
        out.push(b'>');
        for child in e.children() {
            match child {
                Node::Text(t) => escape_text(out, t),
                Node::Element(c) => {
                    if self.exclude != Some(c) {
                        self.element(c, out);
                    }
                }
            }
        }
        out.extend_from_slice(b"</");
        write_qname(out, prefix, name);
        out.push(b'>');
        self.scope.truncate(scope_len);
        self.rendered.truncate(rendered_len);
    }
}

fn write_qname(out: &mut Vec<u8>, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.extend_from_slice(p.as_bytes());
        out.push(b':');
    }
    out.extend_from_slice(local.as_bytes());
}

/// Text node escaping: `&`, `<`, `>`, CR.
fn escape_text(out: &mut Vec<u8>, s: &str) {
    if !text_needs_escape(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    escape(out, s, |b| match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    });
}

/// Attribute value escaping: `&`, `<`, `"`, TAB, LF, CR.
#[allow(clippy::ptr_arg)] // whether it borrows from the input matters
fn escape_attr(out: &mut Vec<u8>, value: &Cow<'_, str>) {
    let needed = match value {
        // The parser borrows a value from the input only when it holds no
        // `&`, `<` or control character (TAB, LF, CR included): only a `"`
        // (from a single-quoted value) can need escaping.
        Cow::Borrowed(b) => memchr::memchr(b'"', b.as_bytes()).is_some(),
        Cow::Owned(s) => any_byte(s.as_bytes(), 2),
    };
    escape_attr_str(out, value, needed);
}

/// Writes an attribute value, escaped when `needed`.
fn escape_attr_str(out: &mut Vec<u8>, s: &str, needed: bool) {
    if !needed {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    escape(out, s, |b| match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'"' => Some(b"&quot;"),
        b'\t' => Some(b"&#x9;"),
        b'\n' => Some(b"&#xA;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    });
}

/// Whether text holds a byte canonical text escapes: one SIMD search for
/// `&`, `<`, `>` and one for CR on longer runs (a certificate, a signature
/// value), the table below on short ones.
fn text_needs_escape(b: &[u8]) -> bool {
    if b.len() < 32 {
        return any_byte(b, 1);
    }
    memchr::memchr3(b'&', b'<', b'>', b).is_some() || memchr::memchr(b'\r', b).is_some()
}

/// Bytes canonical text escapes (bit 1) and attribute values escape (bit 2).
// Evaluated at compile time: an index out of bounds would fail the build.
#[allow(clippy::indexing_slicing)]
static ESCAPED: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'&' as usize] = 3;
    t[b'<' as usize] = 3;
    t[b'>' as usize] = 1;
    t[b'\r' as usize] = 3;
    t[b'"' as usize] = 2;
    t[b'\t' as usize] = 2;
    t[b'\n' as usize] = 2;
    t
};

/// Whether any byte of `b` is in the `class` of [`ESCAPED`] (nearly every
/// value and text run has none, and is then copied in one piece).
fn any_byte(b: &[u8], class: u8) -> bool {
    b.iter()
        .any(|&c| ESCAPED.get(usize::from(c)).is_some_and(|k| k & class != 0))
}

/// Copies `s`, replacing each byte `rep` maps (all ASCII, so never inside a
/// multi-byte character).
fn escape(out: &mut Vec<u8>, s: &str, rep: impl Fn(u8) -> Option<&'static [u8]>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(r) = rep(b) {
            out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
            out.extend_from_slice(r);
            start = i + 1;
        }
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::xml::parse;

    fn c14n(xml: &str, inclusive: &[Option<&str>]) -> String {
        let doc = parse(xml).unwrap();
        let mut out = Vec::new();
        canonicalize(doc.root(), None, inclusive, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn unused_namespaces_dropped_used_ones_rendered_once() {
        assert_eq!(
            c14n(
                r#"<p:a xmlns:p="urn:p" xmlns:q="urn:q" xmlns:xs="urn:xs" z="1" q:y="2" b="&amp;&lt;&gt;&quot;'"><p:b xmlns:p="urn:p" t="xs:string">x &amp; &lt; &gt; "</p:b><c/></p:a>"#,
                &[]
            ),
            r#"<p:a xmlns:p="urn:p" xmlns:q="urn:q" b="&amp;&lt;>&quot;'" z="1" q:y="2"><p:b t="xs:string">x &amp; &lt; &gt; "</p:b><c></c></p:a>"#
        );
    }

    #[test]
    fn default_namespace_and_empty_default() {
        assert_eq!(
            c14n(r#"<a xmlns="urn:d"><b xmlns=""><c/></b><d/></a>"#, &[]),
            r#"<a xmlns="urn:d"><b xmlns=""><c></c></b><d></d></a>"#
        );
        // No default rendered above: xmlns="" is not written.
        assert_eq!(c14n(r#"<a><b xmlns=""/></a>"#, &[]), "<a><b></b></a>");
    }

    /// libxml2 never renders `xmlns:xml`, even for an element in the xml
    /// namespace under an explicit declaration of it.
    #[test]
    fn explicit_xmlns_xml_is_never_rendered() {
        let doc = r#"<a xmlns:xml="http://www.w3.org/XML/1998/namespace"><xml:n>x</xml:n></a>"#;
        assert_eq!(c14n(doc, &[]), "<a><xml:n>x</xml:n></a>");
        assert_eq!(c14n(doc, &[Some("xml")]), "<a><xml:n>x</xml:n></a>");
    }

    #[test]
    fn inclusive_prefixes_render_at_the_apex() {
        assert_eq!(
            c14n(
                r#"<p:a xmlns:p="urn:p" xmlns:xs="urn:xs" xmlns="urn:d"><p:b/></p:a>"#,
                &[Some("xs"), None]
            ),
            r#"<p:a xmlns="urn:d" xmlns:p="urn:p" xmlns:xs="urn:xs"><p:b></p:b></p:a>"#
        );
    }

    #[test]
    fn whitespace_references_in_attributes_and_text() {
        assert_eq!(
            c14n("<a k=\"x&#9;y&#xA;z&#xD;\">1&#xD;2</a>", &[]),
            "<a k=\"x&#x9;y&#xA;z&#xD;\">1&#xD;2</a>"
        );
    }
}
