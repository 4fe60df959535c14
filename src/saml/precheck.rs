//! Structural pre-check of a parsed message, before any cryptography runs.
//!
//! libxmlsec1 implements the whole of XML-DSig: XSLT and XPath transforms,
//! arbitrary Reference URIs, Manifests, RetrievalMethod, several signatures
//! per element. SAML needs a small, strict subset of it, and everything
//! outside that subset is either an attack or a denial of service (an XSLT
//! transform costs seconds and hundreds of megabytes before the signature is
//! even found wrong). This module refuses every document outside the strict
//! profile so that libxmlsec1 only ever sees a signature shaped like the ones
//! real IdPs send:
//!
//! * the root is a SAML 2.0 `samlp:Response`, Version 2.0, with an ID;
//! * exactly one `Assertion` or `EncryptedAssertion` in the whole document,
//!   a direct child of the Response;
//! * no two elements share an ID;
//! * a `ds:Signature` only as a direct child of the Response or of the
//!   Assertion, at most one each, with exactly one `Reference` whose URI is
//!   `#` + its parent's ID;
//! * transforms exactly enveloped-signature then exclusive c14n (an
//!   `InclusiveNamespaces` PrefixList is allowed), c14n exclusive without
//!   comments, algorithms from the allow-list;
//! * no `Object`, `Manifest` or `RetrievalMethod` inside a signature.

use std::collections::HashSet;

use super::error::SamlError;
use super::xml::{Element, NS_ASSERTION, NS_DSIG, NS_EXC_C14N, NS_PROTOCOL, NS_XML, is_ncname};

/// Exclusive canonicalisation without comments.
pub const ALG_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// The enveloped-signature transform.
pub const ALG_ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// Signature algorithms always accepted.
const SIG_STRONG: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
/// SHA-1 signature algorithms, accepted only with `insecure_allow_sha1`.
const SIG_SHA1: &[&str] = &[
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
];
/// Digest algorithms always accepted.
const DIGEST_STRONG: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
/// SHA-1 digest, accepted only with `insecure_allow_sha1`.
const DIGEST_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

/// What the pre-check learnt about the message's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// The Response carries a signature (not yet verified).
    pub response_signed: bool,
    /// The Assertion carries a signature (not yet verified).
    pub assertion_signed: bool,
    /// The assertion is an EncryptedAssertion.
    pub encrypted: bool,
    /// SignatureMethod URIs seen, for the trace.
    pub signature_algorithms: Vec<String>,
}

/// Algorithm policy for the pre-check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgorithmPolicy {
    /// Accept RSA-SHA1/ECDSA-SHA1 signatures and SHA-1 digests.
    pub insecure_allow_sha1: bool,
}

/// Checks a whole `samlp:Response` document.
pub fn precheck_response(root: Element<'_>, policy: AlgorithmPolicy) -> Result<Shape, SamlError> {
    if !root.is(NS_PROTOCOL, "Response") {
        return Err(SamlError::NotAResponse(root.display_name()));
    }
    match root.attr("Version") {
        Some("2.0") => {}
        other => {
            return Err(SamlError::UnsupportedVersion(
                other.unwrap_or("").to_owned(),
            ));
        }
    }
    if root.attr("ID").is_none_or(str::is_empty) {
        return Err(SamlError::MalformedXml("Response has no ID".into()));
    }
    // Exactly one assertion in the whole document (the survey refuses
    // more), a direct child of the root.
    let survey = Survey::of(root)?;
    let direct = root
        .elements()
        .find(|e| e.is(NS_ASSERTION, "Assertion") || e.is(NS_ASSERTION, "EncryptedAssertion"));
    let Some(assertion) = direct else {
        if survey.assertions == 1 {
            return Err(SamlError::MalformedXml(
                "the Assertion is not a direct child of the Response".into(),
            ));
        }
        // A non-Success status usually comes without an assertion; let the
        // status check report it.
        return Ok(Shape {
            response_signed: check_signatures(root, survey, policy)?.is_some(),
            ..Shape::default()
        });
    };
    let mut shape = Shape {
        encrypted: assertion.name() == "EncryptedAssertion",
        ..Shape::default()
    };
    if let Some(alg) = check_signatures(root, survey, policy)? {
        shape.response_signed = true;
        shape.signature_algorithms.push(alg);
    }
    if !shape.encrypted
        && let Some(alg) = signature_of(assertion, policy)?
    {
        shape.assertion_signed = true;
        shape.signature_algorithms.push(alg);
    }
    Ok(shape)
}

/// Checks a standalone `saml:Assertion` document (a decrypted assertion).
/// Returns the signature algorithm if the assertion is signed.
pub fn precheck_assertion(
    root: Element<'_>,
    policy: AlgorithmPolicy,
) -> Result<Option<String>, SamlError> {
    if !root.is(NS_ASSERTION, "Assertion") {
        return Err(SamlError::Decryption(format!(
            "decrypted content is {}, expected a saml:Assertion",
            root.display_name()
        )));
    }
    check_signatures(root, Survey::of(root)?, policy)
}

/// Checks a `samlp:LogoutRequest` or `samlp:LogoutResponse` document: no
/// assertion inside, unique IDs, at most one signature, on the root, in the
/// strict profile. Returns the signature algorithm if the root is signed.
pub fn precheck_logout(
    root: Element<'_>,
    policy: AlgorithmPolicy,
) -> Result<Option<String>, SamlError> {
    let survey = Survey::of(root)?;
    if survey.assertions > 0 {
        return Err(SamlError::SignatureProfile {
            element: root.display_name(),
            reason: "a logout message carries no assertion".into(),
        });
    }
    check_signatures(root, survey, policy)
}

/// What the document-wide rules need, gathered in one walk over every
/// element (they used to walk the document three times). Each rule keeps
/// its first finding, and they are reported in a fixed order (IDs, then
/// more than one assertion, here; then signature placement, in
/// [`check_signatures`]), whatever the order of the elements that broke them.
struct Survey<'d> {
    /// `Assertion` and `EncryptedAssertion` elements anywhere (one at most).
    assertions: usize,
    /// The first Signature found where the profile does not allow one.
    misplaced: Option<SamlError>,
    /// Elements with a Signature child, and how many they have.
    signed: Vec<(Element<'d>, usize)>,
}

impl<'d> Survey<'d> {
    fn of(root: Element<'d>) -> Result<Self, SamlError> {
        let mut ids = Ids::default();
        let mut id_problem = None;
        let mut s = Survey {
            assertions: 0,
            misplaced: None,
            signed: Vec::new(),
        };
        root.walk(&mut |e, parent| {
            if id_problem.is_none()
                && let Err(p) = ids.check(e)
            {
                id_problem = Some(p);
            }
            if e.is(NS_ASSERTION, "Assertion") || e.is(NS_ASSERTION, "EncryptedAssertion") {
                s.assertions += 1;
            } else if s.misplaced.is_none() && e.name() == "Signature" && e.ns() != Some(NS_DSIG) {
                // No SAML message has another kind of Signature; one in an
                // odd namespace is how a signature was once hidden from
                // this check while libxml2 still saw XML-DSig.
                s.misplaced = Some(SamlError::SignatureProfile {
                    element: e.display_name(),
                    reason: "a Signature element outside the XML-DSig namespace".into(),
                });
            } else if s.misplaced.is_none() && s.assertions <= 1 && e.is(NS_DSIG, "Signature") {
                // (Past a second assertion the document is refused anyway;
                // `signed` then stays at two entries, the Response's and
                // the assertion's, so its search is constant.)
                match signature_parent(root, parent) {
                    Ok(p) => match s.signed.iter_mut().find(|(q, _)| *q == p) {
                        Some((_, n)) => *n += 1,
                        None => s.signed.push((p, 1)),
                    },
                    Err(problem) => s.misplaced = Some(problem),
                }
            }
        });
        if let Some(p) = id_problem {
            return Err(p);
        }
        if s.assertions > 1 {
            return Err(SamlError::MultipleAssertions(s.assertions));
        }
        Ok(s)
    }
}

/// Every `ds:Signature` must sit directly under `root` or under the
/// assertion (a direct child of root, or root itself): the element it
/// signs, or why it may not be there.
fn signature_parent<'d>(
    root: Element<'d>,
    parent: Option<Element<'d>>,
) -> Result<Element<'d>, SamlError> {
    let Some(parent) = parent else {
        return Err(SamlError::SignatureProfile {
            element: "document".into(),
            reason: "a Signature cannot be the root element".into(),
        });
    };
    let parent_is_root = parent == root;
    let parent_is_assertion =
        parent.is(NS_ASSERTION, "Assertion") && (parent_is_root || parent.parent() == Some(root));
    if !(parent_is_root || parent_is_assertion) {
        return Err(SamlError::SignatureProfile {
            element: parent.display_name(),
            reason:
                "a Signature may only sign the Response or the Assertion, as their direct child"
                    .into(),
        });
    }
    Ok(parent)
}

/// The signature directly on `assertion`, after checking every signature in
/// the document is placed legally (called for the assertion inside a Response,
/// whose placement `check_signatures` on the root has already verified).
fn signature_of(
    assertion: Element<'_>,
    policy: AlgorithmPolicy,
) -> Result<Option<String>, SamlError> {
    match assertion.child(NS_DSIG, "Signature") {
        Some(sig) => check_one_signature(assertion, sig, policy).map(Some),
        None => Ok(None),
    }
}

/// The signatures' placement as the [`Survey`] of `root` found it, then
/// the profile of the signature directly under `root`, if any: returns its
/// algorithm.
fn check_signatures(
    root: Element<'_>,
    survey: Survey<'_>,
    policy: AlgorithmPolicy,
) -> Result<Option<String>, SamlError> {
    if let Some(p) = survey.misplaced {
        return Err(p);
    }
    if survey.signed.iter().any(|(_, n)| *n > 1) {
        return Err(SamlError::SignatureProfile {
            element: root.display_name(),
            reason: "more than one Signature on one element".into(),
        });
    }
    match root.child(NS_DSIG, "Signature") {
        Some(sig) => check_one_signature(root, sig, policy).map(Some),
        None => Ok(None),
    }
}

fn profile(parent: Element<'_>, reason: impl Into<String>) -> SamlError {
    SamlError::SignatureProfile {
        element: parent.name().to_owned(),
        reason: reason.into(),
    }
}

/// Checks one signature against the strict profile; returns its algorithm.
fn check_one_signature(
    parent: Element<'_>,
    sig: Element<'_>,
    policy: AlgorithmPolicy,
) -> Result<String, SamlError> {
    // Nothing that can dereference other content anywhere in the signature.
    let mut forbidden: Option<String> = None;
    sig.walk(&mut |e, p| {
        if forbidden.is_none()
            && e.ns() == Some(NS_DSIG)
            && matches!(e.name(), "Object" | "Manifest" | "RetrievalMethod")
        {
            forbidden = Some(e.name().to_owned());
        }
        if forbidden.is_none() && p.is_some() && e.is(NS_DSIG, "Signature") {
            forbidden = Some("nested Signature".into());
        }
    });
    if let Some(name) = forbidden {
        return Err(profile(parent, format!("{name} is not allowed")));
    }
    let parent_id = parent
        .attr("ID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| profile(parent, "the signed element has no ID"))?;

    let mut children = sig.elements();
    let signed_info = children
        .next()
        .filter(|e| e.is(NS_DSIG, "SignedInfo"))
        .ok_or_else(|| profile(parent, "SignedInfo must be the first child of Signature"))?;
    let value = children
        .next()
        .filter(|e| e.is(NS_DSIG, "SignatureValue"))
        .ok_or_else(|| profile(parent, "SignatureValue must follow SignedInfo"))?;
    let _ = value;
    for rest in children {
        if !rest.is(NS_DSIG, "KeyInfo") {
            return Err(profile(
                parent,
                format!("unexpected {} in Signature", rest.display_name()),
            ));
        }
    }

    let mut si = signed_info.elements();
    let c14n = si
        .next()
        .filter(|e| e.is(NS_DSIG, "CanonicalizationMethod"))
        .ok_or_else(|| profile(parent, "CanonicalizationMethod missing"))?;
    let c14n_alg = c14n.attr("Algorithm").unwrap_or("");
    if c14n_alg != ALG_EXC_C14N {
        return Err(SamlError::AlgorithmForbidden {
            kind: "canonicalization",
            uri: c14n_alg.to_owned(),
        });
    }
    check_c14n_children(parent, c14n)?;
    let method = si
        .next()
        .filter(|e| e.is(NS_DSIG, "SignatureMethod"))
        .ok_or_else(|| profile(parent, "SignatureMethod missing"))?;
    let sig_alg = method.attr("Algorithm").unwrap_or("").to_owned();
    let sig_ok = SIG_STRONG.contains(&sig_alg.as_str())
        || (policy.insecure_allow_sha1 && SIG_SHA1.contains(&sig_alg.as_str()));
    if !sig_ok {
        return Err(SamlError::AlgorithmForbidden {
            kind: "signature",
            uri: sig_alg,
        });
    }
    if method.elements().next().is_some() {
        // HMACOutputLength and friends: only meaningful for HMAC, refused.
        return Err(profile(parent, "SignatureMethod must be empty"));
    }
    let references: Vec<Element<'_>> = si.collect();
    let [reference] = references.as_slice() else {
        return Err(profile(
            parent,
            format!("exactly one Reference required, found {}", references.len()),
        ));
    };
    if !reference.is(NS_DSIG, "Reference") {
        return Err(profile(
            parent,
            format!("unexpected {} in SignedInfo", reference.display_name()),
        ));
    }
    let uri = reference.attr("URI").unwrap_or("");
    let expected = format!("#{parent_id}");
    if uri != expected {
        return Err(profile(
            parent,
            format!(
                "Reference URI is {uri:?}, expected {expected:?} (the signed element's own ID)"
            ),
        ));
    }
    if reference
        .attr("Type")
        .is_some_and(|t| t.contains("Manifest"))
    {
        return Err(profile(parent, "Manifest references are not allowed"));
    }
    let mut rc = reference.elements();
    let transforms = rc
        .next()
        .filter(|e| e.is(NS_DSIG, "Transforms"))
        .ok_or_else(|| profile(parent, "Transforms missing"))?;
    let algs: Vec<Element<'_>> = transforms.elements().collect();
    let [t1, t2] = algs.as_slice() else {
        return Err(profile(
            parent,
            "transforms must be exactly enveloped-signature then exclusive c14n",
        ));
    };
    for t in [t1, t2] {
        if !t.is(NS_DSIG, "Transform") {
            return Err(profile(
                parent,
                format!("unexpected {} in Transforms", t.display_name()),
            ));
        }
    }
    if t1.attr("Algorithm") != Some(ALG_ENVELOPED) || t1.elements().next().is_some() {
        return Err(profile(
            parent,
            format!(
                "first transform is {:?}, only enveloped-signature is allowed",
                t1.attr("Algorithm").unwrap_or("")
            ),
        ));
    }
    if t2.attr("Algorithm") != Some(ALG_EXC_C14N) {
        return Err(profile(
            parent,
            format!(
                "second transform is {:?}, only exclusive c14n is allowed",
                t2.attr("Algorithm").unwrap_or("")
            ),
        ));
    }
    check_c14n_children(parent, *t2)?;
    let digest = rc
        .next()
        .filter(|e| e.is(NS_DSIG, "DigestMethod"))
        .ok_or_else(|| profile(parent, "DigestMethod missing"))?;
    let digest_alg = digest.attr("Algorithm").unwrap_or("");
    let digest_ok = DIGEST_STRONG.contains(&digest_alg)
        || (policy.insecure_allow_sha1 && digest_alg == DIGEST_SHA1);
    if !digest_ok {
        return Err(SamlError::AlgorithmForbidden {
            kind: "digest",
            uri: digest_alg.to_owned(),
        });
    }
    rc.next()
        .filter(|e| e.is(NS_DSIG, "DigestValue"))
        .ok_or_else(|| profile(parent, "DigestValue missing"))?;
    if let Some(extra) = rc.next() {
        return Err(profile(
            parent,
            format!("unexpected {} in Reference", extra.display_name()),
        ));
    }
    Ok(sig_alg)
}

/// Most prefixes in an `InclusiveNamespaces` PrefixList (IdPs list one
/// to five: `xs`, `#default saml ds xs xsi`).
pub const MAX_INCLUSIVE_PREFIXES: usize = 16;

/// A c14n method may carry only one `ec:InclusiveNamespaces`, whose
/// PrefixList names at most [`MAX_INCLUSIVE_PREFIXES`] prefixes, each an
/// XML name or `#default`.
fn check_c14n_children(parent: Element<'_>, method: Element<'_>) -> Result<(), SamlError> {
    for (n, c) in method.elements().enumerate() {
        if n > 0 || !c.is(NS_EXC_C14N, "InclusiveNamespaces") || c.elements().next().is_some() {
            return Err(profile(
                parent,
                format!(
                    "unexpected {} inside a canonicalization method",
                    c.display_name()
                ),
            ));
        }
        let list = c.attr("PrefixList").unwrap_or("");
        let mut count = 0usize;
        for p in list.split_ascii_whitespace() {
            count += 1;
            if count > MAX_INCLUSIVE_PREFIXES {
                return Err(SamlError::XmlLimit {
                    what: "prefixes in an InclusiveNamespaces PrefixList",
                    limit: MAX_INCLUSIVE_PREFIXES,
                    element: c.display_name(),
                });
            }
            if p != "#default" && !is_ncname(p) {
                return Err(profile(
                    parent,
                    format!("InclusiveNamespaces PrefixList names {p:?}, not a prefix"),
                ));
            }
        }
    }
    Ok(())
}

/// A set of IDs: a list searched in order while small (a SAML message has a
/// handful; no hashing, no allocation beyond the list), a hash set once it
/// grows (so a message stuffed with IDs still costs linear time).
#[derive(Default)]
struct IdSet<'a> {
    few: Vec<&'a str>,
    many: Option<HashSet<&'a str>>,
}

impl<'a> IdSet<'a> {
    const FEW: usize = 16;

    /// Adds `v`; false when it was already there.
    fn insert(&mut self, v: &'a str) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(v);
        }
        if self.few.contains(&v) {
            return false;
        }
        if self.few.len() < Self::FEW {
            self.few.push(v);
        } else {
            let mut set: HashSet<&str> = self.few.drain(..).collect();
            set.insert(v);
            self.many = Some(set);
        }
        true
    }
}

/// The ID rules, element by element in document order: no two elements
/// may share an ID (unqualified `ID`, `Id` or `AssertionID`). Also what
/// samael demands before libxmlsec1 runs (the differential fuzzer found the
/// native path accepting what it refused): on each element the first
/// attribute named `ID` in any namespace (libxml2's `xmlHasProp`) must be
/// an XML name (`xs:ID`) and unique. An ID with non-ASCII characters is
/// refused outright (no IdP writes one, and libxml2 judges them by the XML
/// 1.0 4th edition's character tables, which we do not carry). This runs
/// before either verifier, so both decide alike.
#[derive(Default)]
struct Ids<'a> {
    /// Unqualified `ID`, `Id` and `AssertionID` values.
    seen: IdSet<'a>,
    /// The first attribute named `ID` in any namespace, per element.
    registered: IdSet<'a>,
}

impl<'a> Ids<'a> {
    fn check(&mut self, e: Element<'a>) -> Result<(), SamlError> {
        if let Some(a) = e.attrs().iter().find(|a| a.name == "ID") {
            let v = a.value.as_ref();
            if !v.is_ascii() {
                return Err(SamlError::MalformedXml(format!(
                    "the ID {v:?} of {} has non-ASCII characters",
                    e.name()
                )));
            }
            if !is_ncname(v) {
                return Err(SamlError::MalformedXml(format!(
                    "the ID {v:?} of {} is not an XML name (xs:ID)",
                    e.name()
                )));
            }
            if !self.registered.insert(v) {
                return Err(SamlError::DuplicateId(v.to_owned()));
            }
        }
        for a in e.attrs() {
            let id_attr = match a.ns.as_deref() {
                None => matches!(a.name, "ID" | "Id" | "AssertionID"),
                // libxml2 registers `xml:id` as an ID too (a `#x`
                // reference could reach it), so it shares the namespace
                // of IDs and must be an XML name.
                Some(ns) => ns == NS_XML && a.name == "id",
            };
            if !id_attr {
                continue;
            }
            let v = a.value.as_ref();
            if a.ns.is_some() && !(v.is_ascii() && is_ncname(v)) {
                return Err(SamlError::MalformedXml(format!(
                    "the xml:id {v:?} of {} is not an ASCII XML name",
                    e.name()
                )));
            }
            if !self.seen.insert(v) {
                return Err(SamlError::DuplicateId(v.to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Duplicates are found on both sides of the switch from the list to the
    /// hash set, and only duplicates.
    #[test]
    fn id_set_finds_duplicates_small_and_large() {
        let ids: Vec<String> = (0..100).map(|i| format!("_id{i}")).collect();
        for n in [1usize, IdSet::FEW - 1, IdSet::FEW, IdSet::FEW + 1, 100] {
            let mut set = IdSet::default();
            for id in &ids[..n] {
                assert!(set.insert(id), "{n} {id}");
            }
            for id in &ids[..n] {
                assert!(!set.insert(id), "{n} {id}");
            }
            if n < ids.len() {
                assert!(set.insert(&ids[n]), "{n}: a new ID");
            }
        }
    }
}
