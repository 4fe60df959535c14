//! Sign-in activity: the account's recent login decisions (newest first,
//! the newest 10,000 kept) with code, reason and tracking id, filtered by
//! code and by text (an email, a tracking id), so "why can't Bob sign in?"
//! is answered in one place. A user's page shows theirs.

use http::{Response, StatusCode};
use maud::{Markup, html};

use super::form::Form;
use super::{BASE, Ctx, encode_segment, page, respond};
use crate::account::Account;
use crate::activity::{Decision, KEEP, recent};
use crate::server::Body;

/// Rows shown at most.
pub const SHOWN: usize = 500;

fn when(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A table of decisions.
pub(super) fn table(acct: &Account, rows: &[&Decision]) -> Markup {
    html! {
        table {
            thead { tr { th { "When" } th { "Decision" } th { "User" } th { "Reason" } th { "Tracking id" } th { "From" } } }
            tbody {
                @for d in rows {
                    tr {
                        td { (when(d.at)) }
                        td {
                            @match &d.code {
                                None => { "admitted" }
                                Some(c) => { span.warn { (c) } }
                            }
                        }
                        td {
                            @if let Some(e) = &d.email {
                                a href={ (BASE) "/a/" (acct.id) "/users/" (encode_segment(e)) } { (e) }
                            }
                        }
                        td { (d.reason) }
                        td { code { (d.tracking_id) } }
                        td { (d.remote) }
                    }
                }
            }
        }
    }
}

/// `GET /a/{id}/activity?code=&q=`.
pub(super) async fn page_of(ctx: &Ctx<'_>, acct: &Account, q: &Form) -> Response<Body> {
    let all = match recent(ctx.admin.store.as_ref(), &acct.id, KEEP).await {
        Ok(a) => a,
        Err(e) => return super::store_error_page(&e, Some(&ctx.signed)),
    };
    let code = q.text("code");
    let text = q.text("q").to_lowercase();
    let mut codes: Vec<&str> = all.iter().filter_map(|d| d.code.as_deref()).collect();
    codes.sort_unstable();
    codes.dedup();
    let matching: Vec<&Decision> = all
        .iter()
        .filter(|d| match code {
            "" => true,
            "admitted" => d.code.is_none(),
            c => d.code.as_deref() == Some(c),
        })
        .filter(|d| {
            text.is_empty()
                || d.email.as_deref().is_some_and(|e| e.contains(&text))
                || d.tracking_id == text
                || d.reason.to_lowercase().contains(&text)
        })
        .collect();
    let shown: Vec<&Decision> = matching.iter().take(SHOWN).copied().collect();
    let body = html! {
        form method="get" action={ (BASE) "/a/" (acct.id) "/activity" } role="search" {
            label for="code" { "Decision" }
            select #code name="code" {
                option value="" { "any" }
                option value="admitted" selected[code == "admitted"] { "admitted" }
                @for c in &codes {
                    option value=(c) selected[code == *c] { (c) }
                }
            }
            label for="q" { "Email, tracking id or words of the reason" }
            input #q type="search" name="q" value=(q.text("q"));
            button type="submit" { "Filter" }
        }
        p.muted { (matching.len()) " of the " (all.len()) " most recent decisions" @if matching.len() > SHOWN { " (the newest " (SHOWN) " shown)" } "." }
        @if shown.is_empty() {
            p { "No sign-ins match." }
        } @else {
            (table(acct, &shown))
        }
    };
    respond(
        StatusCode::OK,
        page("Sign-in activity", Some(&ctx.signed), Some(acct), body),
    )
}
