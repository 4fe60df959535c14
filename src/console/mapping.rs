//! The attribute mapping editor: the account's mapping (fields,
//! transforms, rules) as JSON, checked whole by the account validation on
//! every action; **Test a SAMLResponse** (the decision, refusal code,
//! mapped user, provisioning verdict and full trace, as `check-response`
//! prints them, with the edited mapping); **Preview impact** (the edited
//! mapping run over every user's last-login attributes: how many users
//! would change license, groups or features, and who); Save.

use http::{Response, StatusCode};
use maud::{Markup, html};
use serde_json::Value;

use super::form::Form;
use super::{BASE, Ctx, encode_segment, page, redirect, respond};
use crate::account::Account;
use crate::account::manage::{self, AccountError};
use crate::account::parse::ConfigProblem;
use crate::activity::last_logins;
use crate::check::{Decision, Report, add_provisioning, check_response_for};
use crate::mapping::{MappedUser, MappingInput, Trace};
use crate::server::Body;

/// Users previewed at most (beyond: the preview says so).
pub const MAX_PREVIEW: usize = 200_000;
/// Changed users listed at most.
pub const LISTED: usize = 500;
/// Last logins read per store page.
const PAGE: usize = 1_000;

/// The account's stored mapping, pretty.
async fn current_text(ctx: &Ctx<'_>, acct: &Account) -> Result<String, Response<Body>> {
    match manage::get(ctx.admin.store.as_ref(), &acct.id).await {
        Ok((doc, _)) => Ok(serde_json::to_string_pretty(
            doc.get("mapping")
                .unwrap_or(&Value::Object(Default::default())),
        )
        .unwrap_or_default()),
        Err(AccountError::Store(e)) => Err(super::store_error_page(&e, Some(&ctx.signed))),
        Err(e) => Err(super::error_page(
            StatusCode::NOT_FOUND,
            e.code(),
            &e.to_string(),
            Some(&ctx.signed),
        )),
    }
}

fn editor(
    ctx: &Ctx<'_>,
    acct: &Account,
    mapping: &str,
    response: &str,
    problems: &[ConfigProblem],
    result: Markup,
) -> Markup {
    html! {
        @if !problems.is_empty() {
            div.error role="alert" {
                p { "The edited mapping has " (problems.len()) " problem(s); nothing was saved:" }
                @for p in problems { p.field-error { (p.key) ": " (p.message) } }
            }
        }
        (result)
        form method="post" action={ (BASE) "/a/" (acct.id) "/mapping" } {
            input type="hidden" name="csrf" value=(ctx.signed.csrf);
            label for="mapping" { "Mapping (JSON: fields, transforms, rules; as in the account document)" }
            textarea #mapping name="mapping" rows="18" spellcheck="false" { (mapping) }
            p.muted { "Example rule: " code { r#"{"name": "sales", "attribute": "groups", "contains": "Sales", "license": "licensed"}"# } }
            button type="submit" name="do" value="preview" { "Preview impact" }
            button.secondary type="submit" name="do" value="save" { "Save" }
            fieldset {
                legend { "Test a SAMLResponse" }
                label for="response" { "Paste a SAMLResponse (the base64 POST value or its XML)" }
                textarea #response name="response" rows="6" spellcheck="false" { (response) }
                button.secondary type="submit" name="do" value="test" { "Test with the edited mapping" }
                button.secondary type="submit" name="do" value="last" { "Test the last refused sign-in's response" }
                p.muted { "The last response this account refused is kept for 15 minutes." }
            }
        }
    }
}

fn user_line(u: &MappedUser) -> Markup {
    html! {
        (u.license.as_str())
        @if !u.groups.is_empty() { "; groups: " (u.groups.join(", ")) }
        @if !u.features.is_empty() { "; features: " (u.features.join(", ")) }
    }
}

fn report(r: &Report) -> Markup {
    html! {
        section aria-label="Test result" {
            h2 { "Test result" }
            dl {
                dt { "Decision" }
                dd {
                    @match r.decision {
                        Decision::Accept => { "accept" }
                        Decision::Reject => { span.warn { "reject" } }
                    }
                }
                @if let Some(c) = r.code { dt { "Code" } dd { code { (c) } } }
                @if let Some(reason) = &r.reason { dt { "Reason" } dd { (reason) } }
                @if let Some(n) = &r.name_id { dt { "NameID" } dd { (n) } }
                @if let Some(u) = &r.user {
                    dt { "Email" } dd { (u.email) }
                    dt { "Name" } dd { (u.first_name) " " (u.last_name) }
                    dt { "License" } dd { (u.license.as_str()) (if u.license_by_rule { " (by a rule)" } else { " (default)" }) }
                    dt { "Groups" } dd { (u.groups.join(", ")) }
                    dt { "Features" } dd { (u.features.join(", ")) }
                }
                @if let Some(p) = &r.provisioning {
                    dt { "At sign-in" } dd { (p.verdict) @if let Some(c) = p.code { " (" code { (c) } ")" } ": " (p.detail) }
                }
            }
            h3 { "Trace" }
            ol {
                @for l in &r.trace {
                    li { strong { (l.step) } ": " (l.detail) }
                }
            }
        }
    }
}

/// `GET /a/{id}/mapping`.
pub(super) async fn page_of(ctx: &Ctx<'_>, acct: &Account, q: &Form) -> Response<Body> {
    if acct.is_default() {
        return respond(
            StatusCode::OK,
            page(
                "Attribute mapping",
                Some(&ctx.signed),
                Some(acct),
                html! { p.muted { "This account comes from the config file ([mapping]): change it there, and try it with samlgate check-response." } },
            ),
        );
    }
    let text = match current_text(ctx, acct).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let saved = html! { @if q.get("saved").is_some() { p.ok role="status" { "Saved. Every replica maps with it within a second." } } };
    respond(
        StatusCode::OK,
        page(
            "Attribute mapping",
            Some(&ctx.signed),
            Some(acct),
            editor(ctx, acct, &text, "", &[], saved),
        ),
    )
}

/// One user the edited mapping treats differently.
struct Change {
    email: String,
    before: Result<MappedUser, String>,
    after: Result<MappedUser, String>,
}

/// What the preview found.
#[derive(Default)]
struct Impact {
    users: usize,
    license: usize,
    groups: usize,
    features: usize,
    failing: usize,
    truncated: bool,
    listed: Vec<Change>,
}

async fn preview(
    ctx: &Ctx<'_>,
    current: &Account,
    edited: &Account,
) -> Result<Impact, crate::store::StoreError> {
    let mut out = Impact::default();
    let mut after: Option<String> = None;
    // An existing user's next sign-in changes only the fields of
    // `provisioning.update_on_login`.
    let upd = |f: &str| edited.provisioning.update_on_login.iter().any(|u| u == f);
    let (lic_updates, grp_updates, feat_updates) = (upd("license"), upd("groups"), upd("features"));
    loop {
        let page = last_logins(
            ctx.admin.store.as_ref(),
            &current.id,
            after.as_deref(),
            PAGE,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.email.clone());
        for l in &page {
            if out.users >= MAX_PREVIEW {
                out.truncated = true;
                return Ok(out);
            }
            out.users += 1;
            let input = MappingInput {
                name_id: l.name_id.as_deref(),
                attributes: &l.attributes,
            };
            let before = current.mapping.apply(&input, &mut Trace::off());
            let now = edited.mapping.apply(&input, &mut Trace::off());
            let (lic, grp, feat) = match (&before, &now) {
                (Ok(b), Ok(a)) => (
                    lic_updates && b.license != a.license,
                    grp_updates && b.groups != a.groups,
                    feat_updates && b.features != a.features,
                ),
                (Err(_), Err(_)) => (false, false, false),
                _ => (true, true, true),
            };
            if now.is_err() && before.is_ok() {
                out.failing += 1;
            }
            out.license += usize::from(lic);
            out.groups += usize::from(grp);
            out.features += usize::from(feat);
            if (lic || grp || feat) && out.listed.len() < LISTED {
                out.listed.push(Change {
                    email: l.email.clone(),
                    before,
                    after: now,
                });
            }
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok(out)
}

fn impact(acct: &Account, i: &Impact) -> Markup {
    let fixed: Vec<&str> = ["license", "groups", "features"]
        .into_iter()
        .filter(|f| !acct.provisioning.update_on_login.iter().any(|u| u == f))
        .collect();
    let side = |r: &Result<MappedUser, String>| match r {
        Ok(u) => user_line(u),
        Err(e) => html! { span.warn { "refused: " (e) } },
    };
    html! {
        section aria-label="Preview" {
            h2 { "Preview impact" }
            p role="status" {
                strong { (i.license) } " users would change license, "
                strong { (i.groups) } " would change groups, "
                strong { (i.features) } " would change features"
                " (of " (i.users) " users with a kept last login"
                @if i.truncated { "; the first " (MAX_PREVIEW) " looked at" }
                ")."
                @if i.failing > 0 { " " span.warn { (i.failing) " would no longer map (no email)." } }
            }
            @if !fixed.is_empty() {
                p.muted { "Not changed at an existing user's sign-in (not in provisioning.update_on_login): " (fixed.join(", ")) "; the mapping sets them for new users only." }
            }
            @if !i.listed.is_empty() {
                table {
                    thead { tr { th { "User" } th { "Now" } th { "With the edited mapping" } } }
                    tbody {
                        @for c in &i.listed {
                            tr {
                                td { a href={ (BASE) "/a/" (acct.id) "/users/" (encode_segment(&c.email)) } { (c.email) } }
                                td { (side(&c.before)) }
                                td { (side(&c.after)) }
                            }
                        }
                    }
                }
            }
            p.muted { "Nothing is saved until you Save. Users who have not signed in since their attributes began to be kept are not previewed." }
        }
    }
}

/// `POST /a/{id}/mapping`: test, preview or save.
pub(super) async fn act(ctx: &Ctx<'_>, acct: &Account, form: &Form) -> Response<Body> {
    if acct.is_default() {
        return super::config_file_account(&ctx.signed);
    }
    let text = form.get("mapping").unwrap_or("").to_owned();
    let mut response = form.get("response").unwrap_or("").trim().to_owned();
    if form.text("do") == "last" {
        match crate::activity::last_failed(ctx.admin.store.as_ref(), &acct.id).await {
            Ok(Some(r)) => response = r,
            Ok(None) => {}
            Err(e) => return super::store_error_page(&e, Some(&ctx.signed)),
        }
    }
    let show = |status: StatusCode, problems: &[ConfigProblem], result: Markup| {
        respond(
            status,
            page(
                "Attribute mapping",
                Some(&ctx.signed),
                Some(acct),
                editor(ctx, acct, &text, &response, problems, result),
            ),
        )
    };
    let mapping: Value = match serde_json::from_str(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return show(
                StatusCode::BAD_REQUEST,
                &[ConfigProblem {
                    key: "mapping".into(),
                    message: "must be a JSON object".into(),
                }],
                html! {},
            );
        }
        Err(e) => {
            return show(
                StatusCode::BAD_REQUEST,
                &[ConfigProblem {
                    key: "mapping".into(),
                    message: format!("not JSON: {e}"),
                }],
                html! {},
            );
        }
    };
    let save = form.text("do") == "save";
    let admin = ctx.admin;
    let written = manage::update(
        admin.store.as_ref(),
        &admin.config,
        Some(&admin.accounts),
        &acct.id,
        !save,
        |doc| {
            if let Some(o) = doc.as_object_mut() {
                o.insert("mapping".into(), mapping.clone());
            }
        },
    )
    .await;
    let edited = match written {
        Ok(w) => w.account,
        Err(AccountError::Invalid(problems)) => {
            return show(StatusCode::BAD_REQUEST, &problems, html! {});
        }
        Err(AccountError::Store(e)) => return super::store_error_page(&e, Some(&ctx.signed)),
        Err(e) => {
            return show(
                StatusCode::CONFLICT,
                &[ConfigProblem {
                    key: e.code().into(),
                    message: e.to_string(),
                }],
                html! {},
            );
        }
    };
    match form.text("do") {
        "save" => {
            tracing::info!(target: "audit", event = "account_updated", by = %ctx.by(), account = %acct.id, changed = "mapping");
            redirect(&format!("{BASE}/a/{}/mapping?saved", acct.id))
        }
        "test" | "last" => {
            if response.is_empty() {
                let message = if form.text("do") == "last" {
                    "no sign-in was refused in the last 15 minutes"
                } else {
                    "paste a SAMLResponse to test"
                };
                return show(
                    StatusCode::BAD_REQUEST,
                    &[ConfigProblem {
                        key: "response".into(),
                        message: message.into(),
                    }],
                    html! {},
                );
            }
            let clock = admin.clock.as_ref();
            let mut r = check_response_for(response.as_bytes(), &admin.config, &edited, &[], clock);
            let owners = admin.accounts.snapshot();
            add_provisioning(
                &mut r,
                admin.store.as_ref(),
                &admin.config,
                &edited,
                owners.as_ref(),
                clock,
            )
            .await;
            show(StatusCode::OK, &[], report(&r))
        }
        _ => match preview(ctx, acct, &edited).await {
            Ok(i) => show(StatusCode::OK, &[], impact(acct, &i)),
            Err(e) => super::store_error_page(&e, Some(&ctx.signed)),
        },
    }
}
