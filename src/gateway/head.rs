//! Rules every request head on the public listener must meet, shared by
//! both forwarding paths: the general path (hyper) answers a head that
//! breaks one with its error; the fast path (`fast.rs`) hands such a head
//! to the general path, so each refusal has one implementation.
//!
//! - A `Connection` header never names `Content-Length`,
//!   `Transfer-Encoding` or `Host` (RFC 9110 §7.6.1: a connection option
//!   never names a header meant for every recipient). Removing a framing
//!   header as hop-by-hop while still relaying the body it frames is how a
//!   request is smuggled to the upstream; such a request is refused (400
//!   `connection_option_invalid`), never repaired.
//! - HTTP/1.1 has exactly one `Host`, HTTP/1.0 and HTTP/2 at most one, and
//!   a `Host` is a valid `host[:port]` without user information (400
//!   `host_invalid`).
//! - `CONNECT` is never forwarded (405 `method_not_allowed`).
//! - A head over 64 KiB, counted as its request line and `Name: value`
//!   lines written out, is refused (431 `head_too_large`), whichever stack
//!   read it and however its bytes arrived.
//! - A `Content-Length` over `listen.max_body_bytes` is refused (413
//!   `body_too_large`).

use http::StatusCode;

/// Largest request head: request line and header lines, as written out.
pub const MAX_HEAD: usize = 64 * 1024;

/// Header names a `Connection` header may never name.
pub(crate) const END_TO_END: &[&str] = &["content-length", "transfer-encoding", "host"];

/// The first of `named` (lowercase connection options) that a `Connection`
/// header may not name.
pub(crate) fn forbidden_option(named: &[String]) -> Option<&str> {
    named
        .iter()
        .map(String::as_str)
        .find(|n| END_TO_END.contains(n))
}

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// `Connection` names a framing header or `Host`.
    #[error("the Connection header names {0}, which is meant for every recipient")]
    ConnectionOption(String),
    /// No `Host` on an HTTP/1.1 request.
    #[error("the request has no Host header")]
    HostMissing,
    /// More than one `Host`.
    #[error("the request has more than one Host header")]
    HostDuplicate,
    /// A `Host` that is not `host[:port]`.
    #[error("the Host header is not a valid host[:port]")]
    HostInvalid,
    /// `CONNECT`.
    #[error("CONNECT is not supported")]
    Connect,
    /// A head over [`MAX_HEAD`].
    #[error("the request head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A `Content-Length` over the limit.
    #[error("the request body is {length} bytes, over the limit of {limit}")]
    BodyTooLarge {
        /// The declared length.
        length: u64,
        /// `listen.max_body_bytes`.
        limit: u64,
    },
}

impl HeadError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ConnectionOption(_) => "connection_option_invalid",
            Self::HostMissing | Self::HostDuplicate | Self::HostInvalid => "host_invalid",
            Self::Connect => "method_not_allowed",
            Self::HeadTooLarge => "head_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ConnectionOption(_)
            | Self::HostMissing
            | Self::HostDuplicate
            | Self::HostInvalid => StatusCode::BAD_REQUEST,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// Whether `v` is a valid `Host` value: `host[:port]`, no user
/// information, visible ASCII.
pub(crate) fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > 255 + 6 {
        return false;
    }
    // `[IPv6]` or a reg-name / IPv4 (RFC 3986 unreserved, sub-delims and
    // percent signs), then an optional `:port` of at most five digits that
    // fits in 16 bits. No allocation: this runs on every request.
    let (host, rest) = if v.first() == Some(&b'[') {
        match memchr::memchr(b']', v) {
            Some(i) => (
                v.get(..=i).unwrap_or_default(),
                v.get(i + 1..).unwrap_or_default(),
            ),
            None => return false,
        }
    } else {
        match memchr::memchr(b':', v) {
            Some(i) => (
                v.get(..i).unwrap_or_default(),
                v.get(i..).unwrap_or_default(),
            ),
            None => (v, &[][..]),
        }
    };
    let host_ok = if host.first() == Some(&b'[') {
        host.len() > 2
            && host
                .get(1..host.len() - 1)
                .unwrap_or_default()
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host.iter().all(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            })
    };
    let port_ok = match rest {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty()
                && digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u16>().ok())
                    .is_some()
        }
        _ => false,
    };
    host_ok && port_ok
}

/// The protocol version, as far as these rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// HTTP/1.0 (Host optional).
    Http10,
    /// HTTP/1.1 (Host required).
    Http11,
    /// HTTP/2 (`:authority` may stand for Host).
    Http2,
}

/// Checks a request head: `method`, `version`, its header fields (names in
/// any case) and, for HTTP/2, whether the target carried an authority.
pub(crate) fn check<'a>(
    method: &str,
    target: &str,
    version: Version,
    has_authority: bool,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    max_body: u64,
) -> Result<(), HeadError> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(HeadError::Connect);
    }
    let mut hosts = 0usize;
    // `METHOD target HTTP/1.1\r\n`, then `name: value\r\n` each, `\r\n`.
    let mut size = method.len() + target.len() + 12 + 2;
    for (name, value) in headers {
        size += name.len() + value.len() + 4;
        if size > MAX_HEAD {
            return Err(HeadError::HeadTooLarge);
        }
        if name.eq_ignore_ascii_case("connection") {
            // The options as `proxy::connection_named` reads them, without
            // collecting them (this runs on every request).
            let text = std::str::from_utf8(value).unwrap_or("");
            if let Some(n) = text
                .split(',')
                .map(str::trim)
                .find_map(|o| END_TO_END.iter().find(|e| o.eq_ignore_ascii_case(e)))
            {
                return Err(HeadError::ConnectionOption((*n).to_owned()));
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if hosts > 1 {
                return Err(HeadError::HostDuplicate);
            }
            if !valid_host(value) {
                return Err(HeadError::HostInvalid);
            }
        } else if name.eq_ignore_ascii_case("content-length")
            && let Some(length) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            && length > max_body
        {
            return Err(HeadError::BodyTooLarge {
                length,
                limit: max_body,
            });
        }
    }
    if hosts == 0 && (version == Version::Http11 || (version == Version::Http2 && !has_authority)) {
        return Err(HeadError::HostMissing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: &str, version: Version, headers: &[(&str, &str)]) -> Result<(), HeadError> {
        check(
            method,
            "/",
            version,
            false,
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            1000,
        )
    }

    #[test]
    fn connection_never_names_framing_or_host() {
        for named in [
            "content-length",
            "Content-Length",
            "close, transfer-encoding",
            " keep-alive ,HOST",
        ] {
            let r = run(
                "POST",
                Version::Http11,
                &[("host", "a"), ("Connection", named)],
            );
            assert!(
                matches!(r, Err(HeadError::ConnectionOption(_))),
                "{named}: {r:?}"
            );
        }
        assert_eq!(
            run(
                "GET",
                Version::Http11,
                &[("host", "a"), ("connection", "close, te, x-other")]
            ),
            Ok(())
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            run("GET", Version::Http11, &[]),
            Err(HeadError::HostMissing)
        );
        assert_eq!(run("GET", Version::Http10, &[]), Ok(()));
        assert_eq!(
            run("GET", Version::Http10, &[("host", "a"), ("Host", "a")]),
            Err(HeadError::HostDuplicate)
        );
        for bad in [
            "",
            "a b",
            "user@host",
            "a/b",
            "[::1",
            "h:99999x",
            "h:65536",
            "h:",
            ":80",
            "[]",
            "[::1]x",
            "a:1:2",
            "a\"b",
            "a<b",
            "[::g]",
        ] {
            assert_eq!(
                run("GET", Version::Http11, &[("host", bad)]),
                Err(HeadError::HostInvalid),
                "{bad:?}"
            );
        }
        for good in [
            "meet.example.com",
            "127.0.0.1:8080",
            "[::1]:80",
            "a",
            "[::ffff:1.2.3.4]",
            "h:65535",
            "xn--bcher-kva.example",
            "a_b.example:0",
        ] {
            assert_eq!(run("GET", Version::Http11, &[("host", good)]), Ok(()));
        }
        assert!(
            check("GET", "/", Version::Http2, true, std::iter::empty(), 1).is_ok(),
            "HTTP/2 :authority stands for Host"
        );
    }

    #[test]
    fn head_size_limit() {
        let big = "v".repeat(MAX_HEAD);
        assert_eq!(
            run("GET", Version::Http11, &[("host", "a"), ("x", &big)]),
            Err(HeadError::HeadTooLarge)
        );
        let fits = "v".repeat(MAX_HEAD - 100);
        assert_eq!(
            run("GET", Version::Http11, &[("host", "a"), ("x", &fits)]),
            Ok(())
        );
    }

    #[test]
    fn connect_and_body_limits() {
        assert_eq!(
            run("CONNECT", Version::Http11, &[("host", "a:443")]),
            Err(HeadError::Connect)
        );
        assert_eq!(
            run(
                "POST",
                Version::Http11,
                &[("host", "a"), ("content-length", "1001")]
            ),
            Err(HeadError::BodyTooLarge {
                length: 1001,
                limit: 1000
            })
        );
        assert_eq!(
            run(
                "POST",
                Version::Http11,
                &[("host", "a"), ("content-length", "1000")]
            ),
            Ok(())
        );
    }
}
