//! The Single Sign-On page: what the account's IdP metadata says (entity
//! id, endpoints, certificates with fingerprints and expiry), the SP
//! metadata to download, Provision User (Just-in-Time / Prior to Sign-In),
//! associated domains and IdP-initiated sign-in; Edit → Save goes through
//! the admin API's validation (`account::manage::patch`) and shows every
//! problem by field.

use http::{Response, StatusCode};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::form::Form;
use super::{BASE, Ctx, mode_name, page, redirect, respond};
use crate::account::manage::{self, AccountError};
use crate::account::parse::ConfigProblem;
use crate::account::{Account, ProvisioningMode};
use crate::saml::metadata::{BINDING_POST, BINDING_REDIRECT, Endpoint, SigningCert};
use crate::server::Body;

/// Certificates this close to expiry are flagged.
pub const EXPIRY_WARNING_DAYS: i32 = 30;

fn binding(b: &str) -> &str {
    match b {
        BINDING_REDIRECT => "HTTP-Redirect",
        BINDING_POST => "HTTP-POST",
        other => other,
    }
}

/// A certificate's end of validity and days left (negative: expired).
fn expiry(c: &SigningCert) -> Option<(String, i32)> {
    let x = openssl::x509::X509::from_der(&c.der).ok()?;
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    let left = now.diff(x.not_after()).ok()?;
    Some((x.not_after().to_string(), left.days))
}

fn endpoints(list: &[Endpoint]) -> Markup {
    html! {
        @if list.is_empty() {
            span.muted { "none" }
        } @else {
            ul {
                @for e in list {
                    li { (binding(&e.binding)) ": " code { (e.location) } }
                }
            }
        }
    }
}

fn view(acct: &Account) -> Markup {
    let md = &acct.idp.metadata;
    html! {
        h2 { "Identity provider" }
        dl {
            dt { "Entity ID" } dd { code { (md.entity_id) } }
            dt { "Metadata from" } dd { (acct.idp.metadata_url.as_deref().unwrap_or(&acct.idp.metadata_source)) }
            dt { "Sign-in (SSO)" } dd { (endpoints(&md.sso)) }
            dt { "Sign-out (SLO)" } dd { (endpoints(&md.slo)) }
            dt { "IdP-initiated sign-in" } dd { (if acct.idp.allow_idp_initiated { "allowed" } else { "refused" }) }
        }
        h2 { "Signing certificates" }
        table {
            thead { tr { th { "Subject" } th { "SHA-256 fingerprint" } th { "Valid until" } } }
            tbody {
                @for c in &md.signing_certs {
                    tr {
                        td { (c.subject) }
                        td { code { (c.fingerprint) } }
                        td {
                            @match expiry(c) {
                                Some((at, days)) if days < 0 => { (at) " " span.warn role="status" { "expired" } }
                                Some((at, days)) if days < EXPIRY_WARNING_DAYS => {
                                    (at) " " span.warn role="status" { "expires in " (days) (if days == 1 { " day" } else { " days" }) }
                                }
                                Some((at, _)) => { (at) }
                                None => { span.muted { "unreadable" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "This service provider" }
        dl {
            dt { "SP entity ID" } dd { code { (acct.sp.entity_id) } }
            dt { "ACS URL" } dd { code { (acct.sp.acs_url) } }
            dt { "SP metadata" } dd { a href={ (BASE) "/a/" (acct.id) "/sp-metadata" } download { "Download SP metadata" } }
        }
        h2 { "Provisioning" }
        dl {
            dt { "Provision User" } dd { (mode_name(acct)) }
            dt { "Associated domains" } dd {
                @if acct.provisioning.associated_domains.is_empty() { span.muted { "none" } }
                @else { (acct.provisioning.associated_domains.join(", ")) }
            }
        }
    }
}

/// What the edit form holds (as submitted, or from the account).
struct Edit {
    mode: String,
    domains: String,
    idp_initiated: bool,
    metadata_xml: String,
    metadata_url: String,
}

impl Edit {
    fn of(acct: &Account) -> Self {
        Self {
            mode: match acct.provisioning.mode {
                ProvisioningMode::Jit => "jit".into(),
                ProvisioningMode::PriorToSignIn => "prior_to_sign_in".into(),
            },
            domains: acct.provisioning.associated_domains.join("\n"),
            idp_initiated: acct.idp.allow_idp_initiated,
            metadata_xml: String::new(),
            metadata_url: String::new(),
        }
    }
}

/// The problems whose keys start with one of `prefixes`.
fn problems_at<'p>(problems: &'p [ConfigProblem], prefixes: &[&str]) -> Vec<&'p ConfigProblem> {
    problems
        .iter()
        .filter(|p| prefixes.iter().any(|k| p.key.starts_with(k)))
        .collect()
}

fn field_errors(list: &[&ConfigProblem]) -> Markup {
    html! {
        @for p in list {
            p.field-error { (p.key) ": " (p.message) }
        }
    }
}

const MODE_KEYS: &[&str] = &["provisioning.mode"];
const DOMAIN_KEYS: &[&str] = &["provisioning.associated_domains"];
const METADATA_KEYS: &[&str] = &["idp.metadata", "idp.entity_id"];
const INITIATED_KEYS: &[&str] = &["idp.allow_idp_initiated"];

fn edit_form(ctx: &Ctx<'_>, acct: &Account, e: &Edit, problems: &[ConfigProblem]) -> Markup {
    let known: Vec<&str> = [MODE_KEYS, DOMAIN_KEYS, METADATA_KEYS, INITIATED_KEYS].concat();
    let other: Vec<&ConfigProblem> = problems
        .iter()
        .filter(|p| !known.iter().any(|k| p.key.starts_with(k)))
        .collect();
    html! {
        @if !problems.is_empty() {
            div.error role="alert" {
                p { "Nothing was saved: " (problems.len()) " problem(s)." }
                (field_errors(&other))
            }
        }
        form method="post" action={ (BASE) "/a/" (acct.id) "/sso" } enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(ctx.signed.csrf);
            fieldset {
                legend { "Provision User" }
                label.choice { input type="radio" name="mode" value="jit" checked[e.mode == "jit"]; " Just-in-Time (users are created at their first sign-in)" }
                br;
                label.choice { input type="radio" name="mode" value="prior_to_sign_in" checked[e.mode == "prior_to_sign_in"]; " Prior to Sign-In (only users created ahead of time may sign in)" }
                (field_errors(&problems_at(problems, MODE_KEYS)))
            }
            fieldset {
                legend { "Associated domains" }
                label for="domains" { "One domain per line" }
                textarea #domains name="domains" rows="4" { (e.domains) }
                p.muted { "New users of these domains are active at once; others wait for email verification." }
                (field_errors(&problems_at(problems, DOMAIN_KEYS)))
            }
            fieldset {
                legend { "IdP-initiated sign-in" }
                label.choice { input type="checkbox" name="idp_initiated" value="1" checked[e.idp_initiated]; " Accept sign-ins started at the IdP (unsolicited responses)" }
                (field_errors(&problems_at(problems, INITIATED_KEYS)))
            }
            fieldset {
                legend { "IdP metadata (leave empty to keep the current one)" }
                label for="metadata_file" { "Upload a metadata file" }
                input #metadata_file type="file" name="metadata_file" accept=".xml,application/samlmetadata+xml,text/xml";
                label for="metadata_xml" { "or paste the metadata XML" }
                textarea #metadata_xml name="metadata_xml" rows="6" { (e.metadata_xml) }
                label for="metadata_url" { "or give its URL (fetched now, refreshed hourly)" }
                input #metadata_url type="url" name="metadata_url" value=(e.metadata_url);
                (field_errors(&problems_at(problems, METADATA_KEYS)))
            }
            button type="submit" { "Save" }
            a.button.secondary href={ (BASE) "/a/" (acct.id) "/sso" } { "Cancel" }
        }
    }
}

/// `GET /a/{id}/sso` (`?edit` for the form, `?saved` after a save).
pub(super) async fn page_of(ctx: &Ctx<'_>, acct: &Account, q: &Form) -> Response<Body> {
    let body = if q.get("edit").is_some() && !acct.is_default() {
        edit_form(ctx, acct, &Edit::of(acct), &[])
    } else {
        html! {
            @if q.get("saved").is_some() { p.ok role="status" { "Saved. Every replica serves the change within a second." } }
            @if acct.is_default() {
                p.muted { "This account comes from the gateway's config file ([idp], [sp], [provisioning]): change it there and reload." }
            } @else {
                a.button href={ (BASE) "/a/" (acct.id) "/sso?edit" } { "Edit" }
            }
            (view(acct))
        }
    };
    respond(
        StatusCode::OK,
        page("Single Sign-On", Some(&ctx.signed), Some(acct), body),
    )
}

/// The merge patch a submitted form asks for.
fn patch_of(form: &Form) -> Result<(Edit, Value), ConfigProblem> {
    let e = Edit {
        mode: form.text("mode").to_owned(),
        domains: form.text("domains").to_owned(),
        idp_initiated: form.checked("idp_initiated"),
        metadata_xml: form.text("metadata_xml").to_owned(),
        metadata_url: form.text("metadata_url").to_owned(),
    };
    let domains: Vec<&str> = e
        .domains
        .split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let mut patch = json!({
        "provisioning": { "mode": e.mode, "associated_domains": domains },
        "idp": { "allow_idp_initiated": e.idp_initiated },
    });
    let file = form.text("metadata_file");
    let given = [
        !file.is_empty(),
        !e.metadata_xml.is_empty(),
        !e.metadata_url.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigProblem {
            key: "idp.metadata".into(),
            message: "give the metadata one way: a file, pasted XML or a URL".into(),
        });
    }
    let xml = if file.is_empty() {
        &e.metadata_xml
    } else {
        file
    };
    if let Some(idp) = patch.get_mut("idp").and_then(Value::as_object_mut) {
        if !xml.is_empty() {
            idp.insert("metadata_xml".into(), json!(xml));
            idp.insert("metadata_url".into(), Value::Null);
        } else if !e.metadata_url.is_empty() {
            idp.insert("metadata_url".into(), json!(e.metadata_url));
            idp.insert("metadata_xml".into(), Value::Null);
        }
    }
    Ok((e, patch))
}

/// `POST /a/{id}/sso`: Save.
pub(super) async fn save(ctx: &Ctx<'_>, acct: &Account, form: &Form) -> Response<Body> {
    if acct.is_default() {
        return super::config_file_account(&ctx.signed);
    }
    let invalid = |e: &Edit, problems: &[ConfigProblem]| {
        respond(
            StatusCode::BAD_REQUEST,
            page(
                "Single Sign-On",
                Some(&ctx.signed),
                Some(acct),
                edit_form(ctx, acct, e, problems),
            ),
        )
    };
    let (edit, patch) = match patch_of(form) {
        Ok(p) => p,
        Err(problem) => {
            let e = Edit {
                metadata_xml: form.text("metadata_xml").to_owned(),
                metadata_url: form.text("metadata_url").to_owned(),
                ..Edit::of(acct)
            };
            return invalid(&e, &[problem]);
        }
    };
    let admin = ctx.admin;
    match manage::patch(
        admin.store.as_ref(),
        &admin.config,
        Some(&admin.accounts),
        &acct.id,
        &patch,
        false,
    )
    .await
    {
        Ok(w) => {
            tracing::info!(target: "audit", event = "account_updated", by = %ctx.by(), account = %acct.id, revision = w.revision, mode = %edit.mode);
            redirect(&format!("{BASE}/a/{}/sso?saved", acct.id))
        }
        Err(AccountError::Invalid(problems)) => invalid(&edit, &problems),
        Err(AccountError::Store(e)) => super::store_error_page(&e, Some(&ctx.signed)),
        Err(e) => invalid(
            &edit,
            &[ConfigProblem {
                key: e.code().into(),
                message: e.to_string(),
            }],
        ),
    }
}
