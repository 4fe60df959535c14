//! User Management: the account's users page by page (by email prefix
//! and status), the ssoCreate form (Basic, Licensed, On-Prem), a user's
//! detail, and deactivate / reactivate / delete, through the same
//! operations as the user API (`admin::users`): deactivation and deletion
//! end the user's live sessions on every replica before the page answers.

use http::{Response, StatusCode};
use maud::{Markup, html};
use serde_json::json;

use super::form::Form;
use super::{BASE, Ctx, encode_segment, page, redirect, respond};
use crate::account::{Account, ProvisioningMode};
use crate::admin::users::UserOpError;
use crate::server::Body;
use crate::store::{UserRecord, UserStatus};

/// Users per page.
pub const PAGE: usize = 50;

fn status_name(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Deactivated => "deactivated",
        UserStatus::PendingVerification => "pending verification",
    }
}

fn user_link(acct: &Account, email: &str) -> String {
    format!("{BASE}/a/{}/users/{}", acct.id, encode_segment(email))
}

/// What the create form holds, and its error.
#[derive(Default)]
struct NewForm {
    email: String,
    first_name: String,
    last_name: String,
    kind: String,
    error: Option<(String, Option<&'static str>)>,
}

fn create_form(ctx: &Ctx<'_>, acct: &Account, f: &NewForm) -> Markup {
    html! {
        h2 #create { "Add a user (ssoCreate)" }
        @if acct.provisioning.mode != ProvisioningMode::PriorToSignIn {
            p.muted { "This account provisions users Just-in-Time: they are created at their first sign-in. Switch Provision User to Prior to Sign-In on the Single Sign-On page to add users here." }
        } @else {
            @if let Some((msg, _)) = &f.error {
                p.error role="alert" { (msg) }
            }
            form method="post" action={ (BASE) "/a/" (acct.id) "/users" } {
                input type="hidden" name="csrf" value=(ctx.signed.csrf);
                label for="email" { "Email" }
                input #email type="email" name="email" required value=(f.email) aria-invalid=[f.error.as_ref().filter(|e| e.1 == Some("user_info.email")).map(|_| "true")];
                label for="first_name" { "First name" }
                input #first_name type="text" name="first_name" value=(f.first_name);
                label for="last_name" { "Last name" }
                input #last_name type="text" name="last_name" value=(f.last_name);
                label for="type" { "User type" }
                select #type name="type" {
                    option value="1" selected[f.kind == "1" || f.kind.is_empty()] { "Basic" }
                    option value="2" selected[f.kind == "2"] { "Licensed" }
                    option value="3" selected[f.kind == "3"] { "On-Prem" }
                }
                button type="submit" { "Add user" }
            }
        }
    }
}

fn table(acct: &Account, users: &[UserRecord]) -> Markup {
    html! {
        table {
            thead { tr { th { "Email" } th { "Name" } th { "License" } th { "Status" } th { "Source" } } }
            tbody {
                @for u in users {
                    tr {
                        td { a href=(user_link(acct, &u.email)) { (u.email) } }
                        td { (u.first_name) " " (u.last_name) }
                        td { (u.license.as_str()) }
                        td { (status_name(u.status)) }
                        td { (u.source.as_str()) }
                    }
                }
            }
        }
    }
}

async fn list_page(
    ctx: &Ctx<'_>,
    acct: &Account,
    q: &Form,
    f: &NewForm,
    status: StatusCode,
) -> Response<Body> {
    let prefix = crate::email::lookup_key(q.text("q"));
    let wanted = match q.text("status") {
        "active" => Some(UserStatus::Active),
        "deactivated" => Some(UserStatus::Deactivated),
        "pending_verification" => Some(UserStatus::PendingVerification),
        _ => None,
    };
    let cursor = match q.text("cursor") {
        "" if prefix.is_empty() => None,
        // Emails after the cursor: start just before the prefix.
        "" => Some(prefix.clone()),
        c => Some(c.to_owned()),
    };
    let mut users = Vec::new();
    if q.text("cursor").is_empty() && !prefix.is_empty() {
        match ctx.admin.find_user(acct, &prefix).await {
            Ok(u) if wanted.is_none_or(|s| s == u.status) => users.push(u),
            Ok(_) | Err(UserOpError::NotFound) => {}
            Err(UserOpError::Store(e)) => return super::store_error_page(&e, Some(&ctx.signed)),
            Err(_) => {}
        }
    }
    let listed = match ctx.admin.list_users(acct, cursor, PAGE, wanted).await {
        Ok(p) => p,
        Err(e) => return super::store_error_page(&e, Some(&ctx.signed)),
    };
    // Listed in email order: once one is past the prefix, so is every
    // later one, and there is no next page.
    let past_prefix = listed
        .users
        .last()
        .is_some_and(|u| !u.email.starts_with(&prefix));
    users.extend(
        listed
            .users
            .into_iter()
            .filter(|u| u.email.starts_with(&prefix)),
    );
    let next = listed.next_cursor.filter(|_| !past_prefix);
    let body = html! {
        form method="get" action={ (BASE) "/a/" (acct.id) "/users" } role="search" {
            label for="q" { "Find users (email starts with)" }
            input #q type="search" name="q" value=(q.text("q"));
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "any" }
                @for (v, n) in [("active", "active"), ("deactivated", "deactivated"), ("pending_verification", "pending verification")] {
                    option value=(v) selected[q.text("status") == v] { (n) }
                }
            }
            button type="submit" { "Search" }
        }
        @if q.get("deleted").is_some() { p.ok role="status" { "The user was deleted and their sessions ended." } }
        @if users.is_empty() {
            p { "No users found." }
        } @else {
            (table(acct, &users))
        }
        @if let Some(n) = next {
            p { a href={ (BASE) "/a/" (acct.id) "/users?q=" (encode_segment(q.text("q"))) "&status=" (q.text("status")) "&cursor=" (encode_segment(&n)) } { "Next page →" } }
        }
        (create_form(ctx, acct, f))
    };
    respond(
        status,
        page("User Management", Some(&ctx.signed), Some(acct), body),
    )
}

/// `GET /a/{id}/users`.
pub(super) async fn list(ctx: &Ctx<'_>, acct: &Account, q: &Form) -> Response<Body> {
    list_page(ctx, acct, q, &NewForm::default(), StatusCode::OK).await
}

/// `POST /a/{id}/users`: ssoCreate.
pub(super) async fn create(ctx: &Ctx<'_>, acct: &Account, form: &Form) -> Response<Body> {
    let mut f = NewForm {
        email: form.text("email").to_owned(),
        first_name: form.text("first_name").to_owned(),
        last_name: form.text("last_name").to_owned(),
        kind: form.text("type").to_owned(),
        error: None,
    };
    let req = serde_json::from_value(json!({
        "action": "ssoCreate",
        "user_info": {
            "email": f.email, "first_name": f.first_name, "last_name": f.last_name, "type": f.kind,
        }
    }));
    let Ok(req) = req else {
        return super::error_page(
            StatusCode::BAD_REQUEST,
            "invalid_form",
            "The form could not be read.",
            Some(&ctx.signed),
        );
    };
    match ctx.admin.create_user(acct, req, &ctx.by()).await {
        Ok(u) => redirect(&format!("{}?created", user_link(acct, &u.email))),
        Err(UserOpError::Store(e)) => super::store_error_page(&e, Some(&ctx.signed)),
        Err(e) => {
            let status = e.status();
            f.error = Some((format!("{} ({})", e, e.code()), e.field()));
            list_page(ctx, acct, &Form::default(), &f, status).await
        }
    }
}

/// `GET /a/{id}/users/{email}`.
pub(super) async fn detail(ctx: &Ctx<'_>, acct: &Account, email: &str, q: &Form) -> Response<Body> {
    let u = match ctx.admin.find_user(acct, email).await {
        Ok(u) => u,
        Err(UserOpError::Store(e)) => return super::store_error_page(&e, Some(&ctx.signed)),
        Err(_) => return super::not_found(Some(&ctx.signed)),
    };
    let here = user_link(acct, &u.email);
    let decisions =
        match crate::activity::recent(ctx.admin.store.as_ref(), &acct.id, crate::activity::KEEP)
            .await
        {
            Ok(d) => d,
            Err(e) => return super::store_error_page(&e, Some(&ctx.signed)),
        };
    let mine: Vec<&crate::activity::Decision> = decisions
        .iter()
        .filter(|d| d.email.as_deref() == Some(u.email.as_str()))
        .take(20)
        .collect();
    let body = html! {
        @if q.get("created").is_some() { p.ok role="status" { "The user was added." } }
        @if q.get("updated").is_some() { p.ok role="status" { "Saved." } }
        dl {
            dt { "Email" } dd { (u.email) }
            dt { "Name" } dd { (u.first_name) " " (u.last_name) }
            dt { "License" } dd { (u.license.as_str()) }
            dt { "Vanity name" } dd { (u.vanity.as_deref().unwrap_or("—")) }
            dt { "Status" } dd { (status_name(u.status)) }
            dt { "Source" } dd { (u.source.as_str()) }
            dt { "SSO only" } dd { (if u.sso_only { "yes" } else { "no" }) }
            dt { "Department" } dd { (u.department) }
            dt { "Groups" } dd { (u.groups.join(", ")) }
            dt { "Features" } dd { (u.features.join(", ")) }
            dt { "Created" } dd { (u.created_at) }
            dt { "Updated" } dd { (u.updated_at) }
        }
        h2 { "Recent sign-ins" }
        @if mine.is_empty() {
            p.muted { "None among the account's recent sign-in activity." }
        } @else {
            (super::activity::table(acct, &mine))
        }
        h2 { "Actions" }
        form.inline method="post" action=(here) {
            input type="hidden" name="csrf" value=(ctx.signed.csrf);
            @if u.status == UserStatus::Active {
                input type="hidden" name="action" value="deactivate";
                button.secondary type="submit" { "Deactivate (ends their sessions)" }
            } @else {
                input type="hidden" name="action" value="reactivate";
                button.secondary type="submit" { "Reactivate" }
            }
        }
        form method="post" action=(here) {
            input type="hidden" name="csrf" value=(ctx.signed.csrf);
            input type="hidden" name="action" value="delete";
            label.choice { input type="checkbox" name="confirm" value="yes" required; " Delete " (u.email) " and end their sessions" }
            br;
            button.danger type="submit" { "Delete user" }
        }
        p { a href={ (BASE) "/a/" (acct.id) "/users" } { "← All users" } }
    };
    respond(
        StatusCode::OK,
        page(&u.email, Some(&ctx.signed), Some(acct), body),
    )
}

/// `POST /a/{id}/users/{email}`: deactivate, reactivate or delete.
pub(super) async fn act(ctx: &Ctx<'_>, acct: &Account, email: &str, form: &Form) -> Response<Body> {
    let by = ctx.by();
    let result = match form.text("action") {
        "deactivate" | "reactivate" => {
            let status = if form.text("action") == "deactivate" {
                "deactivated"
            } else {
                "active"
            };
            match serde_json::from_value(json!({ "status": status })) {
                Ok(p) => ctx
                    .admin
                    .update_user(acct, email, p, &by)
                    .await
                    .map(|u| Some(u.email)),
                Err(_) => Err(UserOpError::NotFound),
            }
        }
        "delete" if form.text("confirm") == "yes" => {
            ctx.admin.delete_user(acct, email, &by).await.map(|()| None)
        }
        "delete" => {
            return super::error_page(
                StatusCode::BAD_REQUEST,
                "confirm_required",
                "Tick the box to confirm the deletion.",
                Some(&ctx.signed),
            );
        }
        _ => {
            return super::error_page(
                StatusCode::BAD_REQUEST,
                "unknown_action",
                "Unknown action.",
                Some(&ctx.signed),
            );
        }
    };
    match result {
        Ok(Some(e)) => redirect(&format!("{}?updated", user_link(acct, &e))),
        Ok(None) => redirect(&format!("{BASE}/a/{}/users?deleted", acct.id)),
        Err(UserOpError::Store(e)) => super::store_error_page(&e, Some(&ctx.signed)),
        Err(UserOpError::NotFound) => super::not_found(Some(&ctx.signed)),
        Err(e) => super::error_page(e.status(), e.code(), &e.to_string(), Some(&ctx.signed)),
    }
}
