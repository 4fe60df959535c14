//! Form bodies: `application/x-www-form-urlencoded` and, for the metadata
//! upload, `multipart/form-data` held in memory (the console's bodies are
//! capped; the CSV upload streams elsewhere). Each is one linear pass.

use crate::saml::decode::percent_decode;

/// Most fields in a form.
pub const MAX_FIELDS: usize = 256;

/// A parsed form: fields in order (a name may repeat).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

/// Why a form body was refused (answered 400 `invalid_form`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid form: {0}")]
pub struct FormError(pub &'static str);

impl Form {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, or "".
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", str::trim)
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name` is present with a value other than "" (a checked checkbox).
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !v.is_empty())
    }

    fn push(&mut self, k: String, v: String) -> Result<(), FormError> {
        if self.fields.len() >= MAX_FIELDS {
            return Err(FormError("too many fields"));
        }
        self.fields.push((k, v));
        Ok(())
    }

    /// Parses a body as `content_type` says (urlencoded or multipart).
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Self, FormError> {
        let ct = content_type.trim().to_ascii_lowercase();
        if ct.starts_with("multipart/form-data") {
            let boundary = content_type
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim().trim_matches('"'))
                .ok_or(FormError("multipart without a boundary"))?;
            multipart(boundary, body)
        } else if ct.is_empty() || ct.starts_with("application/x-www-form-urlencoded") {
            urlencoded(body)
        } else {
            Err(FormError("unsupported content type"))
        }
    }
}

fn decode(s: &[u8]) -> String {
    let plus: Vec<u8> = s
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    String::from_utf8_lossy(&percent_decode(&plus)).into_owned()
}

/// `a=1&b=x+y`: `+` is a space, then percent-decoding.
pub fn urlencoded(body: &[u8]) -> Result<Form, FormError> {
    let mut f = Form::default();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &b""[..]),
        };
        f.push(decode(k), decode(v))?;
    }
    Ok(f)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(hay.get(from..)?, needle).map(|i| i + from)
}

/// `multipart/form-data` with `boundary` (RFC 7578): each part's
/// `Content-Disposition` name; file parts keep their content as text
/// (lossy UTF-8: the console uploads text files).
pub fn multipart(boundary: &str, body: &[u8]) -> Result<Form, FormError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(FormError("bad multipart boundary"));
    }
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let next_delim = format!("\r\n--{boundary}");
    let next_delim = next_delim.as_bytes();
    let mut f = Form::default();
    let mut at =
        find(body, delim, 0).ok_or(FormError("no multipart boundary in the body"))? + delim.len();
    loop {
        // After a delimiter: `--` ends the body, CRLF starts a part.
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(f),
            Some(b"\r\n") => at += 2,
            _ => return Err(FormError("malformed multipart delimiter")),
        }
        let head_end = find(body, b"\r\n\r\n", at).ok_or(FormError("unfinished part head"))?;
        let head = String::from_utf8_lossy(body.get(at..head_end).unwrap_or_default());
        let content_start = head_end + 4;
        let end = find(body, next_delim, content_start).ok_or(FormError("unfinished part"))?;
        let content = body.get(content_start..end).unwrap_or_default();
        let name = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then_some(v)
            })
            .and_then(|v| {
                v.split(';').find_map(|p| {
                    let (k, v) = p.trim().split_once('=')?;
                    (k.trim() == "name").then(|| v.trim().trim_matches('"').to_owned())
                })
            })
            .ok_or(FormError("a part without a name"))?;
        f.push(name, String::from_utf8_lossy(content).into_owned())?;
        at = end + next_delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_fields() {
        let f = urlencoded(b"a=1&b=x+y%2Bz&c&a=2&&d=%C3%A9").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(f.get("b"), Some("x y+z"));
        assert_eq!(f.get("c"), Some(""));
        assert!(!f.checked("c"));
        assert_eq!(f.get("d"), Some("é"));
        let many = "a=1&".repeat(MAX_FIELDS + 1);
        assert!(urlencoded(many.as_bytes()).is_err());
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.xml\"\r\nContent-Type: text/xml\r\n\r\n<a>\r\n--X</a>\r\n--XyZ\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n\r\n--XyZ--\r\n";
        let f = Form::parse("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(f.get("csrf"), Some("abc"));
        assert_eq!(f.get("file"), Some("<a>\r\n--X</a>"));
        assert_eq!(f.get("empty"), Some(""));
        for bad in [
            &b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nunfinished",
            b"no boundary here",
            b"--XyZ garbage",
        ] {
            assert!(Form::parse("multipart/form-data; boundary=XyZ", bad).is_err());
        }
        assert!(Form::parse("multipart/form-data", body).is_err());
        assert!(Form::parse("application/json", b"{}").is_err());
    }
}
