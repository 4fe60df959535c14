//! Step 1: turn what arrived into bounded UTF-8 XML text.

use base64::Engine;

use super::error::SamlError;

/// Decodes a POSTed `SAMLResponse` value (base64, line breaks and spaces
/// tolerated) into UTF-8 XML, refusing anything over `max_xml_bytes`.
pub fn decode_base64(input: &[u8], max_xml_bytes: usize) -> Result<String, SamlError> {
    // base64 is 4/3 of the payload; allow for line breaks too.
    let max_encoded = max_xml_bytes.saturating_mul(4) / 3 + 4 + max_xml_bytes / 32;
    if input.len() > max_encoded {
        return Err(SamlError::TooLarge {
            what: "SAMLResponse parameter",
            size: input.len(),
            limit: max_encoded,
        });
    }
    let bytes = base64_wrapped(input).map_err(SamlError::Base64)?;
    bytes_to_xml(bytes, max_xml_bytes)
}

/// Strict base64 (RFC 4648 standard alphabet, `=` padding to a multiple of
/// four, zero trailing bits; nothing else, whitespace included) decoded with
/// SIMD: a 6 KB `SAMLResponse` in about a sixth of the scalar decoder's
/// instructions. The scalar decoder of the `base64` crate, which decides
/// exactly alike (a unit test holds the two together), only runs when the
/// input is refused, to say why; should it ever accept what the SIMD one
/// refused, the input is still refused.
fn base64_strict(input: &[u8]) -> Result<Vec<u8>, String> {
    base64_simd::STANDARD.decode_to_vec(input).map_err(|_| {
        match base64::engine::general_purpose::STANDARD.decode(input) {
            Err(e) => e.to_string(),
            Ok(_) => "not strict base64".to_owned(),
        }
    })
}

/// Strict base64 that may be wrapped with XML whitespace, as IdPs wrap
/// SAMLResponse, DigestValue, SignatureValue and CipherValue.
pub(crate) fn base64_wrapped(input: &[u8]) -> Result<Vec<u8>, String> {
    base64_strict(&without_xml_space(input))
}

/// Base64 text with its XML whitespace (space, TAB, CR, LF) taken out.
/// Line breaks are common (some IdPs wrap at 64 or 76, ADFS writes `&#xD;`):
/// the runs between them are copied; a value without any is borrowed and
/// decoded in place.
fn without_xml_space(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Line breaks (every 64 or 76 characters, as many IdPs wrap) and spaces
    // found with SIMD searches; runs between them copied whole. A TAB is
    // rare enough to take one more search.
    let tab = memchr::memchr(b'\t', input).is_some();
    let mut breaks = memchr::memchr3_iter(b'\n', b'\r', b' ', input).peekable();
    if breaks.peek().is_none() && !tab {
        return input.into();
    }
    let mut v = Vec::with_capacity(input.len());
    let mut from = 0;
    for at in breaks {
        v.extend_from_slice(input.get(from..at).unwrap_or_default());
        from = at + 1;
    }
    v.extend_from_slice(input.get(from..).unwrap_or_default());
    if tab {
        v.retain(|&b| b != b'\t');
    }
    v.into()
}

/// Checks size and UTF-8 of decoded bytes. A byte-order mark stays: the
/// parser accepts one (and only one) before the document.
pub fn bytes_to_xml(bytes: Vec<u8>, max_xml_bytes: usize) -> Result<String, SamlError> {
    if bytes.len() > max_xml_bytes {
        return Err(SamlError::TooLarge {
            what: "decoded XML",
            size: bytes.len(),
            limit: max_xml_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        if looks_deflated(e.as_bytes()) {
            SamlError::DeflatedOnPost
        } else {
            SamlError::NotUtf8(e.utf8_error().valid_up_to())
        }
    })
}

/// Whether `bytes` inflate (raw DEFLATE, as the HTTP-Redirect binding
/// encodes) to something starting like XML. Reads at most 64 bytes of
/// output: a hint for the refusal message, never a decoder.
fn looks_deflated(bytes: &[u8]) -> bool {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut d = flate2::read::DeflateDecoder::new(bytes);
    let mut n = 0;
    while n < head.len() {
        match d.read(head.get_mut(n..).unwrap_or_default()) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let out = head.get(..n).unwrap_or_default();
    let out = out.strip_prefix("\u{FEFF}".as_bytes()).unwrap_or(out);
    out.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'<')
}

/// For the command line: accepts raw XML (first non-blank byte `<`) or the
/// base64 value as POSTed (optionally URL-encoded form `SAMLResponse=...`).
pub fn decode_any(input: &[u8], max_xml_bytes: usize) -> Result<String, SamlError> {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let trimmed = input.get(start..).unwrap_or_default();
    if trimmed.starts_with(b"<") || trimmed.starts_with("\u{FEFF}".as_bytes()) {
        return bytes_to_xml(trimmed.to_vec(), max_xml_bytes);
    }
    if let Some(rest) = trimmed.strip_prefix(b"SAMLResponse=") {
        let end = rest.iter().position(|b| *b == b'&').unwrap_or(rest.len());
        let value = percent_decode(rest.get(..end).unwrap_or_default());
        return decode_base64(&value, max_xml_bytes);
    }
    decode_base64(trimmed, max_xml_bytes)
}

/// Decodes `application/x-www-form-urlencoded` bytes (`+` is a space; a
/// `%` not followed by two hex digits stays as it is). The runs between
/// `%` and `+` are found with SIMD and copied whole: a POSTed
/// `SAMLResponse` is ~7 KB of base64 whose `+`, `/` and `=` the browser
/// escaped.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = memchr::memchr2(b'%', b'+', rest) {
        out.extend_from_slice(rest.get(..i).unwrap_or_default());
        let (byte, used) = match rest.get(i..).unwrap_or_default() {
            [b'+', ..] => (b' ', 1),
            [b'%', h, l, ..] => match (char::from(*h).to_digit(16), char::from(*l).to_digit(16)) {
                // Two hex digits: at most 0xFF.
                (Some(h), Some(l)) => (u8::try_from(h << 4 | l).unwrap_or(b'%'), 3),
                _ => (b'%', 1),
            },
            _ => (b'%', 1),
        };
        out.push(byte);
        rest = rest.get(i + used..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte decoder this module had before (the oracle).
    fn percent_decode_bytewise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match b {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = input
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(v) if input.get(i + 1).is_some_and(u8::is_ascii_hexdigit) => {
                            out.push(v);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                _ => out.push(b),
            }
            i += 1;
        }
        out
    }

    #[test]
    fn percent_decode_agrees_with_the_bytewise_decoder() {
        let alphabet = b"%%%++aZ09fFgG=/ \x00\xff";
        for input in crate::testutil::random_strings(0x0123_4567_89AB_CDEF, alphabet, 24, 20_000) {
            assert_eq!(
                percent_decode(&input),
                percent_decode_bytewise(&input),
                "{input:?}"
            );
        }
        assert_eq!(percent_decode(b"a%2Bb%2f%3D+%"), b"a+b/= %");
        // A sign is not a hex digit (`u8::from_str_radix` would take "+F").
        assert_eq!(percent_decode(b"%+F%F+%4"), b"% F%F %4");
    }

    /// The SIMD decoder accepts exactly what the `base64` crate's strict
    /// STANDARD engine accepts, with the same bytes: valid encodings of
    /// every length up to 96 bytes of payload (SIMD blocks and their
    /// tails), then each mutated by a replaced byte (every kind that
    /// matters: other alphabet letters, which change trailing bits, `=`,
    /// the URL-safe letters, whitespace, NUL, non-ASCII), a removed or
    /// added byte, or padding taken away or added.
    #[test]
    fn simd_base64_decides_like_the_strict_scalar_decoder() {
        let mut next = crate::testutil::xorshift(0x9E37_79B9_7F4A_7C15u64);
        const SPECIAL: &[u8] = b"=-_ \t\n\r\0\x80\xffAQgw+/9aZ";
        let oracle = |b: &[u8]| base64::engine::general_purpose::STANDARD.decode(b).ok();
        let mut checked = 0;
        for round in 0..40 {
            for len in 0..=96usize {
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let good = base64::engine::general_purpose::STANDARD.encode(&payload);
                let mut cases = vec![good.clone().into_bytes()];
                if !good.is_empty() {
                    let mut m = good.clone().into_bytes();
                    let at = (next() as usize) % m.len();
                    let to = SPECIAL[(next() as usize) % SPECIAL.len()];
                    if let Some(b) = m.get_mut(at) {
                        *b = if round % 2 == 0 { to } else { next() as u8 };
                    }
                    cases.push(m);
                    let mut m = good.clone().into_bytes();
                    m.remove((next() as usize) % m.len());
                    cases.push(m);
                    // The last letter before the padding: its trailing bits.
                    let mut m = good.clone().into_bytes();
                    let last = m.iter().rposition(|&b| b != b'=').unwrap();
                    m[last] = b"AQgwBCDE"[(next() as usize) % 8];
                    cases.push(m);
                    cases.push(good.trim_end_matches('=').as_bytes().to_vec());
                }
                let mut m = good.clone().into_bytes();
                m.insert(
                    (next() as usize) % (m.len() + 1),
                    SPECIAL[(next() as usize) % SPECIAL.len()],
                );
                cases.push(m);
                cases.push(format!("{good}=").into_bytes());
                cases.push(format!("{good}==").into_bytes());
                cases.push(format!("{good}AAAA").into_bytes());
                for case in cases {
                    let simd = base64_simd::STANDARD.decode_to_vec(&case).ok();
                    assert_eq!(simd, oracle(&case), "{:?}", String::from_utf8_lossy(&case));
                    assert_eq!(base64_strict(&case).ok(), oracle(&case));
                    checked += 1;
                }
            }
        }
        assert!(checked > 20_000, "{checked}");
    }

    #[test]
    fn base64_with_line_breaks() {
        let xml = decode_base64(b"PGEv\r\nPg==", 1024).unwrap();
        assert_eq!(xml, "<a/>");
    }

    /// XML whitespace anywhere (line breaks of either kind, spaces, tabs,
    /// runs of them, at either end) is dropped and nothing else is.
    #[test]
    fn whitespace_dropped_exactly() {
        let cases: [&[u8]; 8] = [
            b"",
            b"abc",
            b"\r\n",
            b"ab\r\ncd\nef\rgh",
            b" a b ",
            b"\ta\t\tb\n",
            b"a\x0bb\x0cc",
            b"\n\n\nabc\t \r\n",
        ];
        for c in cases {
            let want: Vec<u8> = c
                .iter()
                .copied()
                .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .collect();
            assert_eq!(without_xml_space(c).as_ref(), want.as_slice(), "{c:?}");
        }
    }

    #[test]
    fn bad_base64() {
        assert_eq!(
            decode_base64(b"!!!", 1024).unwrap_err().code(),
            "malformed_base64"
        );
    }

    #[test]
    fn oversized() {
        let big = vec![b'A'; 10_000];
        assert_eq!(
            decode_base64(&big, 1024).unwrap_err().code(),
            "response_too_large"
        );
        let xml = vec![b'<'; 2000];
        assert_eq!(
            decode_any(&xml, 1024).unwrap_err().code(),
            "response_too_large"
        );
    }

    #[test]
    fn not_utf8() {
        let e = bytes_to_xml(vec![b'<', 0xff, b'>'], 1024).unwrap_err();
        assert_eq!(e, SamlError::NotUtf8(1));
    }

    #[test]
    fn form_encoded() {
        let xml = decode_any(b"SAMLResponse=PGEv%0APg%3D%3D&RelayState=x", 1024).unwrap();
        assert_eq!(xml, "<a/>");
    }
}
