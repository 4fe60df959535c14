//! A small, bounded, namespace-resolved XML tree built on quick-xml.
//!
//! SAML messages are small (the decode step caps them), so one pass into a
//! tree that borrows names, values and text from the input (copies only
//! where entities or line endings had to be decoded) is cheap and lets every
//! check, the canonicaliser and the signature verifier read the same parse.
//! The builder refuses what a SAML message never needs and attackers love:
//! DOCTYPE (and with it DTDs, entity expansion and XXE), processing
//! instructions, undefined entity references, invalid character references
//! and excessive nesting. Comments between elements are dropped. A comment
//! beside text (`<NameID>admin@example.com<!---->.evil.org</NameID>`, the
//! comment-injection attack) is refused outright: no IdP writes one, and
//! libxmlsec1's reduce step cannot match such text either. Text is always read
//! whole (adjacent runs, entities and CDATA joined), never a truncated prefix.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::error::SamlError;

/// Maximum element nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// SAML 2.0 protocol namespace.
pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 assertion namespace.
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// XML-DSig namespace.
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// XML-Enc namespace.
pub const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
/// The namespace bound to the `xml` prefix.
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Exclusive c14n namespace (InclusiveNamespaces).
pub const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// One attribute, its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Namespace URI, `None` for unprefixed attributes.
    pub ns: Option<Cow<'a, str>>,
    /// The prefix as written (canonicalisation writes it back).
    pub prefix: Option<&'a str>,
    /// Local name.
    pub name: &'a str,
    /// Value after entity and whitespace normalisation.
    pub value: Cow<'a, str>,
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    /// A child element.
    Element(Element<'a>),
    /// Character data (text and CDATA, comments removed, adjacent runs joined).
    Text(Cow<'a, str>),
}

/// A namespace declaration written on an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsDecl<'a> {
    /// The prefix declared, `None` for the default namespace.
    pub prefix: Option<&'a str>,
    /// The namespace URI (empty for `xmlns=""`).
    pub uri: Cow<'a, str>,
}

/// An element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element<'a> {
    /// Namespace URI, `None` when unqualified.
    pub ns: Option<Cow<'a, str>>,
    /// The prefix as written, `None` when unprefixed.
    pub prefix: Option<&'a str>,
    /// Local name.
    pub name: &'a str,
    /// Attributes, namespace declarations excluded.
    pub attrs: Vec<Attr<'a>>,
    /// Namespace declarations on this element, in document order.
    pub ns_decls: Vec<NsDecl<'a>>,
    /// Children in document order.
    pub children: Vec<Node<'a>>,
}

impl<'a> Element<'a> {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        // The local name first: short, and where elements usually differ
        // (namespace URIs are long and share prefixes).
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// A readable `prefix-free` name for messages, e.g. `{urn:..}Response`.
    pub fn display_name(&self) -> String {
        match &self.ns {
            Some(ns) => format!("{{{ns}}}{}", self.name),
            None => self.name.to_owned(),
        }
    }

    /// The value of the unqualified attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_ref())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element<'a>> {
        self.children.iter().filter_map(|c| match c {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements named `{ns}name`.
    pub fn children_named<'s>(
        &'s self,
        ns: &'s str,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.elements().filter(move |e| e.is(ns, name))
    }

    /// The first child element named `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element<'a>> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// All descendant text, concatenated (XPath `string()`).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        for c in &self.children {
            match c {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => e.collect_text(out),
            }
        }
    }

    /// Depth-first walk over this element and its descendants, with each
    /// element's parent (None for `self`).
    pub fn walk<'s>(&'s self, f: &mut dyn FnMut(&'s Element<'a>, Option<&'s Element<'a>>)) {
        f(self, None);
        self.walk_children(f);
    }

    fn walk_children<'s>(&'s self, f: &mut dyn FnMut(&'s Element<'a>, Option<&'s Element<'a>>)) {
        for e in self.elements() {
            f(e, Some(self));
            e.walk_children(f);
        }
    }
}

/// Parses `xml` into a tree, refusing DOCTYPE, processing instructions,
/// undefined entities and nesting deeper than [`MAX_DEPTH`].
pub fn parse(xml: &str) -> Result<Element<'_>, SamlError> {
    let mut reader = Reader::from_str(xml);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
    }
    let mut p = Parser {
        xml,
        stack: Vec::with_capacity(16),
        mixed: Vec::with_capacity(16),
        pending: Vec::with_capacity(64),
        bindings: Vec::with_capacity(16),
        root: None,
        scratch: Vec::with_capacity(8),
        uris: Vec::with_capacity(8),
    };
    let mut seen_decl = false;
    let mut seen_anything = false;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| SamlError::MalformedXml(format!("{e} (near byte {pos})")))?;
        match event {
            Event::Decl(d) => {
                let at_start = matches!(xml.get(..pos as usize), Some("" | "\u{feff}"));
                if seen_decl || seen_anything || !at_start {
                    return Err(SamlError::MalformedXml(
                        "XML declaration not at the start of the document".into(),
                    ));
                }
                check_decl(p.borrow(&d)?)?;
                seen_decl = true;
            }
            Event::DocType(_) => return Err(SamlError::DtdForbidden),
            Event::PI(pi) => {
                let target = String::from_utf8_lossy(pi.target()).into_owned();
                return Err(SamlError::ProcessingInstruction(target));
            }
            Event::Start(ref s) => {
                seen_anything = true;
                let el = p.open(s)?;
                p.stack.push(el);
                p.mixed.push((false, false, p.pending.len()));
            }
            Event::Empty(ref s) => {
                seen_anything = true;
                let el = p.open(s)?;
                p.close(el, p.pending.len());
            }
            Event::End(_) => {
                let el = p
                    .stack
                    .pop()
                    .ok_or_else(|| SamlError::MalformedXml("unbalanced end tag".into()))?;
                let start = p.mixed.pop().map_or(0, |f| f.2);
                p.close(el, start);
            }
            Event::Text(t) => {
                let raw = p.borrow(&t)?;
                let b = raw.as_bytes();
                if memchr::memchr_iter(b'>', b).any(|i| i >= 2 && b.get(i - 2..i) == Some(b"]]")) {
                    return Err(SamlError::MalformedXml("']]>' in text".into()));
                }
                p.text(line_ends(raw))?;
            }
            Event::CData(c) => {
                let raw = p.borrow(&c)?;
                p.text(line_ends(raw))?;
            }
            Event::GeneralRef(r) => {
                let ch = reference_char(p.borrow(&r)?)?;
                p.text(Cow::Owned(ch.to_string()))?;
            }
            Event::Comment(c) => {
                // A comment is dropped, but must still be well-formed.
                check_chars(p.borrow(&c)?)?;
                if c.windows(2).any(|w| w == b"--") || c.ends_with(b"-") {
                    return Err(SamlError::MalformedXml("'--' inside a comment".into()));
                }
                if let Some(frame) = p.mixed.last_mut() {
                    frame.0 = true;
                    if frame.1 {
                        return Err(comment_in_text(&p.stack));
                    }
                }
            }
            Event::Eof => break,
        }
    }
    if !p.stack.is_empty() {
        return Err(SamlError::MalformedXml(
            "document ends inside an element (truncated?)".into(),
        ));
    }
    p.root
        .ok_or_else(|| SamlError::MalformedXml("no root element".into()))
}

/// Parser state: open elements, comment/text bookkeeping, namespace bindings.
struct Parser<'a> {
    xml: &'a str,
    stack: Vec<Element<'a>>,
    /// Per open element: (saw a comment, saw non-whitespace text, where
    /// its children start in `pending`).
    mixed: Vec<(bool, bool, usize)>,
    /// Children of the open elements, innermost last: an element's are
    /// moved into one exactly-sized vector when it closes (instead of a
    /// vector per element growing child by child).
    pending: Vec<Node<'a>>,
    /// In-scope namespace bindings, innermost last; each open element's
    /// declarations are popped when it closes.
    bindings: Vec<(Option<&'a str>, Cow<'a, str>)>,
    root: Option<Element<'a>>,
    /// Reused per start tag: (prefix, local name, raw name, value).
    scratch: Vec<RawAttr<'a>>,
    /// Namespace names already found absolute in this document (IdPs
    /// declare the same few again and again).
    uris: Vec<&'a str>,
}

/// An attribute before its prefix is resolved.
type RawAttr<'a> = (Option<&'a str>, &'a str, &'a str, Cow<'a, str>);

impl<'a> Parser<'a> {
    /// `bytes` (a slice of the input handed back by quick-xml) as a `&'a str`
    /// of the input, located by address; `None` if it is not part of the input.
    fn borrow(&self, bytes: &[u8]) -> Result<&'a str, SamlError> {
        let base = self.xml.as_ptr() as usize;
        let start = (bytes.as_ptr() as usize).wrapping_sub(base);
        self.xml
            .get(start..start.wrapping_add(bytes.len()))
            .ok_or_else(|| SamlError::MalformedXml("XML token outside the input".into()))
    }

    fn lookup(&self, prefix: Option<&str>) -> Option<&Cow<'a, str>> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| *p == prefix)
            .map(|(_, u)| u)
    }

    /// Resolves a prefix: `xml` is predeclared; `None` means the default
    /// namespace for elements (pass `attribute = true` for no namespace).
    fn resolve(
        &self,
        prefix: Option<&'a str>,
        attribute: bool,
        qname: &str,
    ) -> Result<Option<Cow<'a, str>>, SamlError> {
        match prefix {
            Some("xml") => Ok(Some(Cow::Borrowed(NS_XML))),
            Some("xmlns") => Err(SamlError::MalformedXml(format!(
                "{qname} uses the reserved prefix xmlns"
            ))),
            Some(p) => match self.lookup(Some(p)) {
                Some(u) => Ok(Some(u.clone())),
                None => Err(SamlError::MalformedXml(format!(
                    "{} {qname} uses undeclared prefix {p}",
                    if attribute { "attribute" } else { "element" }
                ))),
            },
            None if attribute => Ok(None),
            None => Ok(self.lookup(None).filter(|u| !u.is_empty()).cloned()),
        }
    }

    /// Builds an element from its start tag (declarations first, then names).
    fn open(&mut self, s: &BytesStart<'_>) -> Result<Element<'a>, SamlError> {
        if self.root.is_some() {
            return Err(SamlError::MalformedXml(
                "content after the root element".into(),
            ));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(SamlError::TooDeep(MAX_DEPTH));
        }
        let qname = self.borrow(s.name().as_ref())?;
        let raw = self.borrow(s.attributes_raw())?;
        let mut ns_decls: Vec<NsDecl<'a>> = Vec::new();
        // (prefix, local, raw qname, value)
        let mut raw_attrs = std::mem::take(&mut self.scratch);
        raw_attrs.clear();
        let mut rest = raw;
        while let Some((key, value, after)) = next_attribute(rest, qname)? {
            rest = after;
            let binding = if key == "xmlns" {
                Some(None)
            } else {
                key.strip_prefix("xmlns:").map(Some)
            };
            if let Some(binding) = binding {
                let prefix = match binding {
                    None => None,
                    Some(p) => {
                        if !is_ncname(p) {
                            return Err(SamlError::MalformedXml(format!(
                                "malformed namespace prefix {p:?} on {qname}"
                            )));
                        }
                        if p == "xmlns"
                            || (p == "xml" && value != NS_XML)
                            || value == NS_XML && p != "xml"
                        {
                            return Err(SamlError::MalformedXml(format!(
                                "reserved prefix or namespace misused: xmlns:{p}=\"{value}\""
                            )));
                        }
                        if value.is_empty() {
                            return Err(SamlError::MalformedXml(format!(
                                "prefix {p} cannot be undeclared (xmlns:{p}=\"\")"
                            )));
                        }
                        Some(p)
                    }
                };
                if !value.is_empty() && !self.known_absolute(&value) {
                    return Err(SamlError::MalformedXml(format!(
                        "namespace name {value:?} is not an absolute URI (canonicalisation refuses relative ones)"
                    )));
                }
                if ns_decls.iter().any(|d| d.prefix == prefix) {
                    return Err(SamlError::MalformedXml(format!(
                        "namespace prefix {} declared twice on {qname}",
                        prefix.unwrap_or("(default)"),
                    )));
                }
                ns_decls.push(NsDecl { prefix, uri: value });
                continue;
            }
            let (prefix, local) = split_qname(key)?;
            raw_attrs.push((prefix, local, key, value));
        }
        let (prefix, name) = split_qname(qname)?;
        for d in &ns_decls {
            self.bindings.push((d.prefix, d.uri.clone()));
        }
        let ns = self.resolve(prefix, false, qname)?;
        let mut attrs: Vec<Attr<'a>> = Vec::with_capacity(raw_attrs.len());
        for (aprefix, local, raw, value) in raw_attrs.drain(..) {
            let ans = self.resolve(aprefix, true, raw)?;
            if attrs.iter().any(|x| x.name == local && x.ns == ans) {
                return Err(SamlError::MalformedXml(format!(
                    "duplicate attribute {local} on {qname}"
                )));
            }
            attrs.push(Attr {
                ns: ans,
                prefix: aprefix,
                name: local,
                value,
            });
        }
        self.scratch = raw_attrs;
        Ok(Element {
            ns,
            prefix,
            name,
            attrs,
            ns_decls,
            children: Vec::new(),
        })
    }

    /// Whether a namespace name is an absolute URI, remembering the ones
    /// that are (borrowed from the input) for the rest of the document.
    #[allow(clippy::ptr_arg)] // whether it borrows from the input matters
    fn known_absolute(&mut self, uri: &Cow<'a, str>) -> bool {
        let Cow::Borrowed(b) = uri else {
            return absolute_uri(uri);
        };
        if self.uris.contains(b) {
            return true;
        }
        let ok = absolute_uri(b);
        if ok {
            self.uris.push(b);
        }
        ok
    }

    /// Attaches a finished element and drops its namespace declarations.
    /// `start` is where its children begin in `pending`.
    fn close(&mut self, mut el: Element<'a>, start: usize) {
        let n = el.ns_decls.len();
        self.bindings
            .truncate(self.bindings.len().saturating_sub(n));
        if start < self.pending.len() {
            el.children = self.pending.drain(start..).collect();
        }
        if self.stack.is_empty() {
            self.root = Some(el);
        } else {
            self.pending.push(Node::Element(el));
        }
    }

    /// Records text in the current element; text beside a comment is refused.
    fn text(&mut self, text: Cow<'a, str>) -> Result<(), SamlError> {
        let blank = text
            .bytes()
            .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
        if !blank && let Some(frame) = self.mixed.last_mut() {
            frame.1 = true;
            if frame.0 {
                return Err(comment_in_text(&self.stack));
            }
        }
        check_chars(&text)?;
        let Some(&(_, _, start)) = self.mixed.last() else {
            if blank {
                return Ok(());
            }
            return Err(SamlError::MalformedXml(
                "text outside the root element".into(),
            ));
        };
        let len = self.pending.len();
        match self.pending.last_mut() {
            Some(Node::Text(last)) if len > start => last.to_mut().push_str(&text),
            _ => self.pending.push(Node::Text(text)),
        }
        Ok(())
    }
}

/// The XML declaration (`xml version=... ?` as written between `<?` and
/// `?>`): version 1.0, then optionally encoding UTF-8 (the bytes are decoded
/// as UTF-8 whatever a declaration says, so another encoding is refused
/// rather than read differently from libxml2), then optionally standalone
/// yes/no, in that order and nothing else.
fn check_decl(content: &str) -> Result<(), SamlError> {
    const WHAT: &str = "the XML declaration";
    let bad = |what: &str| SamlError::MalformedXml(format!("XML declaration: {what}"));
    let mut rest = content.get(3..).unwrap_or("");
    let mut expect = ["version", "encoding", "standalone"].into_iter();
    let mut seen_version = false;
    while let Some((key, value, after)) = next_attribute(rest, WHAT)? {
        rest = after;
        if !expect.any(|k| k == key) {
            return Err(bad(&format!("unexpected or misplaced {key}")));
        }
        match key {
            "version" if value != "1.0" => return Err(bad("version must be 1.0")),
            "version" => seen_version = true,
            "encoding" if !value.eq_ignore_ascii_case("utf-8") => {
                return Err(bad("encoding must be UTF-8"));
            }
            "standalone" if !matches!(value.as_ref(), "yes" | "no") => {
                return Err(bad("standalone must be yes or no"));
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(bad("version missing"));
    }
    Ok(())
}

/// Text as XML 1.0 reads it: CRLF and lone CR become LF. Borrows when the
/// text has no CR.
fn line_ends(raw: &str) -> Cow<'_, str> {
    if memchr::memchr(b'\r', raw.as_bytes()).is_none() {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(raw.replace("\r\n", "\n").replace('\r', "\n"))
}

/// Byte classes for the scanners below, one table lookup per byte.
const NAME_START: u8 = 1; // ASCII letter or '_'
const NAME_CHAR: u8 = 2; // NAME_START, digit, '-' or '.'
const URI_CHAR: u8 = 4; // RFC 3986 unreserved, gen-delims but '[' ']', sub-delims
const ATTR_SPECIAL: u8 = 8; // '<' '&' TAB LF CR, other C0 controls, 0xEF (U+FFFE/F lead)

// Evaluated at compile time: an index out of bounds would fail the build.
#[allow(clippy::indexing_slicing)]
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let mut k = 0u8;
        if b.is_ascii_alphabetic() || b == b'_' {
            k |= NAME_START | NAME_CHAR;
        }
        if b.is_ascii_digit() || b == b'-' || b == b'.' {
            k |= NAME_CHAR;
        }
        if b.is_ascii_alphanumeric() {
            k |= URI_CHAR;
        }
        let mut i = 0;
        let uri_marks = b"-._~:/?#@!$&'()*+,;=";
        while i < uri_marks.len() {
            if uri_marks[i] == b {
                k |= URI_CHAR;
            }
            i += 1;
        }
        if b < 0x20 || b == b'<' || b == b'&' || b == 0xEF {
            k |= ATTR_SPECIAL;
        }
        t[c] = k;
        c += 1;
    }
    t
};

fn class(b: u8, k: u8) -> bool {
    // A u8 always indexes a 256-entry table; `get` compiles to the same load.
    CLASS.get(usize::from(b)).is_some_and(|c| c & k != 0)
}

/// An attribute read from a start tag: qualified name, normalised value,
/// and the rest of the tag after it.
type ScannedAttr<'a> = (&'a str, Cow<'a, str>, &'a str);

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Reads the next attribute from the rest of a start tag (what follows the
/// element name, without `>` or `/>`): `(qualified name, normalised value,
/// what follows)`, or `None` at the end. One pass does what XML demands of
/// an attribute: whitespace before it (`<a k="1"j="2">` is not XML), `=`
/// with optional whitespace, a quoted value without `<`, references
/// resolved, literal TAB/LF/CR (and CRLF) normalised to a space, only XML
/// characters.
fn next_attribute<'a>(rest: &'a str, qname: &str) -> Result<Option<ScannedAttr<'a>>, SamlError> {
    let b = rest.as_bytes();
    let mut i = 0;
    while b.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    if i == b.len() {
        return Ok(None);
    }
    let bad = |what: &str| SamlError::MalformedXml(format!("{what} in the start tag of {qname}"));
    if i == 0 {
        return Err(SamlError::MalformedXml(format!(
            "attributes of {qname} are not separated by whitespace"
        )));
    }
    let name_start = i;
    while b.get(i).is_some_and(|&c| !is_space(c) && c != b'=') {
        i += 1;
    }
    let name = rest.get(name_start..i).unwrap_or("");
    if name.is_empty() {
        return Err(bad("an attribute without a name"));
    }
    while b.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    if b.get(i) != Some(&b'=') {
        return Err(bad(&format!("attribute {name} without a value")));
    }
    i += 1;
    while b.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    let quote = match b.get(i) {
        Some(&q @ (b'"' | b'\'')) => q,
        _ => return Err(bad(&format!("unquoted value of attribute {name}"))),
    };
    let open = i + 1;
    let close = b
        .get(open..)
        .and_then(|r| memchr::memchr(quote, r))
        .map(|c| open + c)
        .ok_or_else(|| bad(&format!("unterminated value of attribute {name}")))?;
    let raw = rest.get(open..close).unwrap_or("");
    let after = rest.get(close + 1..).unwrap_or("");
    let value = attribute_value(raw).map_err(|e| match e {
        SamlError::MalformedXml(m) => {
            SamlError::MalformedXml(format!("value of attribute {name} on {qname}: {m}"))
        }
        other => other,
    })?;
    Ok(Some((name, value, after)))
}

/// An attribute value as XML 1.0 reads it (no DTD, so every attribute is
/// CDATA): references resolved, each literal TAB, LF, CR or CRLF becomes one
/// space; `<` and non-XML characters refused. Borrows when nothing changes.
fn attribute_value(raw: &str) -> Result<Cow<'_, str>, SamlError> {
    let b = raw.as_bytes();
    // Nearly every value is plain: nothing to resolve, normalise or refuse.
    if !b.iter().any(|&c| class(c, ATTR_SPECIAL)) {
        return Ok(Cow::Borrowed(raw));
    }
    if memchr::memchr(b'<', b).is_some() {
        return Err(SamlError::MalformedXml("'<' in an attribute value".into()));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest
        .bytes()
        .position(|c| matches!(c, b'&' | b'\t' | b'\n' | b'\r'))
    {
        out.push_str(rest.get(..i).unwrap_or(""));
        let tail = rest.get(i..).unwrap_or("");
        if tail.starts_with("\r\n") {
            out.push(' ');
            rest = tail.get(2..).unwrap_or("");
        } else if tail.starts_with('&') {
            let (ch, after) = reference(tail)?;
            out.push(ch);
            rest = after;
        } else {
            out.push(' ');
            rest = tail.get(1..).unwrap_or("");
        }
    }
    out.push_str(rest);
    check_chars(&out)?;
    Ok(Cow::Owned(out))
}

/// Resolves the reference at the start of `s` (`&name;`, `&#NN;`,
/// `&#xHH;`): the character and what follows. Only the five predefined
/// entities exist (no DTD); a character reference must name a Unicode
/// scalar value written with digits only.
fn reference(s: &str) -> Result<(char, &str), SamlError> {
    let end = s
        .find(';')
        .ok_or_else(|| SamlError::MalformedXml("'&' without a reference".into()))?;
    let name = s.get(1..end).unwrap_or("");
    let after = s.get(end + 1..).unwrap_or("");
    Ok((reference_char(name)?, after))
}

/// The character a reference names (`name` as between `&` and `;`).
fn reference_char(name: &str) -> Result<char, SamlError> {
    Ok(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let (digits, radix) = match name.strip_prefix("#x") {
                Some(h) => (h, 16),
                None => match name.strip_prefix('#') {
                    Some(d) => (d, 10),
                    None => {
                        return Err(SamlError::MalformedXml(format!(
                            "undefined entity &{name};"
                        )));
                    }
                },
            };
            let all_digits = !digits.is_empty()
                && digits.bytes().all(|c| match radix {
                    16 => c.is_ascii_hexdigit(),
                    _ => c.is_ascii_digit(),
                });
            all_digits
                .then(|| u32::from_str_radix(digits, radix).ok())
                .flatten()
                .and_then(char::from_u32)
                .ok_or_else(|| {
                    SamlError::MalformedXml(format!("invalid character reference &{name};"))
                })?
        }
    })
}

/// Whether a namespace name is an absolute URI as libxml2's canonicaliser
/// demands (C14N refuses relative namespace URIs, and libxml2 refuses a
/// namespace name it cannot parse as an RFC 3986 URI): a scheme, an optional
/// `//authority` (port digits only, no IP literals), then only URI
/// characters with well-formed `%XX` escapes and at most one `#`.
fn absolute_uri(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once(':') else {
        return false;
    };
    let mut sc = scheme.bytes();
    let scheme_ok = sc.next().is_some_and(|c| c.is_ascii_alphabetic())
        && sc.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    let b = u.as_bytes();
    // RFC 3986 unreserved, gen-delims (without the IP-literal brackets) and
    // sub-delims; '%' only as a well-formed escape.
    let chars_ok = b.iter().enumerate().all(|(i, &c)| {
        class(c, URI_CHAR)
            || c == b'%'
                && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    });
    let one_fragment = memchr::memchr_iter(b'#', b).nth(1).is_none();
    let authority_ok = match rest.strip_prefix("//") {
        None => true,
        Some(r) => {
            let end = r.find(['/', '?', '#']).unwrap_or(r.len());
            let authority = r.get(..end).unwrap_or("");
            // [userinfo "@"] host [":" port]: one '@' at most, no ':' in
            // the host (no IP literals), a numeric port that fits.
            let host_port = authority.split_once('@').map_or(authority, |(_, h)| h);
            !host_port.contains('@')
                && match host_port.split_once(':') {
                    Some((_, port)) => {
                        port.bytes().all(|c| c.is_ascii_digit()) && port.parse::<u16>().is_ok()
                    }
                    None => true,
                }
        }
    };
    scheme_ok && chars_ok && one_fragment && authority_ok
}

/// Splits `p:local` (one colon at most, both parts XML names).
fn split_qname(q: &str) -> Result<(Option<&str>, &str), SamlError> {
    let (p, l) = match q.bytes().position(|c| c == b':') {
        None => (None, q),
        Some(i) => (q.get(..i), q.get(i + 1..).unwrap_or("")),
    };
    if p.is_some_and(|p| !is_ncname(p)) || !is_ncname(l) {
        return Err(SamlError::MalformedXml(format!("malformed name {q:?}")));
    }
    Ok((p, l))
}

/// XML 1.0 (5th edition) `Name` without colons.
pub(crate) fn is_ncname(n: &str) -> bool {
    // Fast path: the ASCII names every SAML message uses.
    let b = n.as_bytes();
    if b.first().is_some_and(|&c| class(c, NAME_START)) && b.iter().all(|&c| class(c, NAME_CHAR)) {
        return true;
    }
    if n.is_ascii() {
        return false;
    }
    let mut chars = n.chars();
    let start = |c: char| {
        c.is_ascii_alphabetic()
            || c == '_'
            || matches!(c as u32,
                0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x2FF | 0x370..=0x37D | 0x37F..=0x1FFF
                | 0x200C..=0x200D | 0x2070..=0x218F | 0x2C00..=0x2FEF | 0x3001..=0xD7FF
                | 0xF900..=0xFDCF | 0xFDF0..=0xFFFD | 0x10000..=0xEFFFF)
    };
    chars.next().is_some_and(start)
        && chars.all(|c| {
            start(c)
                || c.is_ascii_digit()
                || matches!(c, '-' | '.' | '\u{B7}')
                || matches!(c as u32, 0x300..=0x36F | 0x203F..=0x2040)
        })
}

fn comment_in_text(stack: &[Element<'_>]) -> SamlError {
    SamlError::CommentInText(stack.last().map(|e| e.name.to_owned()).unwrap_or_default())
}

/// Refuses characters outside the XML 1.0 `Char` production: C0 controls
/// other than TAB/LF/CR, and U+FFFE/U+FFFF (surrogates cannot occur in a
/// `str`). Scans 32-byte blocks branch-free (the compiler vectorises it) and
/// looks closer only at a block holding a candidate.
fn check_chars(s: &str) -> Result<(), SamlError> {
    let b = s.as_bytes();
    let candidate = |c: u8| (c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r') | (c == 0xEF);
    for (n, block) in b.chunks(32).enumerate() {
        if !block.iter().fold(false, |acc, &c| acc | candidate(c)) {
            continue;
        }
        for (j, &c) in block.iter().enumerate() {
            let i = n * 32 + j;
            let bad = match c {
                b'\t' | b'\n' | b'\r' => false,
                0..=0x1F => true,
                0xEF => b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)),
                _ => false,
            };
            if bad {
                let ch = s.get(i..).and_then(|r| r.chars().next()).unwrap_or('\0');
                return Err(SamlError::MalformedXml(format!(
                    "character U+{:04X} is not allowed in XML",
                    ch as u32
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_splitting_text_is_refused() {
        for xml in [
            "<a>admin@evil.com<!-- x -->.example.org</a>",
            "<a><!-- x -->admin@example.org</a>",
            "<a>admin@example.org<!-- x --></a>",
        ] {
            assert_eq!(
                parse(xml).unwrap_err(),
                SamlError::CommentInText("a".into()),
                "{xml}"
            );
        }
    }

    #[test]
    fn comments_between_elements_are_dropped() {
        let el = parse("<a><!-- x --><b>t</b><!-- y -->\n</a>").unwrap();
        assert_eq!(el.text(), "t\n");
    }

    #[test]
    fn entities_and_cdata_are_text() {
        let el = parse("<a>x&amp;y&#65;<![CDATA[<z>]]></a>").unwrap();
        assert_eq!(el.text(), "x&yA<z>");
    }

    #[test]
    fn doctype_refused() {
        let e = parse("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").unwrap_err();
        assert_eq!(e, SamlError::DtdForbidden);
    }

    #[test]
    fn pi_refused() {
        let e = parse("<a><?evil x?></a>").unwrap_err();
        assert_eq!(e.code(), "processing_instruction_forbidden");
    }

    #[test]
    fn undefined_entity_refused() {
        assert_eq!(parse("<a>&x;</a>").unwrap_err().code(), "malformed_xml");
    }

    #[test]
    fn nul_char_ref_refused() {
        assert_eq!(parse("<a>&#0;</a>").unwrap_err().code(), "malformed_xml");
        assert_eq!(
            parse("<a>&#xD800;</a>").unwrap_err().code(),
            "malformed_xml"
        );
    }

    #[test]
    fn truncated_refused() {
        assert_eq!(parse("<a><b>").unwrap_err().code(), "malformed_xml");
    }

    #[test]
    fn deep_nesting_refused() {
        let xml = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(&xml).unwrap_err(), SamlError::TooDeep(MAX_DEPTH));
    }

    #[test]
    fn unbound_prefix_refused() {
        assert_eq!(parse("<p:a/>").unwrap_err().code(), "malformed_xml");
    }

    #[test]
    fn namespace_tricks_refused() {
        for xml in [
            r#"<p:a xmlns:p=""/>"#,
            r#"<a xmlns:xml="urn:not-xml"/>"#,
            r#"<a xmlns:xmlns="urn:x"/>"#,
            r#"<a xmlns:x="http://www.w3.org/XML/1998/namespace"/>"#,
            r#"<a xmlns:p="urn:x" xmlns:q="urn:x" p:k="1" q:k="2"/>"#,
            r#"<a k="1" k="2"/>"#,
            r#"<a k="x<y"/>"#,
            r#"<a xmlns:p="urn:x" xmlns:p="urn:y"/>"#,
            r#"<xmlns:a/>"#,
            r#"<a:b:c xmlns:a="urn:x"/>"#,
            r#"<a xmlns:xs="htw//:tpww.w3.org/2001/XMLSchema"/>"#,
            r#"<a xmlns="relative/path"/>"#,
            r#"<a xmlns:p="http://exa mple.org/"/>"#,
            r#"<a xmlns:p="http://example.org/%zz"/>"#,
            r#"<a xmlns:p="http://www.w3.org[2001/XMLSchema"/>"#,
            r#"<a xmlns:p="http://example.org:8x/"/>"#,
            r#"<a xmlns:p="http://example.org/#a#b"/>"#,
            r#"<a xmlns:x$="urn:x"/>"#,
            r#"<a xmlns:p="http://w@@ww.w3.org/2001/XMLSchema"/>"#,
            r#"<a xmlns:p="http://a:b:80/"/>"#,
            r#"<a xmlns:1x="urn:x"/>"#,
            "<a>\u{FFFE}</a>",
            "<a><!-- \u{8} --></a>",
            "<a k=\"1\"k2=\"2\"/>",
            "<a>]]></a>",
            "<a><!-- a -- b --></a>",
            "<a><!-- a ---></a>",
            "<?xml version=\"1.0\" standalone=\"maybe\"?><a/>",
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>",
            "<?xml version=\"1.1\"?><a/>",
            "<a\u{8}b/>",
            "<a 1k=\"v\"/>",
            "<a -b=\"v\"/>",
            "<a:/>",
            "<:a/>",
            "<a k=\"\u{1}\"/>",
        ] {
            assert_eq!(parse(xml).unwrap_err().code(), "malformed_xml", "{xml}");
        }
    }

    #[test]
    fn names_and_values_borrow_from_the_input() {
        let el = parse(r#"<p:a xmlns:p="urn:x" k="v">text</p:a>"#).unwrap();
        assert!(matches!(el.attrs[0].value, Cow::Borrowed("v")));
        assert!(matches!(&el.children[0], Node::Text(Cow::Borrowed("text"))));
        assert_eq!((el.prefix, el.name), (Some("p"), "a"));
        let el = parse("<a k=\"x&amp;y\">1&#65;2</a>").unwrap();
        assert_eq!(el.attr("k"), Some("x&y"));
        assert_eq!(el.text(), "1A2");
    }

    #[test]
    fn xml_prefix_is_predeclared() {
        let el = parse(r#"<a xml:lang="en"/>"#).unwrap();
        assert_eq!(el.attrs[0].ns.as_deref(), Some(NS_XML));
    }

    #[test]
    fn namespaces_resolve() {
        let el = parse(r#"<p:a xmlns:p="urn:x" xmlns="urn:d" p:k="1" k="2"><b/></p:a>"#).unwrap();
        assert!(el.is("urn:x", "a"));
        assert_eq!(el.attr("k"), Some("2"));
        assert!(el.child("urn:d", "b").is_some());
    }
}
