//! The `samlgate` command line. Thin: parsing arguments, printing results.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use samlgate::check::{Decision, check_response, check_response_for};
use samlgate::clock::{Clock, FixedClock, SystemClock};
use samlgate::config::Config;

#[derive(Parser)]
#[command(name = "samlgate", version, about = "SAML 2.0 single-sign-on gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Decide one SAMLResponse (base64 as POSTed, or raw XML) and print JSON.
    CheckResponse {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Validate as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
        /// Mark a request id as outstanding (repeatable).
        #[arg(long = "request-id")]
        request_id: Vec<String>,
        /// Decide as this account (default: the config file's).
        #[arg(long, default_value = "default")]
        account: String,
        /// The response file, or - for standard input.
        file: String,
    },
    /// Config commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// User directory commands.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Accounts in the store (many customers on one gateway).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create or replace an account from a document (JSON, or TOML by the
    /// .toml extension); its id is the document's `id`.
    Put {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Check only; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The document (- for standard input, JSON).
        file: String,
    },
    /// Print one account's document as JSON (exit 1 when absent).
    Get {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Account id.
        id: String,
    },
    /// List the accounts (JSON), ordered by id.
    List {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delete an account (refused while it has users, unless --purge).
    Delete {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Also delete its users.
        #[arg(long)]
        purge: bool,
        /// Account id.
        id: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Import users from a CSV file (email, first_name, last_name, department, user group).
    Import {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// The account the users belong to (default: the config file's).
        #[arg(long, default_value = "default")]
        account: String,
        /// The CSV file.
        file: PathBuf,
        /// License of every user in the file.
        #[arg(long, value_parser = ["basic", "licensed", "on_prem"])]
        license: String,
        /// A feature every user gets (repeatable).
        #[arg(long = "feature")]
        features: Vec<String>,
        /// Users sign in only through SSO.
        #[arg(long)]
        sso: bool,
        /// Validate and count; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Update users that already exist instead of skipping them.
        #[arg(long)]
        update_existing: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one user as JSON (exit 1 when absent).
    Get {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Only a user of this account (default: any).
        #[arg(long)]
        account: Option<String>,
        /// Email.
        email: String,
    },
    /// List users as JSON, ordered by email.
    List {
        /// Only users of this account (default: every account's).
        #[arg(long)]
        account: Option<String>,
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Start after this email.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delete one user (exit 1 when absent).
    Delete {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Only a user of this account (default: any).
        #[arg(long)]
        account: Option<String>,
        /// Email.
        email: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; every error names its key.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// mimalloc instead of glibc's malloc: the proxy path allocates and frees
/// many small buffers per request (hyper's headers and bodies), where glibc
/// spent ~8% of the gateway's CPU (`perf`, bench/proxy.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages for this process. mimalloc asks for them on
    // its heap (`madvise(MADV_HUGEPAGE)`), so the kernel backs the heap with
    // 2 MiB pages, on first touch and later by khugepaged's collapsing of
    // sparsely used ranges: the soak (bench/soak.sh) saw RSS step up by 7 to
    // 13 MiB of mostly zero pages about eleven minutes in, while the heap's
    // live content stayed the same. A failure (a kernel without the call)
    // changes nothing else.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The gateway logs its audit events at info; one-shot commands stay quiet.
    let default_log = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAMLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve { config } => {
            if let Err(code) = load(&config) {
                return code;
            }
            let rt = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match rt.block_on(samlgate::serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("samlgate: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::CheckResponse {
            config,
            at,
            request_id,
            account,
            file,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let account = match account_of(&cfg, &account) {
                Ok(a) => a,
                Err(code) => return code,
            };
            let clock: Box<dyn Clock> = match at {
                None => Box::new(SystemClock),
                Some(s) => match chrono::DateTime::parse_from_rfc3339(&s) {
                    Ok(t) => Box::new(FixedClock(t.with_timezone(&chrono::Utc))),
                    Err(e) => {
                        eprintln!("samlgate: --at {s:?} is not an RFC 3339 time: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            let mut input = Vec::new();
            let read = if file == "-" {
                std::io::stdin().read_to_end(&mut input).map(|_| ())
            } else {
                std::fs::File::open(&file)
                    .and_then(|mut f| f.read_to_end(&mut input))
                    .map(|_| ())
            };
            if let Err(e) = read {
                eprintln!("samlgate: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
            let mut report = match &account {
                Some(a) => check_response_for(&input, &cfg, a, &request_id, clock.as_ref()),
                None => check_response(&input, &cfg, &request_id, clock.as_ref()),
            };
            if report.user.is_some() {
                let rt = match runtime() {
                    Ok(r) => r,
                    Err(code) => return code,
                };
                rt.block_on(async {
                    // Read-only: an embedded store that does not exist yet is an
                    // empty directory; it is never created here.
                    let store: Result<std::sync::Arc<dyn samlgate::store::Store>, _> =
                        match &cfg.store {
                            samlgate::config::StoreConfig::Embedded { path } if !path.exists() => {
                                Ok(std::sync::Arc::new(samlgate::store::EmptyStore))
                            }
                            other => {
                                samlgate::store::open(other, std::sync::Arc::new(SystemClock)).await
                            }
                        };
                    match store {
                        Ok(s) => {
                            let owners =
                                samlgate::account::manage::domain_owners(s.as_ref(), &cfg).await;
                            match (account.as_ref().or(cfg.account.as_ref()), owners) {
                                (Some(acct), Ok(owners)) => {
                                    samlgate::check::add_provisioning(
                                        &mut report,
                                        s.as_ref(),
                                        &cfg,
                                        acct,
                                        &owners,
                                        clock.as_ref(),
                                    )
                                    .await
                                }
                                (Some(_), Err(e)) => {
                                    report.trace.push(samlgate::mapping::TraceLine::new(
                                        "provision",
                                        format!("unknown: [{}] {e}", e.code()),
                                    ))
                                }
                                (None, _) => {}
                            }
                        }
                        Err(e) => report.trace.push(samlgate::mapping::TraceLine::new(
                            "provision",
                            format!("unknown: [{}] {e}", e.code()),
                        )),
                    }
                });
            }
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("samlgate: cannot print the report: {e}");
                    return ExitCode::from(2);
                }
            }
            match report.decision {
                Decision::Accept => ExitCode::SUCCESS,
                Decision::Reject => ExitCode::from(1),
            }
        }
        Command::Users { command } => users(command),
        Command::Accounts { command } => accounts(command),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match load(&config) {
            Ok(cfg) => {
                match &cfg.account {
                    Some(a) => println!(
                        "{}: OK (IdP {} with {} signing certificate(s); SP {}; provisioning {:?})",
                        config.display(),
                        a.idp.metadata.entity_id,
                        a.idp.metadata.signing_certs.len(),
                        a.sp.entity_id,
                        a.provisioning.mode
                    ),
                    None => println!(
                        "{}: OK (no default account: every account lives in the store)",
                        config.display()
                    ),
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(samlgate::serve::worker_count())
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("samlgate: cannot start the runtime: {e}");
            ExitCode::from(2)
        })
}

async fn open_store(cfg: &Config) -> Result<std::sync::Arc<dyn samlgate::store::Store>, ExitCode> {
    samlgate::store::open(&cfg.store, std::sync::Arc::new(SystemClock))
        .await
        .map_err(|e| {
            eprintln!("samlgate: [{}] {e}", e.code());
            ExitCode::from(1)
        })
}

fn print_json<T: serde::Serialize>(v: &T) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(j) => {
            println!("{j}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("samlgate: {e}");
            ExitCode::from(2)
        }
    }
}

fn users(command: UsersCommand) -> ExitCode {
    let config = match &command {
        UsersCommand::Import { config, .. }
        | UsersCommand::Get { config, .. }
        | UsersCommand::List { config, .. }
        | UsersCommand::Delete { config, .. } => config.clone(),
    };
    let cfg = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("samlgate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let _unused = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(async move {
        // One-shot commands: a small embedded page cache (the OS caches
        // the file anyway) keeps a million-row import within 64 MiB.
        let store = match samlgate::store::open_with_cache(
            &cfg.store,
            std::sync::Arc::new(SystemClock),
            4 * 1024 * 1024,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("samlgate: [{}] {e}", e.code());
                return ExitCode::from(1);
            }
        };
        match command {
            UsersCommand::Get { email, account, .. } => {
                match store.get_user(&samlgate::email::lookup_key(&email)).await {
                    Ok(Some(u)) if account.as_ref().is_none_or(|a| *a == u.account) => {
                        print_json(&u)
                    }
                    Ok(_) => {
                        eprintln!("samlgate: no user {email}");
                        ExitCode::from(1)
                    }
                    Err(e) => {
                        eprintln!("samlgate: [{}] {e}", e.code());
                        ExitCode::from(1)
                    }
                }
            }
            UsersCommand::List {
                after,
                limit,
                account,
                ..
            } => {
                let limit = limit.max(1);
                let mut out = Vec::new();
                let mut cursor = after;
                loop {
                    let page = match &account {
                        Some(a) => {
                            store
                                .list_account_users(a, cursor.as_deref(), limit - out.len())
                                .await
                        }
                        None => store
                            .list_users(cursor.as_deref(), limit)
                            .await
                            .map(|p| (p, None)),
                    };
                    match page {
                        Ok((p, next)) => {
                            out.extend(p);
                            match next {
                                Some(n) if out.len() < limit => cursor = Some(n),
                                _ => break,
                            }
                        }
                        Err(e) => {
                            eprintln!("samlgate: [{}] {e}", e.code());
                            return ExitCode::from(1);
                        }
                    }
                }
                out.truncate(limit);
                print_json(&out)
            }
            UsersCommand::Delete { email, account, .. } => {
                let key = samlgate::email::lookup_key(&email);
                if let Some(a) = &account {
                    match store.get_user(&key).await {
                        Ok(Some(u)) if u.account == *a => {}
                        Ok(_) => {
                            eprintln!("samlgate: no user {email} in account {a}");
                            return ExitCode::from(1);
                        }
                        Err(e) => {
                            eprintln!("samlgate: [{}] {e}", e.code());
                            return ExitCode::from(1);
                        }
                    }
                }
                let account_of = match &account {
                    Some(a) => Some(a.clone()),
                    None => match store.get_user(&key).await {
                        Ok(u) => u.map(|u| u.account),
                        Err(e) => {
                            eprintln!("samlgate: [{}] {e}", e.code());
                            return ExitCode::from(1);
                        }
                    },
                };
                if let Some(a) = account_of
                    && let Err(e) = samlgate::activity::forget_user(store.as_ref(), &a, &key).await
                {
                    eprintln!("samlgate: [{}] {e}", e.code());
                    return ExitCode::from(1);
                }
                match store.delete_user(&key).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => {
                        eprintln!("samlgate: no user {email}");
                        ExitCode::from(1)
                    }
                    Err(e) => {
                        eprintln!("samlgate: [{}] {e}", e.code());
                        ExitCode::from(1)
                    }
                }
            }
            UsersCommand::Import {
                file,
                account,
                license,
                features,
                sso,
                dry_run,
                update_existing,
                json,
                ..
            } => {
                let acct = match stored_or_default(&cfg, store.as_ref(), &account).await {
                    Ok(a) => a,
                    Err(code) => return code,
                };
                import(
                    store.as_ref(),
                    &cfg,
                    &acct,
                    &file,
                    &license,
                    features,
                    sso,
                    dry_run,
                    update_existing,
                    json,
                )
                .await
            }
        }
    })
}

/// Counts bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[allow(clippy::too_many_arguments)]
async fn import(
    store: &dyn samlgate::store::Store,
    cfg: &Config,
    account: &samlgate::account::Account,
    file: &std::path::Path,
    license: &str,
    features: Vec<String>,
    sso: bool,
    dry_run: bool,
    update_existing: bool,
    json: bool,
) -> ExitCode {
    use std::io::IsTerminal;
    let Some(license) = samlgate::mapping::License::parse(license) else {
        eprintln!("samlgate: --license must be basic, licensed or on_prem");
        return ExitCode::from(2);
    };
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("samlgate: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = std::io::BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: f,
            read: std::sync::Arc::clone(&read),
        },
    );
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        ) {
            b.set_style(style);
        }
        Some(b)
    } else {
        None
    };
    let opts = samlgate::provisioning::csv::ImportOptions {
        license,
        features,
        sso_only: sso,
        dry_run,
        update_existing,
        ..Default::default()
    };
    let mut progress = |rows: u64| {
        if let Some(b) = &bar {
            b.set_position(read.load(std::sync::atomic::Ordering::Relaxed));
            b.set_message(format!("{rows} rows"));
        }
    };
    let owners = match samlgate::account::manage::domain_owners(store, cfg).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("samlgate: [{}] reading the accounts: {e}", e.code());
            return ExitCode::from(2);
        }
    };
    let result = samlgate::provisioning::csv::import(
        store,
        cfg,
        account,
        &owners,
        reader,
        &opts,
        SystemClock.now(),
        &mut progress,
    )
    .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("samlgate: [{}] {}: {e}", e.code(), file.display());
            return ExitCode::from(2);
        }
    };
    if json {
        let _ = print_json(&report);
    } else {
        println!(
            "{}{} rows: {} created, {} updated, {} skipped as existing, {} bad",
            if dry_run { "dry run: " } else { "" },
            report.rows,
            report.created,
            report.updated,
            report.skipped,
            report.error_count
        );
        for e in &report.errors {
            println!("  line {}: {}", e.line, e.reason);
        }
        if report.error_count > report.errors.len() as u64 {
            println!(
                "  ... and {} more",
                report.error_count - report.errors.len() as u64
            );
        }
        if let Some(i) = &report.interrupted {
            println!(
                "INTERRUPTED [{}] {}: rows before line {} were written; lines {}..={} may or may not be; later rows were not. Rerun the same command to complete the import.",
                i.code,
                i.reason,
                i.written_before_line,
                i.written_before_line,
                i.unknown_through_line
            );
        }
    }
    if report.interrupted.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Account `id`: the config file's for `default`, else the stored one.
async fn stored_or_default(
    cfg: &Config,
    store: &dyn samlgate::store::Store,
    id: &str,
) -> Result<samlgate::account::Account, ExitCode> {
    if id == samlgate::account::DEFAULT_ID {
        return cfg.account.clone().ok_or_else(|| {
            eprintln!(
                "samlgate: the config has no default account ([idp]); name one with --account"
            );
            ExitCode::from(2)
        });
    }
    let stored = store.get_account(id).await.map_err(|e| {
        eprintln!("samlgate: [{}] {e}", e.code());
        ExitCode::from(1)
    })?;
    let Some(stored) = stored else {
        eprintln!("samlgate: [account_not_found] no account {id}");
        return Err(ExitCode::from(2));
    };
    serde_json::from_slice::<samlgate::account::doc::Record>(&stored.record)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            samlgate::account::manage::from_record(cfg, id, &r).map_err(|e| e.to_string())
        })
        .map_err(|e| {
            eprintln!("samlgate: account {id}: {e}");
            ExitCode::from(2)
        })
}

/// `--account ID` of check-response: `None` for the config file's.
fn account_of(cfg: &Config, id: &str) -> Result<Option<samlgate::account::Account>, ExitCode> {
    if id == samlgate::account::DEFAULT_ID {
        return Ok(None);
    }
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(cfg).await?;
        stored_or_default(cfg, store.as_ref(), id).await.map(Some)
    })
}

fn accounts(command: AccountsCommand) -> ExitCode {
    use samlgate::account::manage;
    let config = match &command {
        AccountsCommand::Put { config, .. }
        | AccountsCommand::Get { config, .. }
        | AccountsCommand::List { config, .. }
        | AccountsCommand::Delete { config, .. } => config.clone(),
    };
    let cfg = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let fail = |e: manage::AccountError| {
        match &e {
            manage::AccountError::Invalid(problems) => {
                eprintln!("samlgate: [{}] {} problem(s):", e.code(), problems.len());
                for p in problems {
                    eprintln!("  - {p}");
                }
            }
            _ => eprintln!("samlgate: [{}] {e}", e.code()),
        }
        ExitCode::from(if e.status() == 503 { 1 } else { 2 })
    };
    rt.block_on(async move {
        let store = match open_store(&cfg).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        match command {
            AccountsCommand::Put { file, dry_run, .. } => {
                let mut text = String::new();
                let read = if file == "-" {
                    std::io::stdin().read_to_string(&mut text).map(|_| ())
                } else {
                    std::fs::read_to_string(&file).map(|t| text = t)
                };
                if let Err(e) = read {
                    eprintln!("samlgate: cannot read {file}: {e}");
                    return ExitCode::from(2);
                }
                let doc: Result<serde_json::Value, String> = if file.ends_with(".toml") {
                    toml::from_str(&text).map_err(|e| e.to_string())
                } else {
                    serde_json::from_str(&text).map_err(|e| e.to_string())
                };
                let doc = match doc {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("samlgate: [invalid_json] {file}: {e}");
                        return ExitCode::from(2);
                    }
                };
                let Some(id) = doc.get("id").and_then(|v| v.as_str()).map(str::to_owned) else {
                    eprintln!("samlgate: [invalid_account] {file}: id: is required");
                    return ExitCode::from(2);
                };
                match manage::put(store.as_ref(), &cfg, None, &id, doc, dry_run).await {
                    Ok(w) => {
                        println!(
                            "{}account {id} {} (hosts {}; provisioning {:?})",
                            if dry_run { "dry run: " } else { "" },
                            match (dry_run, w.created) {
                                (true, true) => "would be created",
                                (true, false) => "would be replaced",
                                (false, true) => "created",
                                (false, false) => "replaced",
                            },
                            w.account.hosts.join(", "),
                            w.account.provisioning.mode
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            AccountsCommand::Get { id, .. } => match manage::get(store.as_ref(), &id).await {
                Ok((mut doc, _)) => {
                    if let Some(o) = doc.as_object_mut() {
                        o.insert("id".into(), serde_json::Value::String(id));
                    }
                    print_json(&doc)
                }
                Err(e) => {
                    let code = fail(e);
                    if code == ExitCode::from(2) {
                        ExitCode::from(1)
                    } else {
                        code
                    }
                }
            },
            AccountsCommand::List { after, limit, .. } => {
                match manage::list(store.as_ref(), after.as_deref(), limit).await {
                    Ok(page) => print_json(
                        &page
                            .into_iter()
                            .map(|(id, mut doc, _)| {
                                if let Some(o) = doc.as_object_mut() {
                                    o.insert("id".into(), serde_json::Value::String(id));
                                }
                                doc
                            })
                            .collect::<Vec<_>>(),
                    ),
                    Err(e) => fail(e),
                }
            }
            AccountsCommand::Delete { id, purge, .. } => {
                match manage::delete(store.as_ref(), None, &id, purge).await {
                    Ok(n) => {
                        println!("account {id} deleted ({n} user(s) deleted with it)");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    let rt = runtime()?;
    rt.block_on(Config::load_async(path)).map_err(|e| {
        eprintln!("samlgate: [{}] {e}", e.code());
        ExitCode::from(2)
    })
}
