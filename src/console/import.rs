//! Import: upload a CSV, designate Basic, Licensed or On-Prem, select
//! features, check SSO User, as in the platform's own steps. The upload is
//! spooled to a temporary file and imported in the background by the CSV
//! import the API uses; the page shows a live progress bar (upload, then
//! the share of the file read) and then the report with each bad line and
//! its reason, downloadable as CSV.
//!
//! The job (its progress and report) lives in the store for a day, so any
//! replica's console shows it. Progress is written every half second.
//! With JavaScript the file streams to `…/import/upload` (any size up to
//! 2 GiB); without it, the form posts the file inside the form (2 MiB).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::form::Form;
use super::{BASE, Ctx, page, redirect, respond};
use crate::account::Account;
use crate::admin::Admin;
use crate::mapping::License;
use crate::provisioning::csv::{ImportOptions, import};
use crate::server::{Body, full};
use crate::store::{Ephemeral, StoreError};

/// How long a job's progress and report are kept.
pub const KEPT: Duration = Duration::from_secs(24 * 3600);
/// How often a running job writes its progress.
const EVERY: Duration = Duration::from_millis(500);

/// An import job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its id (random).
    pub id: String,
    /// The account.
    pub account: String,
    /// Who started it.
    pub by: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Bytes of the file.
    pub size: u64,
    /// Bytes read so far.
    pub read: u64,
    /// Rows read so far.
    pub rows: u64,
    /// The options, for the report's header.
    pub license: String,
    /// Features given to every user.
    pub features: Vec<String>,
    /// SSO User checked.
    pub sso: bool,
    /// The import's report (when done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// Why the file could not be imported (when failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn key(account: &str, id: &str) -> String {
    format!("{account}:{id}")
}

async fn save(admin: &Admin, job: &Job) -> Result<(), StoreError> {
    let json = serde_json::to_vec(job).unwrap_or_default();
    admin
        .store
        .put_ephemeral(
            Ephemeral::ImportJob,
            &key(&job.account, &job.id),
            &json,
            KEPT,
        )
        .await
}

async fn load(admin: &Admin, account: &str, id: &str) -> Result<Option<Job>, StoreError> {
    Ok(admin
        .store
        .get_ephemeral(Ephemeral::ImportJob, &key(account, id))
        .await?
        .and_then(|raw| serde_json::from_slice(&raw).ok()))
}

/// A reader that counts what it has read.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The import's options from the form or the upload's query.
fn options(f: &Form) -> Result<ImportOptions, &'static str> {
    let license = License::parse(f.text("license")).ok_or("choose Basic, Licensed or On-Prem")?;
    let features: Vec<String> = f
        .all("feature")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if features.len() > crate::admin::body::MAX_FEATURES {
        return Err("too many features");
    }
    Ok(ImportOptions {
        license,
        features,
        sso_only: f.checked("sso"),
        update_existing: f.checked("update_existing"),
        ..Default::default()
    })
}

fn form_page(ctx: &Ctx<'_>, acct: &Account, problem: Option<&str>) -> Markup {
    html! {
        @if let Some(p) = problem { p.error role="alert" { (p) } }
        form #import method="post" action={ (BASE) "/a/" (acct.id) "/import" } enctype="multipart/form-data"
            data-upload={ (BASE) "/a/" (acct.id) "/import/upload" } {
            input type="hidden" name="csrf" value=(ctx.signed.csrf);
            label for="file" { "CSV file (email, first_name, last_name, department, user group)" }
            input #file type="file" name="file" accept=".csv,text/csv" required;
            fieldset {
                legend { "Designate the users as" }
                label.choice { input type="radio" name="license" value="basic" checked; " Basic" }
                label.choice { input type="radio" name="license" value="licensed"; " Licensed" }
                label.choice { input type="radio" name="license" value="on_prem"; " On-Prem" }
            }
            label for="feature" { "Features (comma-separated, optional)" }
            input #feature type="text" name="feature" placeholder="large_meetings, webinar";
            fieldset {
                legend { "Options" }
                label.choice { input type="checkbox" name="sso" value="1" checked; " SSO User (may sign in only through SSO)" }
                br;
                label.choice { input type="checkbox" name="update_existing" value="1"; " Update users that already exist (default: skip them)" }
            }
            button type="submit" { "Upload and import" }
            div #progress hidden {
                label for="bar" { span #phase { "Uploading" } }
                progress #bar max="100" value="0" { "0 %" }
                p #rows.muted aria-live="polite" {}
            }
        }
        script src={ (BASE) "/static/import.js" } {}
    }
}

/// `GET /a/{id}/import`.
pub(super) fn page_of(ctx: &Ctx<'_>, acct: &Account) -> Response<Body> {
    respond(
        StatusCode::OK,
        page(
            "Import users",
            Some(&ctx.signed),
            Some(acct),
            form_page(ctx, acct, None),
        ),
    )
}

/// Starts a job on `file` (spooled) and answers with its id.
async fn start(
    ctx: &Ctx<'_>,
    acct: &Arc<Account>,
    file: std::fs::File,
    opts: ImportOptions,
) -> Result<Job, StoreError> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let job = Job {
        id: super::random_token().chars().take(16).collect(),
        account: acct.id.clone(),
        by: ctx.by(),
        state: "running".into(),
        size,
        read: 0,
        rows: 0,
        license: opts.license.as_str().into(),
        features: opts.features.clone(),
        sso: opts.sso_only,
        report: None,
        error: None,
    };
    save(ctx.admin, &job).await?;
    tracing::info!(target: "audit", event = "csv_import_started", by = %job.by, account = %acct.id, job = %job.id, bytes = size);
    let admin = Arc::clone(ctx.admin);
    let acct = Arc::clone(acct);
    let mut running = job.clone();
    tokio::spawn(async move {
        let read = Arc::new(AtomicU64::new(0));
        let rows = Arc::new(AtomicU64::new(0));
        let reader = Counting {
            inner: std::io::BufReader::with_capacity(256 * 1024, file),
            read: Arc::clone(&read),
        };
        // Progress, every half second, while the import runs.
        let ticker = {
            let (admin, read, rows, mut j) = (
                Arc::clone(&admin),
                Arc::clone(&read),
                Arc::clone(&rows),
                running.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(EVERY).await;
                    j.read = read.load(Ordering::Relaxed);
                    j.rows = rows.load(Ordering::Relaxed);
                    let _ = save(&admin, &j).await;
                }
            })
        };
        let owners = admin.accounts.snapshot();
        let rows_seen = Arc::clone(&rows);
        let result = import(
            admin.store.as_ref(),
            &admin.config,
            &acct,
            owners.as_ref(),
            reader,
            &opts,
            admin.clock.now(),
            &mut move |n| rows_seen.store(n, Ordering::Relaxed),
        )
        .await;
        ticker.abort();
        running.read = read.load(Ordering::Relaxed);
        match result {
            Ok(report) => {
                tracing::info!(target: "audit", event = "csv_import", by = %running.by, account = %acct.id, job = %running.id, created = report.created, updated = report.updated, skipped = report.skipped, errors = report.error_count, interrupted = report.interrupted.is_some());
                running.rows = report.rows;
                running.state = "done".into();
                running.report = serde_json::to_value(&report).ok();
            }
            Err(e) => {
                running.state = "failed".into();
                running.error = Some(format!("{e} ({})", e.code()));
            }
        }
        // The final state must land: retried for a minute.
        for _ in 0..60 {
            if save(&admin, &running).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(job)
}

/// `POST /a/{id}/import` (the form, without JavaScript).
pub(super) async fn from_form(ctx: &Ctx<'_>, acct: &Arc<Account>, form: &Form) -> Response<Body> {
    let opts = match options(form) {
        Ok(o) => o,
        Err(p) => {
            return respond(
                StatusCode::BAD_REQUEST,
                page(
                    "Import users",
                    Some(&ctx.signed),
                    Some(acct),
                    form_page(ctx, acct, Some(p)),
                ),
            );
        }
    };
    let text = form.get("file").unwrap_or("");
    if text.is_empty() {
        return respond(
            StatusCode::BAD_REQUEST,
            page(
                "Import users",
                Some(&ctx.signed),
                Some(acct),
                form_page(ctx, acct, Some("choose a CSV file")),
            ),
        );
    }
    let file = tempfile::tempfile().and_then(|mut f| {
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
        Ok(f)
    });
    let Ok(file) = file else {
        return super::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "spool_failed",
            "The upload could not be kept.",
            Some(&ctx.signed),
        );
    };
    match start(ctx, acct, file, opts).await {
        Ok(job) => redirect(&format!("{BASE}/a/{}/import/{}", acct.id, job.id)),
        Err(e) => super::store_error_page(&e, Some(&ctx.signed)),
    }
}

/// `POST /a/{id}/import/upload?license=…&feature=…&sso=1` (the file as
/// the body; the CSRF token in `X-CSRF-Token`, checked by the caller).
pub(super) async fn upload(
    ctx: &Ctx<'_>,
    acct: &Arc<Account>,
    q: &Form,
    body: hyper::body::Incoming,
) -> Response<Body> {
    let opts = match options(q) {
        Ok(o) => o,
        Err(p) => {
            return crate::server::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"code": "invalid_options", "message": p}),
            );
        }
    };
    let file = match crate::admin::spool(body).await {
        Ok(f) => f,
        Err(e) => {
            return crate::server::json(
                e.status(),
                &serde_json::json!({"code": e.code(), "message": e.to_string()}),
            );
        }
    };
    match start(ctx, acct, file, opts).await {
        Ok(job) => crate::server::json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"job": job.id, "status": format!("{BASE}/a/{}/import/{}.json", acct.id, job.id), "report": format!("{BASE}/a/{}/import/{}", acct.id, job.id)}),
        ),
        Err(e) => crate::server::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"code": e.code(), "message": e.to_string()}),
        ),
    }
}

fn num(v: Option<&Value>, k: &str) -> u64 {
    v.and_then(|r| r.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// `GET /a/{id}/import/{job}` (the report page, or progress while it
/// runs), `{job}.json` (progress for the script), `{job}.csv` (the bad
/// lines).
pub(super) async fn job_page(ctx: &Ctx<'_>, acct: &Account, which: &str) -> Response<Body> {
    let (id, kind) = match which.rsplit_once('.') {
        Some((id, k @ ("json" | "csv"))) => (id, k),
        _ => (which, "html"),
    };
    let job = match load(ctx.admin, &acct.id, id).await {
        Ok(Some(j)) => j,
        Ok(None) => return super::not_found(Some(&ctx.signed)),
        Err(e) => return super::store_error_page(&e, Some(&ctx.signed)),
    };
    let errors: Vec<(u64, String)> = job
        .report
        .as_ref()
        .and_then(|r| r.get("errors"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        num(Some(e), "line"),
                        e.get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    match kind {
        "json" => crate::server::json(
            StatusCode::OK,
            &serde_json::json!({"state": job.state, "size": job.size, "read": job.read, "rows": job.rows}),
        ),
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(["line", "reason"]);
            for (line, reason) in &errors {
                let _ = w.write_record([line.to_string().as_str(), reason.as_str()]);
            }
            let bytes = w.into_inner().unwrap_or_default();
            let mut r = Response::new(full(bytes));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"import-{}-errors.csv\"",
                job.id
            )) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => {
            let r = job.report.as_ref();
            let percent = (job.read.saturating_mul(100))
                .checked_div(job.size)
                .unwrap_or(0)
                .min(100);
            let body = html! {
                dl {
                    dt { "Started by" } dd { (job.by) }
                    dt { "Designated as" } dd { (job.license) @if job.sso { ", SSO User" } @if !job.features.is_empty() { ", features: " (job.features.join(", ")) } }
                    dt { "State" } dd { (job.state) }
                    dt { "Rows read" } dd { (job.rows) }
                }
                @if job.state == "running" {
                    label for="bar" { "Importing" }
                    progress #bar max="100" value=(percent) { (percent) " %" }
                    p.muted { "Reload to see the progress; the report appears here when the import ends." }
                }
                @if let Some(e) = &job.error { p.error role="alert" { (e) } }
                @if job.state == "done" {
                    @if let Some(i) = r.and_then(|r| r.get("interrupted")) {
                        p.error role="alert" { "The store failed part-way (" (i.get("reason").and_then(Value::as_str).unwrap_or("")) "): rows before line " (num(Some(i), "written_before_line")) " were written. Run the same import again to complete it." }
                    }
                    p.ok role="status" {
                        (num(r, "created")) " created, " (num(r, "updated")) " updated, " (num(r, "skipped")) " already there, " (num(r, "error_count")) " bad rows."
                    }
                    @if !errors.is_empty() {
                        p { a.button.secondary href={ (BASE) "/a/" (acct.id) "/import/" (job.id) ".csv" } download { "Download the bad rows as CSV" } }
                        table {
                            thead { tr { th { "Line" } th { "Reason" } } }
                            tbody {
                                @for (line, reason) in errors.iter().take(1000) {
                                    tr { td { (line) } td { (reason) } }
                                }
                            }
                        }
                        @if errors.len() > 1000 { p.muted { "The first 1,000 shown; the CSV has them all (up to 10,000)." } }
                    }
                }
                p { a href={ (BASE) "/a/" (acct.id) "/import" } { "Import another file" } }
            };
            respond(
                StatusCode::OK,
                page("Import report", Some(&ctx.signed), Some(acct), body),
            )
        }
    }
}
