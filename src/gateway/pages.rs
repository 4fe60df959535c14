//! Pages a person sees: refusals they can act on (a code, a plain sentence,
//! a tracking id that is also in the log; never internals), sign-out and
//! verification results, and the auto-submitting POST form.

use http::{HeaderValue, Response, StatusCode, header};

use crate::server::{Body, full};

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An HTML page with the security headers every page carries.
pub fn html(status: StatusCode, title: &str, body_html: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
code{{background:#f3f3f3;padding:.1rem .3rem}}.muted{{color:#666;font-size:.9rem}}</style></head><body><h1>{t}</h1>{body_html}</body></html>",
        t = esc(title)
    );
    let mut r = Response::new(full(page));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'",
        ),
    );
    r
}

/// The sentence a person reads for a refusal code.
pub fn sentence(code: &str) -> &'static str {
    match code {
        "not_provisioned" => {
            "Your account has not been provisioned for meetings yet. Ask your administrator to create it, then sign in again."
        }
        "pending_verification" => {
            "Your account is waiting for email verification. Open the link we sent to your email address, then sign in again."
        }
        "deactivated" => {
            "Your account has been deactivated. Ask your administrator if you think this is a mistake."
        }
        "store_unavailable" => "Sign-in is temporarily unavailable. Please try again in a minute.",
        "assertion_expired" | "assertion_not_yet_valid" => {
            "The sign-in took too long or the clocks disagree. Please sign in again."
        }
        "replayed" | "in_response_to_mismatch" => {
            "This sign-in was already used or does not match a sign-in started here. Please sign in again."
        }
        "status_not_success" => {
            "Your identity provider did not sign you in. If this persists, ask your administrator to check your access to this application."
        }
        "mapping_failed" => {
            "Your identity provider did not send an email address for you. Ask your administrator to check the SSO configuration."
        }
        "idp_initiated_refused" => "Sign-in must start from this site. Please sign in again.",
        "authn_request_signing_failed" => {
            "Sign-in cannot start: this site could not sign its request to your identity provider. Give your administrator the code and tracking id below."
        }
        _ => {
            "We could not sign you in with the response from your identity provider. Please try again; if it persists, give your administrator the code and tracking id below."
        }
    }
}

/// A refusal page.
pub fn refusal(
    status: StatusCode,
    code: &str,
    tracking_id: &str,
    login_path: &str,
) -> Response<Body> {
    refusal_page(
        status,
        ("Sign-in refused", sentence(code), "Sign in again"),
        code,
        tracking_id,
        login_path,
    )
}

/// A page refusing something: (title, what happened, the sign-in link's
/// text), then the code and tracking id a user reports.
pub fn refusal_page(
    status: StatusCode,
    (title, what, link): (&str, &str, &str),
    code: &str,
    tracking_id: &str,
    login_path: &str,
) -> Response<Body> {
    html(
        status,
        title,
        &format!(
            "<p>{}</p><p><a href=\"{}\">{}</a></p><p class=\"muted\">Code: <code>{}</code> · Tracking id: <code>{}</code></p>",
            esc(what),
            esc(login_path),
            esc(link),
            esc(code),
            esc(tracking_id)
        ),
    )
}

/// An auto-submitting form POSTing `fields` to `action`.
pub fn post_form(action: &str, fields: &[(&str, &str)]) -> Response<Body> {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    let mut r = html(
        StatusCode::OK,
        "Signing in…",
        &format!(
            "<form method=\"post\" action=\"{}\" id=\"f\">{inputs}<noscript><button type=\"submit\">Continue</button></noscript></form>\
<script>document.getElementById('f').submit()</script>",
            esc(action)
        ),
    );
    // This page needs its inline script.
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action *; frame-ancestors 'none'"),
    );
    r
}
