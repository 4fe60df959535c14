//! CSV import: `email, first_name, last_name, department, user group`
//! (header matched case-insensitively, `_`/`-`/space alike; BOM, quoting and
//! CRLF tolerated). Streamed in batches, so memory stays bounded whatever
//! the file size (a 16-byte digest per email is kept to find duplicates).
//! Idempotent: existing users are skipped (or updated with
//! `update_existing`), so a rerun creates nothing twice and completes an
//! import a store outage interrupted.

use std::collections::HashSet;
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    DomainOwners, assign_vanities, domain_of_other_account, give_back_vanity, new_record,
    send_verification,
};
use crate::account::Account;
use crate::config::Config;
use crate::mapping::License;
use crate::store::{Store, StoreError, UserRecord, UserSource, UserStatus};

/// Most errors kept in the report (the count is always exact).
pub const MAX_REPORTED_ERRORS: usize = 10_000;

/// Settings that apply to the whole file.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// License of every imported user.
    pub license: License,
    /// Features of every imported user.
    pub features: Vec<String>,
    /// Users may sign in only through SSO.
    pub sso_only: bool,
    /// Validate and count, write nothing.
    pub dry_run: bool,
    /// Update users that already exist (default: skip them).
    pub update_existing: bool,
    /// Rows per store round trip.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            license: License::Basic,
            features: Vec::new(),
            sso_only: false,
            dry_run: false,
            update_existing: false,
            batch_size: 250,
        }
    }
}

/// A refused row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line number in the file.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// The import stopped early because the store failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interrupted {
    /// Stable code (`store_unavailable`).
    pub code: &'static str,
    /// The store's error.
    pub reason: String,
    /// Every good row on a line before this one was written.
    pub written_before_line: u64,
    /// Rows from `written_before_line` to this line may or may not have been
    /// written; rows after it were not. A rerun completes them.
    pub unknown_through_line: u64,
}

/// The import report (`--json` prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Users created.
    pub created: u64,
    /// Existing users updated (`update_existing`).
    pub updated: u64,
    /// Existing users left alone.
    pub skipped: u64,
    /// Bad rows, by line (at most [`MAX_REPORTED_ERRORS`]).
    pub errors: Vec<RowError>,
    /// Total bad rows (also those beyond the list's cap).
    pub error_count: u64,
    /// Set when the store failed part-way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Interrupted>,
    /// Rows read (header excluded).
    pub rows: u64,
}

/// The file cannot be imported at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The header is unusable.
    #[error("line 1: {0}")]
    Header(String),
    /// Reading failed.
    #[error("cannot read the CSV: {0}")]
    Read(String),
}

impl ImportError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Header(_) => "csv_header",
            Self::Read(_) => "csv_unreadable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = CrlfToLf {
            inner: std::io::BufReader::with_capacity(chunk, input),
            pending_cr: false,
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn seen_finds_every_repeat_across_merges() {
        let mut seen = Seen::default();
        let n = Seen::RECENT * 3 + 17;
        for i in 0..n {
            assert!(seen.insert(&format!("u{i}@x.org")), "{i} is new");
        }
        assert!(
            seen.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        assert_eq!(seen.sorted.len() + seen.recent.len(), n);
        for i in (0..n).step_by(997) {
            assert!(!seen.insert(&format!("u{i}@x.org")), "{i} seen");
        }
        assert!(seen.insert("another@x.org"));
    }

    #[test]
    fn crlf_becomes_lf_across_chunk_boundaries() {
        let input = b"a\r\nb\rc\r\n\r\nd\r";
        for chunk in 1..8 {
            assert_eq!(normalise(input, chunk), b"a\nb\rc\n\nd\r", "chunk {chunk}");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Email,
    FirstName,
    LastName,
    Department,
    Group,
}

fn column(name: &str) -> Option<Column> {
    let n: String = name
        .trim()
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '-' { ' ' } else { c })
        .collect();
    let n = n.split_whitespace().collect::<Vec<_>>().join(" ");
    match n.as_str() {
        "email" | "email address" | "e mail" => Some(Column::Email),
        "first name" | "firstname" | "given name" => Some(Column::FirstName),
        "last name" | "lastname" | "surname" | "family name" => Some(Column::LastName),
        "department" | "dept" => Some(Column::Department),
        "user group" | "user groups" | "group" | "groups" => Some(Column::Group),
        _ => None,
    }
}

struct Row {
    line: u64,
    user: UserRecord,
}

/// The emails seen so far in a file, as 64-bit fingerprints (the first 8
/// bytes of their SHA-256): 8 bytes a row in a sorted vector, plus a small
/// set of recent ones merged into it every [`Seen::RECENT`] rows, so a
/// million-row file costs 8 MiB (a hash set of digests cost 50 MiB while
/// growing). A directory by the fingerprints' top 16 bits finds a
/// fingerprint's few neighbours at once (they are uniform), instead of a
/// binary search's 20 cache misses. Two different emails share a
/// fingerprint with probability about n²/2⁶⁵ (10⁻⁸ for a million rows).
#[derive(Default)]
struct Seen {
    sorted: Vec<u64>,
    /// `dir[b]`: the first index in `sorted` whose top 16 bits are ≥ b
    /// (65,537 entries once anything is sorted).
    dir: Vec<u32>,
    recent: HashSet<u64>,
}

impl Seen {
    const RECENT: usize = 1 << 16;

    /// Records `email`; false when it was seen before.
    fn insert(&mut self, email: &str) -> bool {
        let digest = openssl::sha::sha256(email.as_bytes());
        let mut head = [0u8; 8];
        head.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
        let fp = u64::from_le_bytes(head);
        if self.in_sorted(fp) || !self.recent.insert(fp) {
            return false;
        }
        if self.recent.len() >= Self::RECENT {
            self.merge_recent();
        }
        true
    }

    fn in_sorted(&self, fp: u64) -> bool {
        let b = usize::try_from(fp >> 48).unwrap_or(0);
        let at = |i: usize| {
            self.dir
                .get(i)
                .and_then(|&v| usize::try_from(v).ok())
                .unwrap_or(self.sorted.len())
        };
        self.sorted
            .get(at(b)..at(b + 1))
            .is_some_and(|run| run.contains(&fp))
    }

    /// Merges the recent fingerprints into the sorted ones, in place from
    /// the back (linear in the rows so far, no second copy of them).
    fn merge_recent(&mut self) {
        let mut add: Vec<u64> = self.recent.drain().collect();
        add.sort_unstable();
        let mut i = self.sorted.len();
        self.sorted.reserve(add.len());
        self.sorted.resize(i + add.len(), 0);
        let mut k = self.sorted.len();
        while let Some(&b) = add.last() {
            k -= 1;
            let a = i.checked_sub(1).and_then(|p| self.sorted.get(p).copied());
            let v = match a {
                Some(a) if a > b => {
                    i -= 1;
                    a
                }
                _ => {
                    add.pop();
                    b
                }
            };
            if let Some(slot) = self.sorted.get_mut(k) {
                *slot = v;
            }
        }
        self.dir.clear();
        self.dir.reserve_exact(65_537);
        let mut i = 0usize;
        for b in 0..=65_536u64 {
            while self.sorted.get(i).is_some_and(|&v| (v >> 48) < b) {
                i += 1;
            }
            self.dir.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }
}

/// Turns CRLF into LF as bytes stream past. The csv crate miscounts line
/// numbers on CRLF input (each record is reported one line late after the
/// first), and errors must name the right line.
struct CrlfToLf<R> {
    inner: std::io::BufReader<R>,
    pending_cr: bool,
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let mut n = 0;
        while n < out.len() {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if self.pending_cr
                    && let Some(slot) = out.get_mut(n)
                {
                    *slot = b'\r';
                    n += 1;
                    self.pending_cr = false;
                }
                break;
            }
            let mut used = 0;
            for &b in buf {
                if self.pending_cr {
                    if b != b'\n' {
                        // A lone CR: emit it, then look at `b` again.
                        let Some(slot) = out.get_mut(n) else { break };
                        *slot = b'\r';
                        n += 1;
                    }
                    self.pending_cr = false;
                }
                if b == b'\r' {
                    self.pending_cr = true;
                    used += 1;
                    continue;
                }
                let Some(slot) = out.get_mut(n) else { break };
                *slot = b;
                n += 1;
                used += 1;
            }
            self.inner.consume(used);
            if n > 0 {
                break;
            }
        }
        Ok(n)
    }
}

/// Imports `reader`. `progress` is called after each batch with the rows read.
/// A new user whose email domain another account lists as associated (and
/// `account` does not; `owners`) is refused on its line, as for a user of
/// another account.
#[allow(clippy::too_many_arguments)]
pub async fn import(
    store: &dyn Store,
    cfg: &Config,
    account: &Account,
    owners: &dyn DomainOwners,
    reader: impl Read,
    opts: &ImportOptions,
    now: DateTime<Utc>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ImportReport, ImportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(CrlfToLf {
            inner: std::io::BufReader::new(reader),
            pending_cr: false,
        });
    let mut records = rdr.byte_records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(ImportError::Read(e.to_string())),
        None => return Err(ImportError::Header("the file is empty".into())),
    };
    let mut columns = Vec::new();
    let mut unknown = Vec::new();
    for field in header.iter() {
        let name = String::from_utf8_lossy(field);
        match column(&name) {
            Some(c) if columns.contains(&Some(c)) => {
                return Err(ImportError::Header(format!(
                    "column {name:?} appears twice"
                )));
            }
            Some(c) => columns.push(Some(c)),
            None => {
                unknown.push(name.trim().to_owned());
                columns.push(None);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(ImportError::Header(format!(
            "unknown column(s) {unknown:?}; expected email, first_name, last_name, department, user group"
        )));
    }
    if !columns.contains(&Some(Column::Email)) {
        return Err(ImportError::Header("no email column".into()));
    }

    let mut report = ImportReport::default();
    let mut seen = Seen::default();
    let mut batch: Vec<Row> = Vec::with_capacity(opts.batch_size);
    let mut last_line = 1u64;
    let mut flights = InFlight::default();
    let mut last_sent = 0u64;
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(last_line + 1, |p| p.line());
                add_error(&mut report, line, format!("unreadable row: {e}"));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(ImportError::Read(e.to_string()));
                }
                continue;
            }
        };
        let line = rec.position().map_or(last_line + 1, |p| p.line());
        last_line = line;
        report.rows += 1;
        match parse_row(&rec, &columns, opts, cfg, account, now, &mut seen) {
            Ok(user) => batch.push(Row { line, user }),
            Err(reason) => add_error(&mut report, line, reason),
        }
        if batch.len() >= opts.batch_size {
            let rows = std::mem::take(&mut batch);
            last_sent = rows.last().map_or(last_sent, |r| r.line);
            flights.push(Box::pin(flush(store, cfg, account, owners, opts, rows)));
            while flights.len() >= IN_FLIGHT {
                if !settle(&mut flights, &mut report, last_sent).await {
                    return Ok(finish(report));
                }
                progress(report.rows);
            }
        }
    }
    if !batch.is_empty() {
        last_sent = batch.last().map_or(last_sent, |r| r.line);
        flights.push(Box::pin(flush(store, cfg, account, owners, opts, batch)));
    }
    while flights.len() > 0 {
        if !settle(&mut flights, &mut report, last_sent).await {
            return Ok(finish(report));
        }
    }
    progress(report.rows);
    Ok(finish(report))
}

/// What one batch did, merged into the report in file order.
#[derive(Debug, Default)]
struct Outcome {
    created: u64,
    updated: u64,
    skipped: u64,
    errors: Vec<(u64, String)>,
}

impl Outcome {
    fn error(&mut self, line: u64, reason: String) {
        self.errors.push((line, reason));
    }

    fn merge_into(self, report: &mut ImportReport) {
        report.created += self.created;
        report.updated += self.updated;
        report.skipped += self.skipped;
        for (line, reason) in self.errors {
            add_error(report, line, reason);
        }
    }
}

/// Batches written concurrently, answered in file order.
type BatchFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, Interrupted>> + Send + 'a>>;

/// At most this many batches in flight: the store works on several while
/// the next is parsed (Redis answers pipelines back to back; the embedded
/// store's writer commits them together).
const IN_FLIGHT: usize = 8;

#[derive(Default)]
struct InFlight<'a> {
    queue: std::collections::VecDeque<(BatchFuture<'a>, Option<Result<Outcome, Interrupted>>)>,
}

impl<'a> InFlight<'a> {
    fn push(&mut self, f: BatchFuture<'a>) {
        self.queue.push_back((f, None));
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    /// The oldest batch's outcome, driving all of them meanwhile.
    async fn next(&mut self) -> Option<Result<Outcome, Interrupted>> {
        if self.queue.is_empty() {
            return None;
        }
        let done = std::future::poll_fn(|cx| {
            for (f, done) in self.queue.iter_mut() {
                if done.is_none()
                    && let std::task::Poll::Ready(r) = f.as_mut().poll(cx)
                {
                    *done = Some(r);
                }
            }
            match self.queue.front_mut() {
                Some((_, d)) if d.is_some() => std::task::Poll::Ready(d.take()),
                _ => std::task::Poll::Pending,
            }
        })
        .await;
        self.queue.pop_front();
        done
    }
}

/// Merges the oldest batch in flight into `report`; false when it failed
/// (the report then says so, and nothing more is sent). `last_sent`: the
/// last line handed to the store, the end of what may have been written.
async fn settle(flights: &mut InFlight<'_>, report: &mut ImportReport, last_sent: u64) -> bool {
    match flights.next().await {
        Some(Ok(o)) => {
            o.merge_into(report);
            true
        }
        Some(Err(mut e)) => {
            e.unknown_through_line = e.unknown_through_line.max(last_sent);
            report.interrupted = Some(e);
            false
        }
        None => true,
    }
}

/// The report with its errors in line order (batches answer in file order,
/// but a row's parse error is found before the batches ahead of it are
/// written).
fn finish(mut report: ImportReport) -> ImportReport {
    report.errors.sort_by_key(|e| e.line);
    report
}

fn add_error(report: &mut ImportReport, line: u64, reason: String) {
    report.error_count += 1;
    if report.errors.len() < MAX_REPORTED_ERRORS {
        report.errors.push(RowError { line, reason });
    }
}

fn parse_row(
    rec: &csv::ByteRecord,
    columns: &[Option<Column>],
    opts: &ImportOptions,
    cfg: &Config,
    account: &Account,
    now: DateTime<Utc>,
    seen: &mut Seen,
) -> Result<UserRecord, String> {
    if rec.len() > columns.len() {
        return Err(format!(
            "{} fields, the header has {}",
            rec.len(),
            columns.len()
        ));
    }
    if rec.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
        return Err("empty row".into());
    }
    let mut email = String::new();
    let (mut first, mut last, mut dept, mut groups) =
        (String::new(), String::new(), String::new(), Vec::new());
    for (field, col) in rec.iter().zip(columns) {
        // XML whitespace only (see `crate::email`): NBSP around an email
        // is refused, not trimmed into another user's address.
        let text = crate::email::trim_xml_space(
            std::str::from_utf8(field).map_err(|_| "not UTF-8 text".to_string())?,
        );
        let limit = |name: &str, max: usize| {
            if text.chars().count() > max {
                Err(format!("{name} longer than {max} characters"))
            } else {
                Ok(text.to_owned())
            }
        };
        match col {
            Some(Column::Email) => email = limit("email", 254)?,
            Some(Column::FirstName) => first = limit("first_name", 64)?,
            Some(Column::LastName) => last = limit("last_name", 64)?,
            Some(Column::Department) => dept = limit("department", 128)?,
            Some(Column::Group) => {
                for g in text.split(';').map(str::trim).filter(|g| !g.is_empty()) {
                    if g.chars().count() > 128 {
                        return Err("a user group is longer than 128 characters".into());
                    }
                    groups.push(g.to_owned());
                }
            }
            None => {}
        }
    }
    if email.is_empty() {
        return Err("missing email".into());
    }
    let email = crate::email::canonical(&email, cfg.security.allow_international_email).map_err(
        |e| match e {
            crate::email::EmailError::NotAnEmail(_) => format!("invalid email {email:?}"),
            crate::email::EmailError::NotAscii(_) => format!("email_not_ascii: {e}"),
        },
    )?;
    if !seen.insert(&email) {
        return Err(format!("duplicate of an earlier row for {email}"));
    }
    let mut u = new_record(&email, UserSource::Csv, opts.license, account, now);
    u.first_name = first;
    u.last_name = last;
    u.department = dept;
    u.groups = groups;
    u.features.clone_from(&opts.features);
    u.sso_only = opts.sso_only;
    Ok(u)
}

/// The row error for a user of another account.
fn other_account(email: &str) -> String {
    format!("user_in_other_account: {email} belongs to another account of this gateway")
}

/// The row error for a new user in another account's associated domain.
fn other_accounts_domain(email: &str) -> String {
    format!(
        "user_in_other_account: the domain of {email} is an associated domain of another account of this gateway"
    )
}

async fn flush(
    store: &dyn Store,
    cfg: &Config,
    account: &Account,
    owners: &dyn DomainOwners,
    opts: &ImportOptions,
    rows: Vec<Row>,
) -> Result<Outcome, Interrupted> {
    let mut out = Outcome::default();
    let report = &mut out;
    let first = rows.first().map_or(0, |r| r.line);
    let last = rows.last().map_or(0, |r| r.line);
    let fail = |e: StoreError| Interrupted {
        code: e.code(),
        reason: e.to_string(),
        written_before_line: first,
        unknown_through_line: last,
    };
    let mut new_users: Vec<UserRecord> = Vec::with_capacity(rows.len());
    let mut new_lines: Vec<u64> = Vec::with_capacity(rows.len());
    // Existing users are looked up first (one batched read): a rerun then
    // writes nothing for them (no vanity name claimed and released, no
    // insert that fails one key at a time), so it costs no more than the
    // first run. Only the insert still settles a race with a login or
    // another import creating the same user meanwhile.
    let emails: Vec<String> = rows.iter().map(|r| r.user.email.clone()).collect();
    let existing = store.get_users(&emails).await.map_err(fail)?;
    let mut updates = Vec::new();
    for (row, old) in rows.into_iter().zip(existing) {
        match old {
            Some(old) if old.account != account.id => {
                report.error(row.line, other_account(&old.email));
            }
            Some(old) if opts.update_existing => updates.push(merge(old, row.user)),
            Some(_) => report.skipped += 1,
            None => {
                new_lines.push(row.line);
                new_users.push(row.user);
            }
        }
    }
    drop_foreign(account, owners, &mut new_users, &mut new_lines, report);
    if opts.dry_run {
        report.updated += updates.len() as u64;
        report.created += new_users.len() as u64;
        return Ok(out);
    }
    if !updates.is_empty() {
        assign_vanities(store, &mut updates).await.map_err(fail)?;
        store.put_users(&updates).await.map_err(fail)?;
        report.updated += updates.len() as u64;
    }
    if new_users.is_empty() {
        return Ok(out);
    }
    assign_vanities(store, &mut new_users).await.map_err(fail)?;
    let inserted = store.insert_users(&new_users).await.map_err(fail)?;
    // Rows whose email exists already: skipped when the user is this
    // account's, an error when another account's.
    let mut taken: Vec<(u64, String, Option<String>)> = Vec::new();
    for ((u, ok), line) in new_users.iter().zip(inserted).zip(new_lines) {
        if ok {
            report.created += 1;
            if u.status == UserStatus::PendingVerification {
                send_verification(store, cfg, account, &u.email)
                    .await
                    .map_err(fail)?;
            }
        } else {
            taken.push((line, u.email.clone(), u.vanity.clone()));
        }
    }
    if !taken.is_empty() {
        let emails: Vec<String> = taken.iter().map(|(_, e, _)| e.clone()).collect();
        let owners = store.get_users(&emails).await.map_err(fail)?;
        for ((line, email, vanity), owner) in taken.into_iter().zip(owners) {
            if let Some(name) = &vanity {
                give_back_vanity(store, name, &email, owner.as_ref())
                    .await
                    .map_err(fail)?;
            }
            match owner {
                Some(o) if o.account != account.id => {
                    report.error(line, other_account(&email));
                }
                _ => report.skipped += 1,
            }
        }
    }
    Ok(out)
}

/// Takes the new users (found absent) in another account's associated
/// domain out of `users`/`lines` and reports them on their lines.
fn drop_foreign(
    account: &Account,
    owners: &dyn DomainOwners,
    users: &mut Vec<UserRecord>,
    lines: &mut Vec<u64>,
    report: &mut Outcome,
) {
    if !users
        .iter()
        .any(|u| domain_of_other_account(owners, account, &u.email))
    {
        return;
    }
    let (mut kept_users, mut kept_lines) = (Vec::new(), Vec::new());
    for (u, line) in std::mem::take(users).into_iter().zip(std::mem::take(lines)) {
        if domain_of_other_account(owners, account, &u.email) {
            report.error(line, other_accounts_domain(&u.email));
        } else {
            kept_users.push(u);
            kept_lines.push(line);
        }
    }
    (*users, *lines) = (kept_users, kept_lines);
}

/// An existing user updated from a CSV row: names, department and groups
/// when the row has them; license, features and SSO flag from the options.
fn merge(mut old: UserRecord, row: UserRecord) -> UserRecord {
    if !row.first_name.is_empty() {
        old.first_name = row.first_name;
    }
    if !row.last_name.is_empty() {
        old.last_name = row.last_name;
    }
    if !row.department.is_empty() {
        old.department = row.department;
    }
    if !row.groups.is_empty() {
        old.groups = row.groups;
    }
    old.license = row.license;
    old.features = row.features;
    old.sso_only = row.sso_only;
    old.updated_at = row.updated_at;
    old
}
