//! A small, bounded, namespace-resolved XML document: one pass of our own
//! over the input into flat arrays.
//!
//! SAML messages are small (the decode step caps them), so one pass that
//! records every element, attribute, namespace declaration and text run in
//! document order, borrowing names, values and text from the input (copies
//! only where references or line endings had to be decoded), is cheap and
//! lets every check, the canonicaliser and the signature verifier read the
//! same parse. Elements are handles ([`Element`]: the document and an index)
//! into that compact node array; there is no per-element allocation.
//!
//! The scanner refuses what a SAML message never needs and attackers love:
//! DOCTYPE (and with it DTDs, entity expansion and XXE), processing
//! instructions, undefined entity references, invalid character references
//! and excessive nesting. Comments between elements are dropped. A comment
//! beside text (`<NameID>admin@example.com<!---->.evil.org</NameID>`, the
//! comment-injection attack) is refused outright: no IdP writes one, and
//! libxmlsec1's reduce step cannot match such text either. Text is always read
//! whole (adjacent runs, references and CDATA joined), never a truncated prefix.

use std::borrow::Cow;
use std::fmt;

use super::error::SamlError;

/// Maximum element nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most attributes on one element (namespace declarations apart). A SAML
/// element has a handful; tens of thousands of short ones fit under the
/// size cap and made the duplicate check quadratic.
pub const MAX_ATTRIBUTES: usize = 64;
/// Most namespace declarations on one element.
pub const MAX_NS_DECLS: usize = 32;
/// Most namespace declarations in scope at once (every open element's).
/// Real IdPs have two to six; each prefix lookup (here and in
/// canonicalisation) scans them, so the cap keeps every lookup short.
pub const MAX_NS_IN_SCOPE: usize = 32;
/// Most elements in one document (a user in 5,000 groups needs ~5,000).
pub const MAX_ELEMENTS: usize = 100_000;
/// Namespace names remembered as absolute (beyond them each declaration's
/// name is checked afresh: linear, never a growing search).
const MAX_REMEMBERED_URIS: usize = 32;

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
/// The namespace of namespace declarations themselves (reserved: nothing
/// may be bound to it).
pub const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";
/// Exclusive c14n namespace (InclusiveNamespaces).
pub const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// Namespace names nearly every SAML message declares, absolute URIs all
/// (asserted by a unit test): found here, they skip the URI check.
static WELL_KNOWN_NAMESPACES: [&str; 7] = [
    NS_PROTOCOL,
    NS_ASSERTION,
    NS_DSIG,
    NS_XENC,
    NS_EXC_C14N,
    "http://www.w3.org/2001/XMLSchema",
    "http://www.w3.org/2001/XMLSchema-instance",
];

/// One attribute, its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Namespace URI, `None` for unprefixed attributes.
    pub ns: Option<Cow<'a, str>>,
    /// The prefix as written (canonicalisation writes it back).
    pub prefix: Option<&'a str>,
    /// Local name.
    pub name: &'a str,
    /// Value after reference and whitespace normalisation.
    pub value: Cow<'a, str>,
}

/// A namespace declaration written on an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsDecl<'a> {
    /// The prefix declared, `None` for the default namespace.
    pub prefix: Option<&'a str>,
    /// The namespace URI (empty for `xmlns=""`).
    pub uri: Cow<'a, str>,
}

/// A child of an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node<'d> {
    /// A child element.
    Element(Element<'d>),
    /// Character data (text, references and CDATA; comments removed,
    /// adjacent runs joined).
    Text(&'d str),
}

/// A half-open range of indices into one of the document's arrays.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of<T>(v: &[T], start: usize) -> Span {
        Span {
            start: to_u32(start),
            end: to_u32(v.len()),
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    fn len(self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }
}

/// Indices fit: the decode step caps a message far below 4 GiB.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A child slot: an element or a text run, by index.
#[derive(Debug, Clone, Copy)]
enum Kid {
    Element(u32),
    Text(u32),
}

/// Everything recorded about one element.
#[derive(Debug)]
struct ElementData<'a> {
    ns: Option<Cow<'a, str>>,
    prefix: Option<&'a str>,
    name: &'a str,
    /// Parent element (`u32::MAX` for the root).
    parent: u32,
    /// One past its last descendant (elements are in document order).
    end: u32,
    attrs: Span,
    decls: Span,
    kids: Span,
    /// Its descendant text runs (they are contiguous in document order).
    texts: Span,
}

const NO_ELEMENT: ElementData<'static> = ElementData {
    ns: None,
    prefix: None,
    name: "",
    parent: u32::MAX,
    end: 0,
    attrs: Span { start: 0, end: 0 },
    decls: Span { start: 0, end: 0 },
    kids: Span { start: 0, end: 0 },
    texts: Span { start: 0, end: 0 },
};

/// A parsed document: elements in document order (the root first), with
/// their attributes, declarations, children and text in flat arrays.
#[derive(Debug)]
pub struct Document<'a> {
    els: Vec<ElementData<'a>>,
    attrs: Vec<Attr<'a>>,
    decls: Vec<NsDecl<'a>>,
    kids: Vec<Kid>,
    texts: Vec<Cow<'a, str>>,
}

impl<'a> Document<'a> {
    /// The root element.
    pub fn root(&self) -> Element<'_> {
        Element { doc: self, i: 0 }
    }

    /// How many elements the document has.
    pub fn element_count(&self) -> usize {
        self.els.len()
    }
}

/// An element of a [`Document`]: a cheap handle (the document and an
/// index). Two handles are equal when they name the same element of the
/// same parse.
#[derive(Clone, Copy)]
pub struct Element<'d> {
    doc: &'d Document<'d>,
    i: u32,
}

impl PartialEq for Element<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.doc, other.doc) && self.i == other.i
    }
}

impl Eq for Element<'_> {}

impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Element")
            .field("name", &self.display_name())
            .field("attrs", &self.attrs())
            .finish()
    }
}

impl<'d> Element<'d> {
    fn data(self) -> &'d ElementData<'d> {
        self.doc.els.get(self.i as usize).unwrap_or(&NO_ELEMENT)
    }

    fn at(self, i: u32) -> Element<'d> {
        Element { doc: self.doc, i }
    }

    /// Namespace URI, `None` when unqualified.
    pub fn ns(self) -> Option<&'d str> {
        self.data().ns.as_deref()
    }

    /// The prefix as written, `None` when unprefixed.
    pub fn prefix(self) -> Option<&'d str> {
        self.data().prefix
    }

    /// Local name.
    pub fn name(self) -> &'d str {
        self.data().name
    }

    /// Attributes, namespace declarations excluded, in document order.
    pub fn attrs(self) -> &'d [Attr<'d>] {
        self.doc
            .attrs
            .get(self.data().attrs.range())
            .unwrap_or_default()
    }

    /// Namespace declarations on this element, in document order.
    pub fn ns_decls(self) -> &'d [NsDecl<'d>] {
        self.doc
            .decls
            .get(self.data().decls.range())
            .unwrap_or_default()
    }

    /// The parent element (`None` for the root).
    pub fn parent(self) -> Option<Element<'d>> {
        let p = self.data().parent;
        (p != u32::MAX).then(|| self.at(p))
    }

    /// Children in document order.
    pub fn children(self) -> impl DoubleEndedIterator<Item = Node<'d>> + 'd {
        let doc = self.doc;
        doc.kids
            .get(self.data().kids.range())
            .unwrap_or_default()
            .iter()
            .map(move |k| match *k {
                Kid::Element(i) => Node::Element(Element { doc, i }),
                Kid::Text(t) => Node::Text(doc.texts.get(t as usize).map_or("", |c| c.as_ref())),
            })
    }

    /// Whether this element is `{ns}name`.
    pub fn is(self, ns: &str, name: &str) -> bool {
        // The local name first: short, and where elements usually differ
        // (namespace URIs are long and share prefixes).
        let d = self.data();
        same(d.name, name) && d.ns.as_deref().is_some_and(|n| same(n, ns))
    }

    /// A readable `prefix-free` name for messages, e.g. `{urn:..}Response`.
    pub fn display_name(self) -> String {
        match self.ns() {
            Some(ns) => format!("{{{ns}}}{}", self.name()),
            None => self.name().to_owned(),
        }
    }

    /// The value of the unqualified attribute `name`.
    pub fn attr(self, name: &str) -> Option<&'d str> {
        self.attrs()
            .iter()
            .find(|a| a.ns.is_none() && same(a.name, name))
            .map(|a| a.value.as_ref())
    }

    /// Child elements in document order.
    pub fn elements(self) -> impl DoubleEndedIterator<Item = Element<'d>> + 'd {
        self.children().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements named `{ns}name`.
    pub fn children_named<'s>(
        self,
        ns: &'s str,
        name: &'s str,
    ) -> impl Iterator<Item = Element<'d>> + 's
    where
        'd: 's,
    {
        self.elements().filter(move |e| e.is(ns, name))
    }

    /// The first child element named `{ns}name`.
    pub fn child(self, ns: &str, name: &str) -> Option<Element<'d>> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// All descendant text, concatenated (XPath `string()`).
    pub fn text(self) -> String {
        self.text_ref().into_owned()
    }

    /// [`Element::text`] without a copy when the element holds one text
    /// run (nearly always: a name, a date, a base64 value).
    pub fn text_ref(self) -> Cow<'d, str> {
        let texts = self
            .doc
            .texts
            .get(self.data().texts.range())
            .unwrap_or_default();
        match texts {
            [] => Cow::Borrowed(""),
            [one] => Cow::Borrowed(one.as_ref()),
            _ => Cow::Owned(texts.concat()),
        }
    }

    /// This element and its descendants in document order, each with its
    /// parent (`None` for `self`).
    pub fn walk(self, f: &mut dyn FnMut(Element<'d>, Option<Element<'d>>)) {
        let end = self.data().end.max(self.i.saturating_add(1));
        f(self, None);
        for j in self.i.saturating_add(1)..end {
            let e = self.at(j);
            f(e, e.parent());
        }
    }
}

/// Parses `xml` into a document, refusing DOCTYPE, processing instructions,
/// undefined entities and nesting deeper than [`MAX_DEPTH`].
pub fn parse(xml: &str) -> Result<Document<'_>, SamlError> {
    let mut p = Parser {
        xml,
        doc: Document {
            els: Vec::with_capacity(64),
            attrs: Vec::with_capacity(128),
            decls: Vec::with_capacity(16),
            kids: Vec::with_capacity(128),
            texts: Vec::with_capacity(64),
        },
        open: Vec::with_capacity(16),
        pending: Vec::with_capacity(64),
        bindings: Vec::with_capacity(16),
        uris: Vec::with_capacity(8),
        root_closed: false,
    };
    p.run()?;
    Ok(p.doc)
}

/// An element whose end tag has not been read yet.
struct Open<'a> {
    /// Its index in `els`.
    el: u32,
    /// Its name as written, for the end tag.
    qname: &'a str,
    /// Saw a comment / non-whitespace text among its children.
    comment: bool,
    text: bool,
    /// Where its children start in `pending`, its text runs in `texts`.
    kids: usize,
    texts: usize,
}

/// Parser state: open elements, children not yet placed, namespace bindings.
struct Parser<'a> {
    xml: &'a str,
    doc: Document<'a>,
    open: Vec<Open<'a>>,
    /// Children of the open elements, innermost last: an element's are
    /// moved to `doc.kids` in one piece when it closes.
    pending: Vec<Kid>,
    /// In-scope namespace bindings, innermost last; each open element's
    /// declarations are popped when it closes.
    bindings: Vec<(Option<&'a str>, Cow<'a, str>)>,
    /// Namespace names already found absolute in this document (IdPs
    /// declare the same few again and again).
    uris: Vec<&'a str>,
    root_closed: bool,
}

fn malformed(what: impl Into<String>) -> SamlError {
    SamlError::MalformedXml(what.into())
}

fn limit(what: &'static str, limit: usize, element: &str) -> SamlError {
    SamlError::XmlLimit {
        what,
        limit,
        element: element.to_owned(),
    }
}

/// The local name of an attribute that appears twice (same namespace and
/// local name) among one element's resolved attributes, if any. Pairs are
/// compared while there are few (nearly always); beyond that the names are
/// sorted, so the cost is `n log n` with `n` at most [`MAX_ATTRIBUTES`].
fn duplicate_attribute<'a>(attrs: &[Attr<'a>]) -> Option<&'a str> {
    const FEW: usize = 8;
    if attrs.len() <= FEW {
        for (k, a) in attrs.iter().enumerate() {
            let earlier = attrs.get(..k).unwrap_or_default();
            if earlier.iter().any(|x| same(x.name, a.name) && x.ns == a.ns) {
                return Some(a.name);
            }
        }
        return None;
    }
    let mut keys: Vec<(&'a str, Option<&str>)> =
        attrs.iter().map(|a| (a.name, a.ns.as_deref())).collect();
    keys.sort_unstable();
    keys.windows(2)
        .find(|w| matches!(w, [x, y] if x == y))
        .and_then(|w| w.first())
        .map(|(name, _)| *name)
}

impl<'a> Parser<'a> {
    fn run(&mut self) -> Result<(), SamlError> {
        let xml = self.xml;
        let b = xml.as_bytes();
        // A byte-order mark may precede everything, the declaration included.
        let start = if xml.starts_with('\u{feff}') { 3 } else { 0 };
        let mut pos = start;
        let mut seen_decl = false;
        loop {
            // Markup usually follows markup directly: no search then.
            let lt = if b.get(pos) == Some(&b'<') {
                pos
            } else {
                b.get(pos..)
                    .and_then(|r| memchr::memchr(b'<', r))
                    .map_or(b.len(), |i| pos + i)
            };
            if lt > pos {
                let raw = xml
                    .get(pos..lt)
                    .ok_or_else(|| malformed("text is not UTF-8"))?;
                self.text_run(raw)?;
            }
            if lt >= b.len() {
                break;
            }
            pos = match b.get(lt + 1) {
                Some(b'/') => self.end_tag(lt + 2)?,
                Some(b'!') => self.bang(lt + 2)?,
                Some(b'?') => {
                    let at_start = lt == start && !seen_decl;
                    let after = self.question(lt + 2, at_start)?;
                    seen_decl = true;
                    after
                }
                _ => self.start_tag(lt + 1)?,
            };
        }
        if !self.open.is_empty() {
            return Err(malformed("document ends inside an element (truncated?)"));
        }
        if self.doc.els.is_empty() {
            return Err(malformed("no root element"));
        }
        Ok(())
    }

    /// A text run between two pieces of markup: `]]>` refused, references
    /// resolved, line ends normalised.
    fn text_run(&mut self, raw: &'a str) -> Result<(), SamlError> {
        let bytes = raw.as_bytes();
        // A short run (a name, a date, an indent) in one pass of the class
        // table: with no `>`, `&`, CR, control character or 0xEF byte in it
        // there is nothing to refuse, resolve or normalise.
        if bytes.len() < 64 {
            let mut seen = 0u8;
            for &c in bytes {
                seen |= CLASS.get(usize::from(c)).copied().unwrap_or(0);
            }
            if seen & TEXT_SPECIAL == 0 {
                return self.record_text(Cow::Borrowed(raw), seen & NOT_SPACE == 0);
            }
        }
        if memchr::memchr_iter(b'>', bytes).any(|i| i >= 2 && bytes.get(i - 2..i) == Some(b"]]")) {
            return Err(malformed("']]>' in text"));
        }
        if memchr::memchr2(b'&', b'\r', bytes).is_none() {
            return self.text(Cow::Borrowed(raw));
        }
        if self.open.is_empty() && memchr::memchr(b'&', bytes).is_some() {
            return Err(malformed("a reference outside the root element"));
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(i) = memchr::memchr2(b'&', b'\r', rest.as_bytes()) {
            out.push_str(rest.get(..i).unwrap_or(""));
            let tail = rest.get(i..).unwrap_or("");
            if let Some(after) = tail.strip_prefix('\r') {
                // CRLF and a lone CR both read as LF.
                out.push('\n');
                rest = after.strip_prefix('\n').unwrap_or(after);
            } else {
                let (ch, after) = reference(tail)?;
                out.push(ch);
                rest = after;
            }
        }
        out.push_str(rest);
        self.text(Cow::Owned(out))
    }

    /// Records text in the current element; text beside a comment is refused.
    fn text(&mut self, text: Cow<'a, str>) -> Result<(), SamlError> {
        let blank = text
            .bytes()
            .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
        if !blank {
            check_chars(&text)?;
        }
        self.record_text(text, blank)
    }

    /// Records text whose characters are known to be allowed (`blank`: only
    /// whitespace).
    fn record_text(&mut self, text: Cow<'a, str>, blank: bool) -> Result<(), SamlError> {
        let Some(frame) = self.open.last_mut() else {
            if blank {
                return Ok(());
            }
            return Err(malformed("text outside the root element"));
        };
        if !blank {
            frame.text = true;
            if frame.comment {
                return Err(SamlError::CommentInText(frame.qname_local().to_owned()));
            }
        }
        let start = frame.kids;
        let len = self.pending.len();
        if len > start
            && let Some(Kid::Text(t)) = self.pending.last()
            && let Some(last) = self.doc.texts.get_mut(*t as usize)
        {
            last.to_mut().push_str(&text);
            return Ok(());
        }
        self.pending.push(Kid::Text(to_u32(self.doc.texts.len())));
        self.doc.texts.push(text);
        Ok(())
    }

    /// `<!--` comment, `<![CDATA[` section or `<!DOCTYPE` (refused); `at`
    /// is just past `<!`.
    fn bang(&mut self, at: usize) -> Result<usize, SamlError> {
        let xml = self.xml;
        let rest = xml.get(at..).unwrap_or("");
        if let Some(body) = rest.strip_prefix("--") {
            let end = memchr::memmem::find(body.as_bytes(), b"-->")
                .ok_or_else(|| malformed("unterminated comment"))?;
            let content = body.get(..end).unwrap_or("");
            // A comment is dropped, but must still be well-formed.
            check_chars(content)?;
            if content.contains("--") || content.ends_with('-') {
                return Err(malformed("'--' inside a comment"));
            }
            if let Some(frame) = self.open.last_mut() {
                frame.comment = true;
                if frame.text {
                    return Err(SamlError::CommentInText(frame.qname_local().to_owned()));
                }
            }
            return Ok(at + 2 + end + 3);
        }
        if let Some(body) = rest.strip_prefix("[CDATA[") {
            let end = memchr::memmem::find(body.as_bytes(), b"]]>")
                .ok_or_else(|| malformed("unterminated CDATA section"))?;
            if self.open.is_empty() {
                return Err(malformed("CDATA outside the root element"));
            }
            let content = body.get(..end).unwrap_or("");
            self.text(line_ends(content))?;
            return Ok(at + 7 + end + 3);
        }
        if rest
            .get(..7)
            .is_some_and(|d| d.eq_ignore_ascii_case("DOCTYPE"))
        {
            return Err(SamlError::DtdForbidden);
        }
        Err(malformed(
            "markup starting '<!' that is neither a comment nor CDATA",
        ))
    }

    /// `<?xml ...?>` (only at the very start) or a processing instruction
    /// (refused); `at` is just past `<?`.
    fn question(&mut self, at: usize, at_start: bool) -> Result<usize, SamlError> {
        let rest = self.xml.get(at..).unwrap_or("");
        let end = memchr::memmem::find(rest.as_bytes(), b"?>")
            .ok_or_else(|| malformed("unterminated processing instruction"))?;
        let content = rest.get(..end).unwrap_or("");
        let target = content.split([' ', '\t', '\n', '\r']).next().unwrap_or("");
        if target != "xml" {
            return Err(SamlError::ProcessingInstruction(target.to_owned()));
        }
        if !at_start {
            return Err(malformed(
                "XML declaration not at the start of the document",
            ));
        }
        check_decl(content)?;
        Ok(at + end + 2)
    }

    /// `</name>`; `at` is just past `</`.
    fn end_tag(&mut self, at: usize) -> Result<usize, SamlError> {
        let b = self.xml.as_bytes();
        // Nearly always `</name>` exactly as the start tag wrote it.
        if let Some(open) = self.open.pop_if(|o| {
            let end = at + o.qname.len();
            b.get(at..end)
                .is_some_and(|n| same_bytes(n, o.qname.as_bytes()))
                && b.get(end) == Some(&b'>')
        }) {
            let gt = at + open.qname.len();
            self.close(&open);
            return Ok(gt + 1);
        }
        let gt = b
            .get(at..)
            .and_then(|r| memchr::memchr(b'>', r))
            .map(|i| at + i)
            .ok_or_else(|| malformed("document ends inside an end tag"))?;
        let name = self
            .xml
            .get(at..gt)
            .unwrap_or("")
            .trim_end_matches([' ', '\t', '\n', '\r']);
        let open = self
            .open
            .pop()
            .ok_or_else(|| malformed("unbalanced end tag"))?;
        if name != open.qname {
            return Err(malformed(format!(
                "end tag </{name}> does not match <{}>",
                open.qname
            )));
        }
        self.close(&open);
        Ok(gt + 1)
    }

    /// A start tag; `at` is just past `<`. Returns where the tag ends.
    fn start_tag(&mut self, at: usize) -> Result<usize, SamlError> {
        if self.root_closed {
            return Err(malformed("content after the root element"));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(SamlError::TooDeep(MAX_DEPTH));
        }
        let xml = self.xml;
        let b = xml.as_bytes();
        let ends_name = |c: u8| is_space(c) || c == b'/' || c == b'>';
        let (mut i, qname, prefix, name) = match scan_ascii_qname(b, at) {
            // The ASCII name nearly every element has, checked as it is
            // scanned.
            Some((end, colon)) if b.get(end).is_none_or(|&c| ends_name(c)) => {
                let qname = xml.get(at..end).unwrap_or("");
                let (prefix, name) = match colon {
                    Some(c) => (xml.get(at..c), xml.get(c + 1..end).unwrap_or("")),
                    None => (None, qname),
                };
                (end, qname, prefix, name)
            }
            _ => {
                let mut i = at;
                while b.get(i).is_some_and(|&c| !ends_name(c)) {
                    i += 1;
                }
                let qname = xml.get(at..i).unwrap_or("");
                let (prefix, name) = split_qname(qname)?;
                (i, qname, prefix, name)
            }
        };
        if self.doc.els.len() >= MAX_ELEMENTS {
            return Err(limit("elements in the document", MAX_ELEMENTS, qname));
        }
        let attrs_start = self.doc.attrs.len();
        let decls_start = self.doc.decls.len();
        // Attributes (declarations apart), up to `>` or `/>`.
        let empty = loop {
            let ws = i;
            while b.get(i).copied().is_some_and(is_space) {
                i += 1;
            }
            match b.get(i) {
                Some(b'>') => {
                    i += 1;
                    break false;
                }
                Some(b'/') if b.get(i + 1) == Some(&b'>') => {
                    i += 2;
                    break true;
                }
                Some(b'/') => {
                    return Err(malformed(format!(
                        "'/' not followed by '>' in the start tag of {qname}"
                    )));
                }
                None => {
                    return Err(malformed(format!(
                        "document ends inside the start tag of {qname}"
                    )));
                }
                Some(_) => {}
            }
            if i == ws {
                return Err(malformed(format!(
                    "attributes of {qname} are not separated by whitespace"
                )));
            }
            let (key, split, value, after) = match plain_attribute(b, i) {
                // `name="value"` as nearly every attribute is written.
                Some((name_end, colon, value_end)) => {
                    let key = xml.get(i..name_end).unwrap_or("");
                    let split = match colon {
                        Some(c) => (xml.get(i..c), xml.get(c + 1..name_end).unwrap_or("")),
                        None => (None, key),
                    };
                    let value = xml.get(name_end + 2..value_end).unwrap_or("");
                    (key, Some(split), Cow::Borrowed(value), value_end + 1)
                }
                None => attribute_at(xml, i, qname)?,
            };
            i = after;
            self.attribute(qname, key, split, value, decls_start)?;
            if self.doc.attrs.len() - attrs_start > MAX_ATTRIBUTES {
                return Err(limit("attributes on one element", MAX_ATTRIBUTES, qname));
            }
            if self.doc.decls.len() - decls_start > MAX_NS_DECLS {
                return Err(limit(
                    "namespace declarations on one element",
                    MAX_NS_DECLS,
                    qname,
                ));
            }
        };
        let attrs = Span::of(&self.doc.attrs, attrs_start);
        let decls = Span::of(&self.doc.decls, decls_start);
        if self.bindings.len() + decls.len() > MAX_NS_IN_SCOPE {
            return Err(limit(
                "namespace declarations in scope",
                MAX_NS_IN_SCOPE,
                qname,
            ));
        }
        for d in self.doc.decls.get(decls.range()).unwrap_or_default() {
            self.bindings.push((d.prefix, d.uri.clone()));
        }
        let ns = self.resolve(prefix, false, qname)?;
        // Attribute prefixes resolve against this element's declarations too.
        for k in attrs.range() {
            let (aprefix, local) = match self.doc.attrs.get(k) {
                Some(a) => (a.prefix, a.name),
                None => continue,
            };
            let ans = self.resolve(aprefix, true, local)?;
            if let Some(a) = self.doc.attrs.get_mut(k) {
                a.ns = ans;
            }
        }
        if let Some(local) =
            duplicate_attribute(self.doc.attrs.get(attrs.range()).unwrap_or_default())
        {
            return Err(malformed(format!("duplicate attribute {local} on {qname}")));
        }
        let el = to_u32(self.doc.els.len());
        let parent = self.open.last().map_or(u32::MAX, |o| o.el);
        self.doc.els.push(ElementData {
            ns,
            prefix,
            name,
            parent,
            end: el.saturating_add(1),
            attrs,
            decls,
            kids: Span::default(),
            texts: Span::default(),
        });
        let open = Open {
            el,
            qname,
            comment: false,
            text: false,
            kids: self.pending.len(),
            texts: self.doc.texts.len(),
        };
        if empty {
            self.close(&open);
        } else {
            self.open.push(open);
        }
        Ok(i)
    }

    /// Records one attribute of a start tag: a namespace declaration
    /// (checked) or an ordinary attribute (its namespace resolved later).
    fn attribute(
        &mut self,
        qname: &str,
        key: &'a str,
        split: Option<QName<'a>>,
        value: Cow<'a, str>,
        decls_start: usize,
    ) -> Result<(), SamlError> {
        let binding = if key == "xmlns" {
            Some(None)
        } else {
            key.strip_prefix("xmlns:").map(Some)
        };
        let Some(binding) = binding else {
            let (prefix, name) = match split {
                Some(s) => s,
                None => split_qname(key)?,
            };
            self.doc.attrs.push(Attr {
                ns: None,
                prefix,
                name,
                value,
            });
            return Ok(());
        };
        let prefix = match binding {
            None if value == NS_XML || value == NS_XMLNS => {
                return Err(malformed(format!(
                    "reserved namespace misused: the default namespace cannot be {value:?} (on {qname})"
                )));
            }
            None => None,
            Some(p) => {
                // A checked `xmlns:p` has an NCName for `p` already.
                if split.is_none() && !is_ncname(p) {
                    return Err(malformed(format!(
                        "malformed namespace prefix {p:?} on {qname}"
                    )));
                }
                // Namespaces in XML §3: `xmlns` is never declared, `xml`
                // only to its own name, and neither name bound to another
                // prefix (libxml2 reports these and ignores the binding, so
                // accepting one would let the two parsers see different
                // elements).
                if p == "xmlns"
                    || (p == "xml" && value != NS_XML)
                    || (value == NS_XML && p != "xml")
                    || value == NS_XMLNS
                {
                    return Err(malformed(format!(
                        "reserved prefix or namespace misused: xmlns:{p}=\"{value}\""
                    )));
                }
                if value.is_empty() {
                    return Err(malformed(format!(
                        "prefix {p} cannot be undeclared (xmlns:{p}=\"\")"
                    )));
                }
                Some(p)
            }
        };
        let mut value = value;
        if !value.is_empty() && !self.known_absolute(&mut value) {
            return Err(malformed(format!(
                "namespace name {value:?} is not an absolute URI (canonicalisation refuses relative ones)"
            )));
        }
        let mine = self.doc.decls.get(decls_start..).unwrap_or_default();
        if mine.iter().any(|d| d.prefix == prefix) {
            return Err(malformed(format!(
                "namespace prefix {} declared twice on {qname}",
                prefix.unwrap_or("(default)"),
            )));
        }
        self.doc.decls.push(NsDecl { prefix, uri: value });
        Ok(())
    }

    fn lookup(&self, prefix: Option<&str>) -> Option<&Cow<'a, str>> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| same_opt(*p, prefix))
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
            Some("xmlns") => Err(malformed(format!("{qname} uses the reserved prefix xmlns"))),
            Some(p) => match self.lookup(Some(p)) {
                Some(u) => Ok(Some(u.clone())),
                None => Err(malformed(format!(
                    "{} {qname} uses undeclared prefix {p}",
                    if attribute { "attribute" } else { "element" }
                ))),
            },
            None if attribute => Ok(None),
            None => Ok(self.lookup(None).filter(|u| !u.is_empty()).cloned()),
        }
    }

    /// Whether a namespace name is an absolute URI, remembering the ones
    /// that are (borrowed from the input) for the rest of the document.
    /// A well-known one becomes the constant itself, whose pointer
    /// [`same`] matches at once wherever the checks name it.
    fn known_absolute(&mut self, uri: &mut Cow<'a, str>) -> bool {
        let Cow::Borrowed(b) = *uri else {
            return absolute_uri(uri);
        };
        if let Some(k) = WELL_KNOWN_NAMESPACES.iter().find(|k| same(k, b)) {
            *uri = Cow::Borrowed(k);
            return true;
        }
        if self.uris.iter().any(|u| same(u, b)) {
            return true;
        }
        let ok = absolute_uri(b);
        if ok && self.uris.len() < MAX_REMEMBERED_URIS {
            self.uris.push(b);
        }
        ok
    }

    /// Finishes an element: places its children, drops its declarations.
    fn close(&mut self, open: &Open<'a>) {
        let kids_start = self.doc.kids.len();
        if open.kids < self.pending.len() {
            self.doc.kids.extend(self.pending.drain(open.kids..));
        }
        let end = to_u32(self.doc.els.len());
        let kids = Span::of(&self.doc.kids, kids_start);
        let texts = Span::of(&self.doc.texts, open.texts);
        let mut declared = 0;
        if let Some(d) = self.doc.els.get_mut(open.el as usize) {
            d.end = end;
            d.kids = kids;
            d.texts = texts;
            declared = d.decls.len();
        }
        self.bindings
            .truncate(self.bindings.len().saturating_sub(declared));
        if self.open.is_empty() {
            self.root_closed = true;
        } else {
            self.pending.push(Kid::Element(open.el));
        }
    }
}

impl Open<'_> {
    /// The local name, for messages.
    fn qname_local(&self) -> &str {
        self.qname.rsplit(':').next().unwrap_or(self.qname)
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
const TEXT_SPECIAL: u8 = 16; // '>' '&' CR, C0 controls but TAB and LF, 0xEF
const NOT_SPACE: u8 = 32; // anything but space, TAB, LF, CR

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
        if (b < 0x20 && b != b'\t' && b != b'\n') || b == b'>' || b == b'&' || b == 0xEF {
            k |= TEXT_SPECIAL;
        }
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            k |= NOT_SPACE;
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

/// A qualified name split into prefix and local part, both checked NCNames.
type QName<'a> = (Option<&'a str>, &'a str);

/// What [`attribute_at`] reads.
type RawAttr<'a> = (&'a str, Option<QName<'a>>, Cow<'a, str>, usize);

/// `a == b` for the names, prefixes and namespace names a document is
/// full of, inline: they are short, and a check compares them hundreds of
/// times (libc's `memcmp` was called ~370 times per Okta-shaped check, a
/// call, a PLT jump and a branchy prologue each). Equal pointers (a
/// well-known namespace name, interned from [`WELL_KNOWN_NAMESPACES`]) answer at
/// once; otherwise the bytes are compared a word at a time, the last word
/// overlapping the one before it. A unit test holds it to `==`.
#[inline]
pub(crate) fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same`] for optional prefixes (`None`: no prefix, the default namespace).
#[inline]
pub(crate) fn same_opt(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// [`same`] on bytes.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if std::ptr::eq(a.as_ptr(), b.as_ptr()) {
        return true;
    }
    let word = |s: &[u8], i: usize| -> Option<u64> {
        s.get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    let half = |s: &[u8], i: usize| -> Option<u32> {
        s.get(i..i + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map(u32::from_ne_bytes)
    };
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        // 0 to 3 bytes: the first, middle and last cover them all.
        a.first() == b.first() && a.get(n / 2) == b.get(n / 2) && a.last() == b.last()
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Reads the next attribute of an XML declaration's content (what follows
/// `xml`): `(name, value, what follows)`, or `None` at the end.
fn next_attribute<'a>(rest: &'a str, what: &str) -> Result<Option<ScannedAttr<'a>>, SamlError> {
    let b = rest.as_bytes();
    let mut i = 0;
    while b.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    if i == b.len() {
        return Ok(None);
    }
    if i == 0 {
        return Err(SamlError::MalformedXml(format!(
            "attributes of {what} are not separated by whitespace"
        )));
    }
    let (name, _, value, after) = attribute_at(rest, i, what)?;
    Ok(Some((name, value, rest.get(after..).unwrap_or(""))))
}

/// Reads `name = "value"` starting at byte `i` of `s` (a name's first byte):
/// `(qualified name, its split when it is an ASCII name checked while
/// scanned (else the caller splits and checks it), normalised value, index
/// after the closing quote)`. One
/// pass does what XML demands of an attribute: `=` with optional
/// whitespace, a quoted value without `<`, references resolved, literal
/// TAB/LF/CR (and CRLF) normalised to a space, only XML characters.
/// (Whitespace before it is the caller's: `<a k="1"j="2">` is not XML.)
fn attribute_at<'a>(s: &'a str, mut i: usize, qname: &str) -> Result<RawAttr<'a>, SamlError> {
    let b = s.as_bytes();
    let bad = |what: &str| SamlError::MalformedXml(format!("{what} in the start tag of {qname}"));
    let name_start = i;
    let ends_name = |c: u8| is_space(c) || matches!(c, b'=' | b'>' | b'/');
    let mut split = None;
    match scan_ascii_qname(b, i) {
        // An ASCII name, checked as it is scanned.
        Some((end, colon)) if b.get(end).is_none_or(|&c| ends_name(c)) => {
            let all = s.get(name_start..end).unwrap_or("");
            split = Some(match colon {
                Some(c) => (s.get(name_start..c), s.get(c + 1..end).unwrap_or("")),
                None => (None, all),
            });
            i = end;
        }
        _ => {
            while b.get(i).is_some_and(|&c| !ends_name(c)) {
                i += 1;
            }
        }
    }
    let name = s.get(name_start..i).unwrap_or("");
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
    let raw = s.get(open..close).unwrap_or("");
    let value = attribute_value(raw).map_err(|e| match e {
        SamlError::MalformedXml(m) => {
            SamlError::MalformedXml(format!("value of attribute {name} on {qname}: {m}"))
        }
        other => other,
    })?;
    Ok((name, split, value, close + 1))
}

/// The common attribute at `b[i..]`: an ASCII qualified name, `=` and a
/// quoted value with nothing to resolve, normalise or refuse (no `<`, `&`,
/// control character or 0xEF byte). Returns where the name ends, its
/// colon, and where the closing quote is; `None` for anything else, which
/// [`attribute_at`] then reads (and judges) in full.
fn plain_attribute(b: &[u8], i: usize) -> Option<(usize, Option<usize>, usize)> {
    let (name_end, colon) = scan_ascii_qname(b, i)?;
    if b.get(name_end) != Some(&b'=') {
        return None;
    }
    let quote = *b.get(name_end + 1).filter(|&&q| q == b'"' || q == b'\'')?;
    let start = name_end + 2;
    let value = b.get(start..)?;
    // The first quote, `<` or `&` (one SIMD search) must be the closing
    // quote, and nothing before it a control character or an 0xEF byte
    // (a branch-free pass the compiler vectorises).
    let len = memchr::memchr3(quote, b'<', b'&', value)?;
    if value.get(len) != Some(&quote) {
        return None;
    }
    let special = value
        .get(..len)?
        .iter()
        .fold(false, |seen, &c| seen | (c < 0x20) | (c == 0xEF));
    (!special).then_some((name_end, colon, start + len))
}

/// An attribute value as XML 1.0 reads it (no DTD, so every attribute is
/// CDATA): references resolved, each literal TAB, LF, CR or CRLF becomes one
/// space; `<` and non-XML characters refused. Borrows when nothing changes.
fn attribute_value(raw: &str) -> Result<Cow<'_, str>, SamlError> {
    let b = raw.as_bytes();
    // Nearly every value is plain: nothing to resolve, normalise or refuse.
    if !has_attr_special(b) {
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

/// Whether `b` holds a byte an attribute value cannot take as it stands:
/// `<`, `&`, a C0 control (TAB, LF and CR included: they become spaces) or
/// 0xEF (the lead byte of U+FFFE/U+FFFF). Eight bytes at a time (SWAR), the
/// rest through the class table.
fn has_attr_special(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero exactly where the high bit of the result is set
    // (the classic test; no false positives when only the high bit is read
    // after masking with !x).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        // Bytes below 0x20: (x & 0xE0..) is zero there.
        let control = zero(x & 0xE0E0_E0E0_E0E0_E0E0);
        let lt = zero(x ^ (ONES * u64::from(b'<')));
        let amp = zero(x ^ (ONES * u64::from(b'&')));
        let ef = zero(x ^ (ONES * 0xEF));
        if control | lt | amp | ef != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&c| class(c, ATTR_SPECIAL))
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

/// An ASCII qualified name at `b[i..]` (an NCName, or two joined by one
/// colon): where it ends and where its colon is. `None` when the bytes
/// there do not start one; whatever follows the returned end (a second
/// colon, a non-ASCII name character) is the caller's to judge, which
/// falls back to [`split_qname`] for anything but a name's terminator.
fn scan_ascii_qname(b: &[u8], i: usize) -> Option<(usize, Option<usize>)> {
    let mut j = i;
    if !b.get(j).is_some_and(|&c| class(c, NAME_START)) {
        return None;
    }
    j += 1;
    let mut colon = None;
    loop {
        match b.get(j) {
            Some(&c) if class(c, NAME_CHAR) => j += 1,
            Some(b':')
                if colon.is_none() && b.get(j + 1).is_some_and(|&c| class(c, NAME_START)) =>
            {
                colon = Some(j);
                j += 2;
            }
            _ => return Some((j, colon)),
        }
    }
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
        let doc = parse("<a><!-- x --><b>t</b><!-- y -->\n</a>").unwrap();
        assert_eq!(doc.root().text(), "t\n");
    }

    #[test]
    fn entities_and_cdata_are_text() {
        let doc = parse("<a>x&amp;y&#65;<![CDATA[<z>]]></a>").unwrap();
        assert_eq!(doc.root().text(), "x&yA<z>");
        assert_eq!(doc.root().children().count(), 1, "one text run");
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
        let xml = r#"<p:a xmlns:p="urn:x" k="v">text</p:a>"#;
        let doc = parse(xml).unwrap();
        let el = doc.root();
        assert!(matches!(el.attrs()[0].value, Cow::Borrowed("v")));
        let Some(Node::Text(t)) = el.children().next() else {
            panic!("no text")
        };
        assert_eq!(t, "text");
        assert!(xml.as_bytes().as_ptr_range().contains(&t.as_ptr()));
        assert_eq!((el.prefix(), el.name()), (Some("p"), "a"));
        let doc = parse("<a k=\"x&amp;y\">1&#65;2</a>").unwrap();
        let el = doc.root();
        assert_eq!(el.attr("k"), Some("x&y"));
        assert_eq!(el.text(), "1A2");
    }

    /// `same` is `==`: every length from 0 to 40 (both sides of the word
    /// and half-word boundaries), strings differing in exactly one byte at
    /// every position, random pairs over a two-letter alphabet (so many
    /// are equal), and a string against itself (the pointer shortcut).
    #[test]
    fn same_is_byte_equality() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "{n}");
            assert!(same_bytes(&a, &a), "{n}");
            for i in 0..n {
                let mut b = a.clone();
                if let Some(c) = b.get_mut(i) {
                    *c ^= 0x20;
                }
                assert!(!same_bytes(&a, &b), "{n} {i}");
            }
            let mut longer = a.clone();
            longer.push(b'a');
            assert!(!same_bytes(&a, &longer));
        }
        let xs: Vec<Vec<u8>> = crate::testutil::random_strings(7, b"ab", 20, 4000).collect();
        for pair in xs.chunks_exact(2) {
            if let [x, y] = pair {
                // Cut to the same length, so that many pairs are equal.
                let m = x.len().min(y.len());
                let (x, y) = (x.get(..m).unwrap(), y.get(..m).unwrap());
                assert_eq!(same_bytes(x, y), x == y, "{x:?} {y:?}");
            }
        }
        assert!(same_opt(None, None));
        assert!(!same_opt(None, Some("")));
        assert!(same_opt(Some("saml2"), Some("saml2")));
        assert!(!same_opt(Some("saml2"), Some("saml3")));
    }

    /// A declared well-known namespace name becomes the constant itself.
    #[test]
    fn well_known_namespaces_are_interned() {
        let xml =
            r#"<p:R xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns="urn:x:other"><a/></p:R>"#;
        let doc = parse(xml).unwrap();
        let ns = doc.root().ns().unwrap();
        // The table's own string (whether the compiler merged it with each
        // use of the constant elsewhere is its business).
        assert!(
            WELL_KNOWN_NAMESPACES
                .iter()
                .any(|k| std::ptr::eq(*k, ns) && *k == NS_PROTOCOL)
        );
        assert!(doc.root().is(NS_PROTOCOL, "R"));
        let a = doc.root().elements().next().unwrap();
        assert_eq!(a.ns(), Some("urn:x:other"));
        assert!(a.is("urn:x:other", "a"));
        assert!(!a.is(NS_PROTOCOL, "a"));
    }

    /// The one-pass attribute reader agrees with the full one wherever it
    /// answers, and declines every value the full one would change or
    /// refuse: each special byte at every offset of values of 0-20 bytes,
    /// both quote styles.
    #[test]
    fn plain_attribute_agrees_with_the_full_reader() {
        let specials = [
            "<", "&amp;", "\t", "\n", "\r", "\u{1}", "\u{FFFE}", "\u{FEFF}", "'", "\"", ">", "é",
        ];
        let mut checked = 0;
        for len in 0..=20usize {
            for pos in 0..=len {
                for sp in specials {
                    for q in ['"', '\''] {
                        let mut v: String =
                            "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                        v.insert_str(pos, sp);
                        let tag = format!("p:k={q}{v}{q} rest");
                        let b = tag.as_bytes();
                        let full = attribute_at(&tag, 0, "e");
                        match plain_attribute(b, 0) {
                            Some((name_end, colon, end)) => {
                                let (name, split, value, after) = full.unwrap();
                                assert_eq!((name, split), ("p:k", Some((Some("p"), "k"))));
                                assert_eq!((name_end, colon, end + 1), (3, Some(1), after));
                                assert!(matches!(value, Cow::Borrowed(_)), "{tag:?}");
                                assert_eq!(tag.get(5..end), Some(value.as_ref()));
                                checked += 1;
                            }
                            None => {
                                // Declined: the value has something to
                                // resolve, normalise or refuse (or ends early).
                                let plain = !v
                                    .bytes()
                                    .any(|c| c < 0x20 || c == b'<' || c == b'&' || c == 0xEF);
                                assert!(!plain || v.contains(q), "declined a plain value: {tag:?}");
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// Short text runs read in one pass come out as the general path reads
    /// them (kept, refused or resolved alike).
    #[test]
    fn short_text_runs_read_as_before() {
        for t in [
            "x", " ", "\n  ", "a>b", "a]]>b", "&amp;", "a\r\nb", "\u{1}", "\u{FFFF}", "é", "\t",
        ] {
            let doc = format!("<r><a>{t}</a></r>");
            let long = format!("<r><a>{t}{}</a></r>", " ".repeat(70));
            match (parse(&doc), parse(&long)) {
                (Ok(d), Ok(l)) => {
                    let a = d.root().elements().next().unwrap().text();
                    let b = l.root().elements().next().unwrap().text();
                    assert_eq!(format!("{a}{}", " ".repeat(70)), b, "{t:?}");
                }
                (Err(_), Err(_)) => {}
                (d, l) => panic!("{t:?}: short {d:?}, long {l:?}"),
            }
        }
    }

    #[test]
    fn well_known_namespaces_are_absolute_uris() {
        for ns in WELL_KNOWN_NAMESPACES {
            assert!(absolute_uri(ns), "{ns}");
        }
    }

    #[test]
    fn xml_prefix_is_predeclared() {
        let doc = parse(r#"<a xml:lang="en"/>"#).unwrap();
        assert_eq!(doc.root().attrs()[0].ns.as_deref(), Some(NS_XML));
    }

    #[test]
    fn namespaces_resolve() {
        let doc = parse(r#"<p:a xmlns:p="urn:x" xmlns="urn:d" p:k="1" k="2"><b/></p:a>"#).unwrap();
        let el = doc.root();
        assert!(el.is("urn:x", "a"));
        assert_eq!(el.attr("k"), Some("2"));
        assert!(el.child("urn:d", "b").is_some());
    }

    #[test]
    fn structure_parents_walk_and_text_spans() {
        let doc =
            parse("<r><a>1<b>2</b>3</a><c/><!-- x --><d>4<![CDATA[5]]>&#54;</d></r>").unwrap();
        let r = doc.root();
        assert_eq!(doc.element_count(), 5);
        assert_eq!(r.text(), "123456");
        let names: Vec<&str> = r.elements().map(|e| e.name()).collect();
        assert_eq!(names, ["a", "c", "d"]);
        let a = r.elements().next().unwrap();
        assert_eq!(a.text(), "123");
        assert_eq!(a.children().count(), 3);
        assert_eq!(a.parent(), Some(r));
        assert_eq!(r.parent(), None);
        let mut seen = Vec::new();
        r.walk(&mut |e, p| seen.push((e.name(), p.map(|p| p.name()))));
        assert_eq!(
            seen,
            [
                ("r", None),
                ("a", Some("r")),
                ("b", Some("a")),
                ("c", Some("r")),
                ("d", Some("r"))
            ]
        );
        let mut sub = Vec::new();
        a.walk(&mut |e, _| sub.push(e.name()));
        assert_eq!(sub, ["a", "b"]);
        // Handles of two parses of the same text are different elements.
        let other =
            parse("<r><a>1<b>2</b>3</a><c/><!-- x --><d>4<![CDATA[5]]>&#54;</d></r>").unwrap();
        assert_ne!(other.root(), r);
    }

    #[test]
    fn markup_edge_cases() {
        for ok in [
            "\u{feff}<a/>",
            "\u{feff}<?xml version='1.0'?><a/>",
            "<a></a >",
            "<a></a\t>",
            "<a>]]&gt;</a>",
            "<a/><!-- after -->\n",
            "<a k=\"1>\"/>",
            "<a\nk = '1'\n/>",
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for (bad, code) in [
            ("<a/>&#32;", "malformed_xml"),
            ("<a/><![CDATA[ ]]>", "malformed_xml"),
            ("<!-- c --><?xml version='1.0'?><a/>", "malformed_xml"),
            ("<?xml?><a/>", "malformed_xml"),
            ("<?xmlfoo x?><a/>", "processing_instruction_forbidden"),
            ("<!doctype a><a/>", "dtd_forbidden"),
            ("<a k='1'/ >", "malformed_xml"),
            ("<a></b>", "malformed_xml"),
            ("<a></a", "malformed_xml"),
            ("<a k='1'", "malformed_xml"),
            ("<a><!-- x", "malformed_xml"),
            ("<a><![CDATA[x", "malformed_xml"),
            ("<a><?x", "malformed_xml"),
            ("<a/><b/>", "malformed_xml"),
            ("</a>", "malformed_xml"),
            ("<a><!x></a>", "malformed_xml"),
            ("<", "malformed_xml"),
            ("", "malformed_xml"),
            ("  ", "malformed_xml"),
            ("<a k>", "malformed_xml"),
            ("<a k=1/>", "malformed_xml"),
            ("<a>&amp</a>", "malformed_xml"),
        ] {
            assert_eq!(parse(bad).map(|_| ()).unwrap_err().code(), code, "{bad:?}");
        }
    }

    #[test]
    fn attribute_specials_found_in_every_position() {
        let scalar = |b: &[u8]| b.iter().any(|&c| class(c, ATTR_SPECIAL));
        for len in 0..24 {
            for pos in 0..len.max(1) {
                for c in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    if let Some(slot) = v.get_mut(pos) {
                        *slot = c;
                    }
                    assert_eq!(
                        has_attr_special(&v),
                        scalar(&v),
                        "len {len} pos {pos} byte {c:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn line_ends_and_references_in_text() {
        let doc = parse("<a>\r\n&#13;x\r</a>").unwrap();
        assert_eq!(doc.root().text(), "\n\rx\n");
        let doc = parse("<a> <!-- c --> </a>").unwrap();
        assert_eq!(doc.root().text(), "  ");
    }
}
