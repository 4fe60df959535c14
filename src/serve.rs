//! `samlgate serve`: opens the store, starts the public and admin listeners
//! (and, in demo mode, the demo upstream), and handles signals:
//! SIGTERM stops accepting and drains in-flight requests for up to
//! `listen.drain_secs`; SIGINT stops at once; SIGHUP reloads the config
//! (mapping rules, IdP metadata, security and session settings) without
//! dropping sessions, keeping the old config when the new one is invalid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::account::DEFAULT_ID;
use crate::account::registry::{Change, Registry};
use crate::admin::Admin;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::pages::{esc, html};
use crate::metrics::Metrics;
use crate::server::{Handler, HandlerFuture, serve};

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The config key.
        key: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Anything else at start-up.
    #[error("{0}")]
    Other(String),
}

/// Worker threads: `SAMLGATE_WORKERS`, else one per core.
pub fn worker_count() -> usize {
    std::env::var("SAMLGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(2)
}

/// A listening socket with SO_REUSEPORT, handed over as a std listener so
/// a worker thread's runtime can adopt it.
fn reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let err = |source: std::io::Error| ServeError::Bind {
        addr,
        key: "listen.public",
        source,
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)?.into_std().map_err(err)
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, key, source })
}

/// The demo upstream: a page showing the identity headers it received.
struct DemoUpstream;

impl Handler for DemoUpstream {
    fn call(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> HandlerFuture {
        Box::pin(async move {
            let rows: String = req
                .headers()
                .iter()
                .filter(|(k, _)| {
                    k.as_str().starts_with("x-samlgate-") || k.as_str().starts_with("x-forwarded-")
                })
                .map(|(k, v)| {
                    format!(
                        "<tr><td><code>{}</code></td><td>{}</td></tr>",
                        esc(k.as_str()),
                        esc(&String::from_utf8_lossy(v.as_bytes()))
                    )
                })
                .collect();
            html(
                StatusCode::OK,
                "Demo meeting platform",
                &format!(
                    "<p>You reached <code>{}</code> through samlgate. The platform received these identity headers:</p>\
<table>{rows}</table><p><a href=\"/saml/logout\">Sign out</a></p>",
                    esc(req.uri().path())
                ),
            )
        })
    }
}

/// `serve` verifies with the native verifier only. libxmlsec1 implements
/// all of XML-DSig (any Reference URI, XSLT, network and file access);
/// the pre-check keeps it to the strict profile, but a disagreement
/// between two XML parsers once let a signature past the pre-check into
/// it (docs/threat-model.md). It lives on as the test oracle and in
/// `check-response`, which never face the network.
fn serve_verifier(cfg: &Config) -> Result<(), String> {
    if cfg.security.verifier == crate::config::VerifierKind::Libxmlsec1 {
        return Err("security.verifier = \"libxmlsec1\" is for check-response and the tests only; serve verifies natively (remove the key or set \"native\")".into());
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (the usual soft
/// limit, 1,024, is less than `listen.max_connections`' default), and warns
/// when even that is below what both listeners may hold (each connection
/// needs a second descriptor upstream).
fn raise_fd_limit(cfg: &Config) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: now.maximum,
        maximum: now.maximum,
    };
    let limit = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => now.maximum,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            now.current
        }
    };
    let needed = (cfg.listen.limits.max_connections as u64) * 2 + 256;
    match limit {
        Some(l) if l < needed => tracing::warn!(
            open_files = l,
            needed,
            "the open-files limit is below what listen.max_connections needs (two per connection); raise it (ulimit -n, LimitNOFILE=) or lower listen.max_connections"
        ),
        _ => tracing::info!(open_files = ?limit, "open-files limit"),
    }
}

/// Runs the gateway until a signal stops it.
pub async fn run(config_path: PathBuf) -> Result<(), ServeError> {
    let cfg = Arc::new(
        Config::load_async(&config_path)
            .await
            .map_err(|e| ServeError::Other(e.to_string()))?,
    );
    serve_verifier(&cfg).map_err(ServeError::Other)?;
    raise_fd_limit(&cfg);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = crate::store::open(&cfg.store, Arc::clone(&clock)).await?;
    if let Err(e) = store.ping().await {
        tracing::warn!(error = %e, "store not reachable at start; logins fail closed until it is");
    }
    let metrics = Arc::new(Metrics::default());
    metrics.set_account_label(cfg.accounts.metrics_label);
    let tls = match (&cfg.listen.tls_cert, &cfg.listen.tls_key) {
        (Some(c), Some(k)) => Some(crate::server::tls::acceptor(c, k).map_err(ServeError::Other)?),
        _ => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain = Duration::from_secs(cfg.listen.drain_secs);

    // The public listener: one thread per core, each a single-threaded
    // runtime with its own SO_REUSEPORT socket and upstream pool (the kernel
    // spreads connections; no cross-thread wake-ups on the request path).
    // They share the store, the metrics and the session cache (one shard
    // per worker).
    let workers = worker_count();
    let sessions = Arc::new(crate::gateway::session::Sessions::sharded(workers));
    // The stored accounts are read in the background (`sync_accounts`):
    // the listeners open at once, the default account serves meanwhile and
    // `/readyz` answers 503 until every stored account is loaded.
    let accounts = Arc::new(Registry::loading(cfg.account.clone()));
    let sync = crate::account::manage::Sync::new();
    let mut gateways = Vec::new();
    let mut threads = Vec::new();
    // Login decisions for the console's sign-in activity (written by one
    // task, off the request path).
    let (activity, activity_rx) = crate::activity::Activity::new();
    for i in 0..workers {
        let gw = Arc::new(
            Gateway::with_sessions(
                Arc::clone(&cfg),
                Arc::clone(&store),
                Arc::clone(&clock),
                Arc::clone(&metrics),
                tls.is_some(),
                Arc::clone(&sessions),
                i,
                Arc::clone(&accounts),
            )
            .map_err(ServeError::Other)?
            .with_activity(Arc::clone(&activity)),
        );
        gateways.push(Arc::clone(&gw));
        let listener = reuseport(cfg.listen.public)?;
        let (tls, mut stop) = (tls.clone(), stop_rx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("samlgate-w{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a worker runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => crate::server::serve_tls(l, gw, tls, &mut stop, drain).await,
                        Err(e) => tracing::error!(error = %e, "worker cannot use its listener"),
                    }
                });
            })
            .map_err(|e| ServeError::Other(format!("cannot start worker thread: {e}")))?;
        threads.push(handle);
    }

    let admin_listener = bind(cfg.listen.admin, "listen.admin").await?;
    let m = Arc::clone(&metrics);
    let admin = Arc::new(Admin {
        config: Arc::clone(&cfg),
        accounts: Arc::clone(&accounts),
        store: Arc::clone(&store),
        clock: Arc::clone(&clock),
        metrics: {
            let a = Arc::clone(&activity);
            Arc::new(move || {
                format!(
                    "{}# HELP samlgate_activity_dropped_total Login decisions not kept in the sign-in activity (queue full or store failed).\n# TYPE samlgate_activity_dropped_total counter\nsamlgate_activity_dropped_total {}\n",
                    m.render(),
                    a.dropped()
                )
            })
        },
        sessions: Arc::clone(&sessions),
    });
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crate::activity::run(
        Arc::clone(&activity),
        // Not worth a sync: durable at the store's next checkpoint.
        store.lazy().unwrap_or_else(|| Arc::clone(&store)),
        activity_rx,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(serve(
        admin_listener,
        admin,
        stop_rx.clone(),
        drain,
    )));
    if cfg.demo_upstream {
        let addr: SocketAddr = cfg
            .upstream
            .url
            .trim_start_matches("http://")
            .parse()
            .map_err(|_| ServeError::Other("[demo] needs upstream.url as http://IP:PORT".into()))?;
        let l = bind(addr, "upstream.url").await?;
        tasks.push(tokio::spawn(serve(
            l,
            Arc::new(DemoUpstream),
            stop_rx.clone(),
            drain,
        )));
    }
    if cfg.demo {
        tracing::warn!(
            "DEMO MODE: the test-only development IdP is served at /_demo-idp/; never use this config in production"
        );
    }
    tasks.push(tokio::spawn(purge_expired(
        Arc::clone(&store),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(
        Arc::clone(&sessions).watch(Arc::clone(&store), stop_rx.clone()),
    ));
    tasks.push(tokio::spawn(sync_accounts(
        sync,
        Arc::clone(&store),
        Arc::clone(&cfg),
        Arc::clone(&accounts),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(refresh_stored_metadata(
        Arc::clone(&store),
        Arc::clone(&cfg),
        Arc::clone(&accounts),
        stop_rx.clone(),
    )));
    if let Some(idp) = cfg.account.as_ref().map(|a| &a.idp)
        && let Some(url) = idp.metadata_url.clone()
    {
        let every = Duration::from_secs(idp.metadata_refresh_secs);
        tasks.push(tokio::spawn(refresh_metadata(
            Arc::clone(&accounts),
            DEFAULT_ID.to_owned(),
            url,
            every,
            cfg.security.insecure_allow_rsa_1024,
            stop_rx.clone(),
        )));
    }
    tracing::info!(public = %cfg.listen.public, admin = %cfg.listen.admin, workers, store = ?cfg.store, "samlgate listening");
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "samlgate listening on {scheme}://{} (admin on http://{}); open {scheme}://{}/ in a browser",
        cfg.listen.public, cfg.listen.admin, cfg.listen.public
    );

    let mut term = signal(SignalKind::terminate()).map_err(|e| ServeError::Other(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| ServeError::Other(e.to_string()))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| ServeError::Other(e.to_string()))?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(drain_secs = drain.as_secs(), "SIGTERM: draining");
                let _ = stop_tx.send(true);
                for t in tasks {
                    let _ = t.await;
                }
                let _ = tokio::task::spawn_blocking(move || {
                    for t in threads {
                        let _ = t.join();
                    }
                })
                .await;
                tracing::info!("drained; bye");
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                return Ok(());
            }
            _ = hup.recv() => reload(&config_path, &gateways, &accounts, &cfg).await,
        }
    }
}

async fn reload(path: &Path, gateways: &[Arc<Gateway>], accounts: &Registry, started: &Config) {
    match Config::load_async(path)
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| serve_verifier(&c).map(|()| c))
    {
        Ok(new) => {
            if new.listen.public != started.listen.public
                || new.listen.admin != started.listen.admin
                || new.store != started.store
            {
                tracing::warn!(
                    "SIGHUP: listener and store changes need a restart; they are ignored"
                );
            }
            match &new.account {
                Some(a) => {
                    tracing::info!(idp = %a.idp.metadata.entity_id, certs = a.idp.metadata.signing_certs.len(), rules = a.mapping.rules.len(), "SIGHUP: config reloaded");
                    accounts.apply([Change::Put(Arc::new(a.clone()))]);
                }
                None => {
                    tracing::info!("SIGHUP: config reloaded (no default account)");
                    accounts.apply([Change::Remove(DEFAULT_ID.to_owned())]);
                }
            }
            let new = Arc::new(new);
            for g in gateways {
                g.reload_config(Arc::clone(&new));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the new config is invalid; keeping the old one")
        }
    }
}

/// How often a replica asks the store whether accounts changed.
pub const ACCOUNT_POLL: Duration = Duration::from_secs(1);

/// Sweeps the store's expired short-lived values (the embedded store keeps
/// them until deleted; Redis expires its own): 10,000 looked at every 10 s,
/// more often while a sweep finds work.
pub async fn purge_expired(store: Arc<dyn crate::store::Store>, mut stop: watch::Receiver<bool>) {
    loop {
        let pause = match store.purge_expired(10_000).await {
            Ok(n) if n > 0 => {
                tracing::debug!(purged = n, "expired short-lived values deleted");
                Duration::from_millis(200)
            }
            Ok(_) => Duration::from_secs(10),
            Err(e) => {
                tracing::warn!(error = %e, "cannot sweep expired short-lived values");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Keeps `accounts` in step with the store until stopped: a change made on
/// another replica is served here within [`ACCOUNT_POLL`] plus one read.
pub async fn sync_accounts(
    mut sync: crate::account::manage::Sync,
    store: Arc<dyn crate::store::Store>,
    cfg: Arc<Config>,
    accounts: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    let mut first = !accounts.loaded();
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(ACCOUNT_POLL) => {}
                _ = stop.changed() => return,
            }
        }
        let started = std::time::Instant::now();
        match sync.poll(store.as_ref(), &cfg, &accounts).await {
            Ok(n) if first => {
                first = false;
                tracing::info!(
                    accounts = n,
                    secs = started.elapsed().as_secs_f64(),
                    "stored accounts loaded"
                );
            }
            Ok(n) => {
                if failing {
                    tracing::info!("accounts are in step with the store again");
                    failing = false;
                }
                if n > 0 {
                    tracing::info!(
                        changed = n,
                        version = sync.version(),
                        "accounts changed in the store"
                    );
                }
            }
            Err(e) => {
                // Retried after ACCOUNT_POLL (a store down at start: only
                // the default account serves, `/readyz` says not ready).
                first = false;
                if !failing {
                    tracing::warn!(error = %e, "cannot read account changes; serving the accounts as last read");
                    failing = true;
                }
            }
        }
    }
}

/// Most metadata fetches of stored accounts under way at once.
const METADATA_FETCHES: usize = 8;

/// Re-fetches the metadata of every stored account that names a
/// `metadata_url`, each every `idp.metadata_refresh_secs`, a few at a time;
/// a good copy that differs from the kept one is stored (and so reaches
/// every replica), a failed or unusable fetch keeps the last good copy and
/// holds up no other account.
pub async fn refresh_stored_metadata(
    store: Arc<dyn crate::store::Store>,
    cfg: Arc<Config>,
    accounts: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    use std::collections::HashMap;
    use tokio::time::Instant;
    let mut due: HashMap<(String, String), Instant> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        while running.try_join_next().is_some() {}
        let now = Instant::now();
        let snap = accounts.snapshot();
        let wanted: Vec<(String, String, u64)> = snap
            .stored()
            .filter_map(|a| {
                a.idp
                    .metadata_url
                    .clone()
                    .map(|u| (a.id.clone(), u, a.idp.metadata_refresh_secs))
            })
            .collect();
        // Linear in the accounts: what is no longer wanted is not carried
        // over.
        let mut next_due = HashMap::with_capacity(wanted.len());
        for (id, url, every) in wanted {
            let every = Duration::from_secs(every);
            let key = (id, url);
            let at = due.remove(&key).unwrap_or(now + every);
            if at > now || running.len() >= METADATA_FETCHES {
                next_due.insert(key, at);
                continue;
            }
            next_due.insert(key.clone(), now + every);
            let (id, url) = key;
            let (store, cfg, accounts) =
                (Arc::clone(&store), Arc::clone(&cfg), Arc::clone(&accounts));
            running.spawn(async move {
                let fetched =
                    crate::fetch::get_text(&url, 10 * 1024 * 1024, Duration::from_secs(10)).await;
                match fetched {
                    Ok(text) => match crate::account::manage::store_fetched_metadata(
                        store.as_ref(),
                        &cfg,
                        Some(&accounts),
                        &id,
                        &url,
                        text,
                    )
                    .await
                    {
                        Ok(true) => tracing::info!(account = %id, url = %url, "IdP metadata refreshed"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(account = %id, url = %url, code = e.code(), error = %e, "fetched IdP metadata is unusable; keeping the last good copy"),
                    },
                    Err(e) => tracing::warn!(account = %id, url = %url, error = %e, "IdP metadata refresh failed; keeping the last good copy"),
                }
            });
        }
        due = next_due;
    }
}

/// Re-fetches account `account`'s IdP metadata from `url` every `every`;
/// a good copy replaces the one in force, a failed or unusable fetch keeps
/// the last good copy. A change made to the account while a fetch was under
/// way wins over the fetch (the fetched copy is applied only to the account
/// it was fetched for).
pub async fn refresh_metadata(
    accounts: Arc<Registry>,
    account: String,
    url: String,
    every: Duration,
    allow_rsa_1024: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let Some(current) = accounts.get(&account) else {
            return;
        };
        // The account now names another URL: that one has its own task.
        if current
            .idp
            .metadata_url
            .as_deref()
            .is_some_and(|u| u != url)
        {
            return;
        }
        let fetched = crate::fetch::get_text(&url, 10 * 1024 * 1024, Duration::from_secs(10)).await;
        match fetched.and_then(|t| {
            let md = crate::saml::metadata::IdpMetadata::parse(
                &t,
                current.idp.entity_selector.as_deref(),
            )?;
            md.check_key_sizes(allow_rsa_1024)?;
            Ok(md)
        }) {
            Ok(md) => {
                if accounts
                    .get(&account)
                    .is_none_or(|now| !Arc::ptr_eq(&now, &current))
                {
                    continue;
                }
                let mut next = (*current).clone();
                let certs = md.signing_certs.len();
                next.idp.metadata = md;
                accounts.apply([Change::Put(Arc::new(next))]);
                tracing::info!(account = %account, url = %url, certs, "IdP metadata refreshed");
            }
            Err(e) => {
                tracing::warn!(account = %account, url = %url, error = %e, "IdP metadata refresh failed; keeping the last good copy")
            }
        }
    }
}
