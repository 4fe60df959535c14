//! One person, one key: the email address as every entry point stores it.
//!
//! An email is the user's key, compared case-insensitively. Folding two
//! different strings into one key is an account takeover where users can
//! influence what their IdP signs: Unicode's full lowercase turns U+212A
//! KELVIN SIGN into ASCII `k` (`\u{212A}ate@example.com` would sign in as
//! `kate@example.com`), and Unicode trimming drops NO-BREAK SPACE and
//! U+3000. So the rules are narrow, and every entry point (SAML NameID and
//! mapping, ssoCreate and the admin API, CSV import, the command line)
//! applies the same ones through [`canonical`]:
//!
//! * only XML whitespace (space, TAB, CR, LF) is trimmed;
//! * only ASCII letters are lowercased;
//! * an address with any non-ASCII character is refused
//!   (`email_not_ascii`) unless `security.allow_international_email` is
//!   set; then its non-ASCII characters are kept exactly as written (never
//!   folded), so it can never become a different ASCII address.

/// XML's whitespace characters (the only ones trimmed).
pub const XML_SPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Not shaped like an email address.
    #[error("{0:?} is not an email address")]
    NotAnEmail(String),
    /// Non-ASCII characters while internationalised addresses are off.
    #[error(
        "{0:?} has non-ASCII characters; internationalised addresses need security.allow_international_email = true"
    )]
    NotAscii(String),
}

impl EmailError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnEmail(_) => "invalid_email",
            Self::NotAscii(_) => "email_not_ascii",
        }
    }
}

/// Whether `s` looks like an email address: one `@`, non-empty local part,
/// a domain with a dot, no whitespace or control characters.
pub fn is_email_shaped(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `s` with XML whitespace trimmed (nothing else).
pub fn trim_xml_space(s: &str) -> &str {
    s.trim_matches(XML_SPACE)
}

/// The stored form of an address: XML whitespace trimmed, ASCII letters
/// lowercased, shape checked, non-ASCII refused unless `allow_international`.
pub fn canonical(s: &str, allow_international: bool) -> Result<String, EmailError> {
    let t = trim_xml_space(s);
    if !t.is_ascii() {
        if !allow_international {
            return Err(EmailError::NotAscii(t.to_owned()));
        }
        // Invisible characters (zero-width, bidirectional controls, soft
        // hyphen, BOM) would make two keys that look alike.
        if t.chars().any(|c| {
            matches!(c, '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
        }) {
            return Err(EmailError::NotAnEmail(t.to_owned()));
        }
    }
    let key = t.to_ascii_lowercase();
    if !is_email_shaped(&key) {
        return Err(EmailError::NotAnEmail(t.to_owned()));
    }
    Ok(key)
}

/// The key to look an address up by (a path segment, a command-line
/// argument): trimmed and ASCII-lowercased like [`canonical`], never
/// refused (an address that could not be stored is simply not found).
pub fn lookup_key(s: &str) -> String {
    trim_xml_space(s).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each character class the review named, and its neighbours.
    #[test]
    fn no_two_different_addresses_fold_into_one() {
        assert_eq!(
            canonical(" Kate@Example.COM\r\n", false).as_deref(),
            Ok("kate@example.com")
        );
        // KELVIN SIGN, LATIN CAPITAL I WITH DOT, fullwidth and
        // mathematical letters, Cyrillic look-alikes: refused by default.
        for s in [
            "\u{212A}ate@example.com",
            "\u{130}van@example.com",
            "\u{FF4B}ate@example.com",
            "\u{1D5C4}ate@example.com",
            "k\u{430}te@example.com",
            "kate@ex\u{430}mple.com",
            "kate@example.com\u{200B}",
        ] {
            assert_eq!(
                canonical(s, false).map_err(|e| e.code()),
                Err("email_not_ascii"),
                "{s}"
            );
        }
        // Allowed: kept as written, never a different ASCII address.
        let kelvin = canonical("\u{212A}ate@example.com", true).unwrap();
        assert_eq!(kelvin, "\u{212A}ate@example.com");
        assert_ne!(kelvin, "kate@example.com");
        assert_eq!(
            canonical("J\u{FC}rgen@Example.de", true).as_deref(),
            Ok("j\u{FC}rgen@example.de")
        );
        // Only XML whitespace is trimmed: NBSP, U+3000, NEL stay and refuse.
        for s in [
            "\u{A0}kate@example.com",
            "kate@example.com\u{3000}",
            "\u{85}kate@example.com",
        ] {
            assert_eq!(
                canonical(s, false).map_err(|e| e.code()),
                Err("email_not_ascii"),
                "{s}"
            );
            assert_eq!(
                canonical(s, true).map_err(|e| e.code()),
                Err("invalid_email"),
                "{s}"
            );
        }
        assert_eq!(
            canonical("not an email", false).map_err(|e| e.code()),
            Err("invalid_email")
        );
        assert_eq!(
            canonical("kate@example.com\u{200B}", true).map_err(|e| e.code()),
            Err("invalid_email")
        );
        assert_eq!(lookup_key(" \u{212A}ATE@X.ORG "), "\u{212A}ate@x.org");
    }
}
