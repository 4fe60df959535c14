//! Every reason a SAML Response can be refused, one variant per check.
//!
//! Each variant carries the context an operator needs (the element, the value
//! found, the value expected) and maps to a stable machine-readable code
//! ([`SamlError::code`]) used in logs, metrics, `check-response` JSON and the
//! error page. Codes never change once published; messages may.

use thiserror::Error;

/// Where a refused response went wrong. `code()` gives the stable code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamlError {
    /// The POSTed value or the decoded XML is larger than the configured cap.
    #[error(
        "the {what} is {size} bytes, over the limit of {limit} bytes ([security] max_response_bytes)"
    )]
    TooLarge {
        /// "SAMLResponse parameter" or "decoded XML".
        what: &'static str,
        /// Size seen.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The SAMLResponse is not valid base64.
    #[error("SAMLResponse is not valid base64: {0}")]
    Base64(String),
    /// The decoded bytes are not UTF-8 (the only encoding accepted).
    #[error("the decoded SAMLResponse is not UTF-8 text (byte offset {0})")]
    NotUtf8(usize),
    /// The XML is not well-formed.
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    /// A DOCTYPE (and so a DTD, entity declarations, XXE) was present.
    #[error("the document carries a DOCTYPE; DTDs and entity declarations are never accepted")]
    DtdForbidden,
    /// A processing instruction other than the XML declaration was present.
    #[error("processing instruction <?{0}?> is not allowed in a SAML message")]
    ProcessingInstruction(String),
    /// A comment beside text: the comment-injection attack on NameID and attributes.
    #[error("a comment splits the text of <{0}>; refused as comment injection")]
    CommentInText(String),
    /// Nesting deeper than the parser allows.
    #[error("XML nesting deeper than {0} levels")]
    TooDeep(usize),
    /// A count no SAML message needs (attributes or namespace declarations
    /// on one element, namespaces in scope, elements in the document) is
    /// over its limit: refused before it can cost time.
    #[error("{what} is over the limit of {limit} (at <{element}>)")]
    XmlLimit {
        /// What was counted, e.g. "attributes on one element".
        what: &'static str,
        /// The limit.
        limit: usize,
        /// The element where the limit was passed (its name as written).
        element: String,
    },
    /// The decoded POST value is raw DEFLATE: the HTTP-Redirect binding's
    /// encoding sent on the HTTP-POST binding.
    #[error(
        "the decoded SAMLResponse is not UTF-8: it looks DEFLATE-compressed (the HTTP-Redirect binding's encoding, sent on the HTTP-POST binding; the IdP must POST plain base64)"
    )]
    DeflatedOnPost,
    /// The root element is not a SAML 2.0 protocol Response.
    #[error("root element is {0}, expected a SAML 2.0 samlp:Response")]
    NotAResponse(String),
    /// Response/@Version is not 2.0.
    #[error("Response Version is {0:?}, only \"2.0\" is supported")]
    UnsupportedVersion(String),
    /// The response carries more than one Assertion/EncryptedAssertion.
    #[error("the response carries {0} assertions; exactly one is accepted")]
    MultipleAssertions(usize),
    /// The response carries no assertion.
    #[error("the response carries no Assertion or EncryptedAssertion")]
    NoAssertion,
    /// Two elements share one ID value (the basis of signature wrapping).
    #[error("ID {0:?} appears on more than one element")]
    DuplicateId(String),
    /// A ds:Signature is outside the strict SAML signature profile.
    #[error("signature on {element}: {reason}")]
    SignatureProfile {
        /// The element carrying (or meant to carry) the signature.
        element: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A signature or digest algorithm is not on the allow-list.
    #[error(
        "{kind} algorithm {uri} is not allowed ([security] allowed algorithms; SHA-1 needs insecure_allow_sha1, HMAC is never accepted)"
    )]
    AlgorithmForbidden {
        /// "signature", "digest" or "canonicalization".
        kind: &'static str,
        /// The algorithm URI found.
        uri: String,
    },
    /// Nothing in the response is signed.
    #[error("neither the Response nor the Assertion is signed")]
    SignatureMissing,
    /// A signature did not verify against any IdP metadata certificate.
    #[error("signature does not verify against the IdP's metadata certificates: {0}")]
    SignatureInvalid(String),
    /// The assertion used is not covered by a verified signature.
    #[error("the assertion is not covered by a verified signature")]
    AssertionNotSigned,
    /// Status is not Success.
    #[error("IdP answered with status {code}{}{}", sub.as_ref().map(|s| format!(" / {s}")).unwrap_or_default(), message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    StatusNotSuccess {
        /// Top-level StatusCode value.
        code: String,
        /// Nested StatusCode value, if any.
        sub: Option<String>,
        /// StatusMessage, if any.
        message: Option<String>,
    },
    /// Issuer does not name the configured IdP.
    #[error("{element} Issuer is {found:?}, expected {expected:?} ([idp] entity id from metadata)")]
    IssuerMismatch {
        /// "Response" or "Assertion".
        element: &'static str,
        /// Issuer found (empty when absent).
        found: String,
        /// Configured IdP entity id.
        expected: String,
    },
    /// Response/@Destination is not the ACS URL.
    #[error("Response Destination is {found:?}, expected {expected:?} ([sp] acs_url)")]
    DestinationMismatch {
        /// Destination found.
        found: String,
        /// Configured ACS URL.
        expected: String,
    },
    /// No AudienceRestriction, or one that does not name the SP.
    #[error("{0}")]
    AudienceMismatch(String),
    /// A NotOnOrAfter (or the IssueInstant age) has passed.
    #[error("{element} expired at {at} (clock {now}, skew allowance {skew_secs} s)")]
    Expired {
        /// The element whose time is past.
        element: &'static str,
        /// The limit that passed.
        at: String,
        /// The validation clock.
        now: String,
        /// Skew allowance used.
        skew_secs: i64,
    },
    /// A NotBefore (or an IssueInstant) is in the future.
    #[error("{element} is not valid before {at} (clock {now}, skew allowance {skew_secs} s)")]
    NotYetValid {
        /// The element whose time is in the future.
        element: &'static str,
        /// The limit.
        at: String,
        /// The validation clock.
        now: String,
        /// Skew allowance used.
        skew_secs: i64,
    },
    /// A time attribute could not be parsed.
    #[error("{element} has an unreadable time {value:?}")]
    BadTime {
        /// Element/attribute.
        element: &'static str,
        /// Text found.
        value: String,
    },
    /// No bearer SubjectConfirmation satisfied the profile.
    #[error("no usable bearer SubjectConfirmation: {0}")]
    SubjectConfirmation(String),
    /// SubjectConfirmationData Recipient is not the ACS URL.
    #[error("SubjectConfirmationData Recipient is {found:?}, expected {expected:?} ([sp] acs_url)")]
    RecipientMismatch {
        /// Recipient found (empty when absent).
        found: String,
        /// Configured ACS URL.
        expected: String,
    },
    /// InResponseTo names no outstanding request, or disagrees between elements.
    #[error("{0}")]
    InResponseToMismatch(String),
    /// The response answers a request this browser did not start (its
    /// request cookie names others), or comes without the cookie where one
    /// is required: login CSRF, or a request id minted by someone else.
    #[error("{0}")]
    RequestBinding(String),
    /// An unsolicited (IdP-initiated) response while those are refused.
    #[error("unsolicited (IdP-initiated) response refused ([idp] allow_idp_initiated = false)")]
    IdpInitiatedRefused,
    /// The assertion has no Subject.
    #[error("the assertion has no Subject")]
    SubjectMissing,
    /// The EncryptedAssertion could not be decrypted.
    #[error("EncryptedAssertion could not be decrypted: {0}")]
    Decryption(String),
    /// The assertion ID was seen before.
    #[error("assertion {0:?} was already used")]
    Replayed(String),
    /// The mapped email has non-ASCII characters while internationalised
    /// addresses are not allowed (they could fold into another user's).
    #[error("{0}")]
    EmailNotAscii(String),
    /// The mapping could not produce a user.
    #[error("mapping: {0}")]
    Mapping(String),
}

impl SamlError {
    /// The stable machine-readable code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "response_too_large",
            Self::Base64(_) => "malformed_base64",
            Self::NotUtf8(_) => "malformed_encoding",
            Self::MalformedXml(_) => "malformed_xml",
            Self::DtdForbidden => "dtd_forbidden",
            Self::ProcessingInstruction(_) => "processing_instruction_forbidden",
            Self::TooDeep(_) => "xml_too_deep",
            Self::XmlLimit { .. } => "xml_limit_exceeded",
            Self::DeflatedOnPost => "malformed_encoding",
            Self::CommentInText(_) => "comment_injection",
            Self::NotAResponse(_) => "not_a_response",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::MultipleAssertions(_) => "multiple_assertions",
            Self::NoAssertion => "no_assertion",
            Self::DuplicateId(_) => "duplicate_id",
            Self::SignatureProfile { .. } => "signature_profile_violation",
            Self::AlgorithmForbidden { .. } => "algorithm_forbidden",
            Self::SignatureMissing => "signature_missing",
            Self::SignatureInvalid(_) => "signature_invalid",
            Self::AssertionNotSigned => "signature_missing",
            Self::StatusNotSuccess { .. } => "status_not_success",
            Self::IssuerMismatch { .. } => "issuer_mismatch",
            Self::DestinationMismatch { .. } => "destination_mismatch",
            Self::AudienceMismatch(_) => "audience_mismatch",
            Self::Expired { .. } => "assertion_expired",
            Self::NotYetValid { .. } => "assertion_not_yet_valid",
            Self::BadTime { .. } => "malformed_xml",
            Self::SubjectConfirmation(_) => "subject_confirmation_invalid",
            Self::RecipientMismatch { .. } => "recipient_mismatch",
            Self::InResponseToMismatch(_) => "in_response_to_mismatch",
            Self::IdpInitiatedRefused => "idp_initiated_refused",
            Self::RequestBinding(_) => "request_binding_failed",
            Self::SubjectMissing => "subject_missing",
            Self::Decryption(_) => "decryption_failed",
            Self::Replayed(_) => "replayed",
            Self::Mapping(_) => "mapping_failed",
            Self::EmailNotAscii(_) => "email_not_ascii",
        }
    }

    /// Whether the refusal is about a malformed message (HTTP 400) rather than
    /// a well-formed message that proves nothing acceptable (HTTP 403).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::Base64(_)
                | Self::NotUtf8(_)
                | Self::MalformedXml(_)
                | Self::DtdForbidden
                | Self::ProcessingInstruction(_)
                | Self::TooDeep(_)
                | Self::XmlLimit { .. }
                | Self::DeflatedOnPost
                | Self::NotAResponse(_)
                | Self::UnsupportedVersion(_)
                | Self::BadTime { .. }
        )
    }
}
