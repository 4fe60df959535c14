//! A small, bounded, namespace-resolved XML tree built on quick-xml.
//!
//! SAML messages are small (the decode step caps them), so one pass into an
//! owned tree is cheap and lets every check read the document the same way.
//! The builder refuses what a SAML message never needs and attackers love:
//! DOCTYPE (and with it DTDs, entity expansion and XXE), processing
//! instructions, undefined entity references, invalid character references
//! and excessive nesting. Comments between elements are dropped. A comment
//! beside text (`<NameID>admin@example.com<!---->.evil.org</NameID>`, the
//! comment-injection attack) is refused outright: no IdP writes one, and
//! libxmlsec1's reduce step cannot match such text either. Text is always read
//! whole (adjacent runs, entities and CDATA joined), never a truncated prefix.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

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
pub struct Attr {
    /// Namespace URI, `None` for unprefixed attributes.
    pub ns: Option<String>,
    /// The prefix as written (canonicalisation writes it back).
    pub prefix: Option<String>,
    /// Local name.
    pub name: String,
    /// Value after entity and whitespace normalisation.
    pub value: String,
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (text and CDATA, comments removed, adjacent runs joined).
    Text(String),
}

/// A namespace declaration written on an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsDecl {
    /// The prefix declared, `None` for the default namespace.
    pub prefix: Option<String>,
    /// The namespace URI (empty for `xmlns=""`).
    pub uri: String,
}

/// An element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, `None` when unqualified.
    pub ns: Option<String>,
    /// The prefix as written, `None` when unprefixed.
    pub prefix: Option<String>,
    /// Local name.
    pub name: String,
    /// Attributes, namespace declarations excluded.
    pub attrs: Vec<Attr>,
    /// Namespace declarations on this element, in document order.
    pub ns_decls: Vec<NsDecl>,
    /// Children in document order.
    pub children: Vec<Node>,
}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    /// A readable `prefix-free` name for messages, e.g. `{urn:..}Response`.
    pub fn display_name(&self) -> String {
        match &self.ns {
            Some(ns) => format!("{{{ns}}}{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The value of the unqualified attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|c| match c {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements named `{ns}name`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(ns, name))
    }

    /// The first child element named `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
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
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Element, Option<&'a Element>)) {
        f(self, None);
        self.walk_children(f);
    }

    fn walk_children<'a>(&'a self, f: &mut dyn FnMut(&'a Element, Option<&'a Element>)) {
        for e in self.elements() {
            f(e, Some(self));
            e.walk_children(f);
        }
    }
}

/// Parses `xml` into a tree, refusing DOCTYPE, processing instructions,
/// undefined entities and nesting deeper than [`MAX_DEPTH`].
pub fn parse(xml: &str) -> Result<Element, SamlError> {
    let mut reader = NsReader::from_str(xml);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
    }
    let mut stack: Vec<Element> = Vec::new();
    // Per open element: (saw a comment, saw non-whitespace text).
    let mut mixed: Vec<(bool, bool)> = Vec::new();
    let mut root: Option<Element> = None;
    let mut seen_decl = false;
    let mut seen_anything = false;
    loop {
        let pos = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| SamlError::MalformedXml(format!("{e} (near byte {pos})")))?;
        match event {
            Event::Decl(_) => {
                if seen_decl || seen_anything {
                    return Err(SamlError::MalformedXml(
                        "XML declaration not at the start of the document".into(),
                    ));
                }
                seen_decl = true;
            }
            Event::DocType(_) => return Err(SamlError::DtdForbidden),
            Event::PI(pi) => {
                let target = String::from_utf8_lossy(pi.target()).into_owned();
                return Err(SamlError::ProcessingInstruction(target));
            }
            Event::Start(ref s) | Event::Empty(ref s) => {
                seen_anything = true;
                if root.is_some() {
                    return Err(SamlError::MalformedXml(
                        "content after the root element".into(),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(SamlError::TooDeep(MAX_DEPTH));
                }
                let el_ns = resolved_ns(&ns, "element", s.name().as_ref())?;
                let name = utf8(s.local_name().as_ref())?.to_owned();
                let prefix = match s.name().prefix() {
                    Some(p) => Some(utf8(p.as_ref())?.to_owned()),
                    None => None,
                };
                let mut attrs: Vec<Attr> = Vec::new();
                let mut ns_decls: Vec<NsDecl> = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| SamlError::MalformedXml(e.to_string()))?;
                    let key = a.key;
                    if let Some(binding) = key.as_namespace_binding() {
                        let uri = a
                            .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                            .map_err(|e| SamlError::MalformedXml(e.to_string()))?;
                        check_chars(&uri)?;
                        let prefix = match binding {
                            quick_xml::name::PrefixDeclaration::Default => None,
                            quick_xml::name::PrefixDeclaration::Named(p) => {
                                let p = utf8(p)?;
                                if p == "xmlns" || (p == "xml" && uri != NS_XML) {
                                    return Err(SamlError::MalformedXml(format!(
                                        "reserved prefix {p} cannot be declared"
                                    )));
                                }
                                if uri.is_empty() {
                                    return Err(SamlError::MalformedXml(format!(
                                        "prefix {p} cannot be undeclared (xmlns:{p}=\"\")"
                                    )));
                                }
                                Some(p.to_owned())
                            }
                        };
                        if ns_decls.iter().any(|d| d.prefix == prefix) {
                            return Err(SamlError::MalformedXml(format!(
                                "namespace prefix {} declared twice on {}",
                                prefix.as_deref().unwrap_or("(default)"),
                                utf8(s.name().as_ref())?
                            )));
                        }
                        ns_decls.push(NsDecl {
                            prefix,
                            uri: uri.into_owned(),
                        });
                        continue;
                    }
                    let (ans, local) = reader.resolver().resolve_attribute(key);
                    let ans = resolved_ns(&ans, "attribute", key.as_ref())?;
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                        .map_err(|e| SamlError::MalformedXml(e.to_string()))?;
                    check_chars(&value)?;
                    let name = utf8(local.as_ref())?.to_owned();
                    let aprefix = match key.prefix() {
                        Some(p) => Some(utf8(p.as_ref())?.to_owned()),
                        None => None,
                    };
                    if attrs.iter().any(|x| x.ns == ans && x.name == name) {
                        return Err(SamlError::MalformedXml(format!(
                            "duplicate attribute {name} on {}",
                            utf8(s.name().as_ref())?
                        )));
                    }
                    attrs.push(Attr {
                        ns: ans,
                        prefix: aprefix,
                        name,
                        value: value.into_owned(),
                    });
                }
                let el = Element {
                    ns: el_ns,
                    prefix,
                    name,
                    attrs,
                    ns_decls,
                    children: Vec::new(),
                };
                if matches!(event, Event::Start(_)) {
                    stack.push(el);
                    mixed.push((false, false));
                } else {
                    attach(&mut stack, &mut root, el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| SamlError::MalformedXml("unbalanced end tag".into()))?;
                mixed.pop();
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let text = t
                    .xml10_content()
                    .map_err(|e| SamlError::MalformedXml(e.to_string()))?;
                note_text(&mut mixed, &stack, &text)?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(c) => {
                let text = c
                    .xml10_content()
                    .map_err(|e| SamlError::MalformedXml(e.to_string()))?;
                note_text(&mut mixed, &stack, &text)?;
                push_text(&mut stack, &text)?;
            }
            Event::GeneralRef(r) => {
                let ch = match r
                    .resolve_char_ref()
                    .map_err(|e| SamlError::MalformedXml(e.to_string()))?
                {
                    Some(c) => c,
                    None => {
                        let name = r
                            .decode()
                            .map_err(|e| SamlError::MalformedXml(e.to_string()))?;
                        match name.as_ref() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "quot" => '"',
                            "apos" => '\'',
                            other => {
                                return Err(SamlError::MalformedXml(format!(
                                    "undefined entity &{other};"
                                )));
                            }
                        }
                    }
                };
                let mut buf = [0u8; 4];
                let s = ch.encode_utf8(&mut buf);
                note_text(&mut mixed, &stack, s)?;
                push_text(&mut stack, s)?;
            }
            Event::Comment(_) => {
                if let Some(frame) = mixed.last_mut() {
                    frame.0 = true;
                    if frame.1 {
                        return Err(comment_in_text(&stack));
                    }
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(SamlError::MalformedXml(
            "document ends inside an element (truncated?)".into(),
        ));
    }
    root.ok_or_else(|| SamlError::MalformedXml("no root element".into()))
}

/// Records text in the current element; text beside a comment is refused.
fn note_text(mixed: &mut [(bool, bool)], stack: &[Element], text: &str) -> Result<(), SamlError> {
    if text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
        return Ok(());
    }
    if let Some(frame) = mixed.last_mut() {
        frame.1 = true;
        if frame.0 {
            return Err(comment_in_text(stack));
        }
    }
    Ok(())
}

fn comment_in_text(stack: &[Element]) -> SamlError {
    SamlError::CommentInText(stack.last().map(|e| e.name.clone()).unwrap_or_default())
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(el)),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), SamlError> {
    check_chars(text)?;
    let Some(parent) = stack.last_mut() else {
        if text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
            return Ok(());
        }
        return Err(SamlError::MalformedXml(
            "text outside the root element".into(),
        ));
    };
    if let Some(Node::Text(last)) = parent.children.last_mut() {
        last.push_str(text);
    } else {
        parent.children.push(Node::Text(text.to_owned()));
    }
    Ok(())
}

/// Refuses characters outside the XML 1.0 `Char` production.
fn check_chars(s: &str) -> Result<(), SamlError> {
    for c in s.chars() {
        let ok = matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}';
        if !ok {
            return Err(SamlError::MalformedXml(format!(
                "character U+{:04X} is not allowed in XML",
                c as u32
            )));
        }
    }
    Ok(())
}

fn resolved_ns(
    r: &ResolveResult<'_>,
    what: &str,
    qname: &[u8],
) -> Result<Option<String>, SamlError> {
    match r {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(utf8(ns.as_ref())?.to_owned())),
        ResolveResult::Unknown(p) => Err(SamlError::MalformedXml(format!(
            "{what} {} uses undeclared prefix {}",
            String::from_utf8_lossy(qname),
            String::from_utf8_lossy(p)
        ))),
    }
}

fn utf8(b: &[u8]) -> Result<&str, SamlError> {
    std::str::from_utf8(b).map_err(|e| SamlError::NotUtf8(e.valid_up_to()))
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
    fn namespaces_resolve() {
        let el = parse(r#"<p:a xmlns:p="urn:x" xmlns="urn:d" p:k="1" k="2"><b/></p:a>"#).unwrap();
        assert!(el.is("urn:x", "a"));
        assert_eq!(el.attr("k"), Some("2"));
        assert!(el.child("urn:d", "b").is_some());
    }
}
