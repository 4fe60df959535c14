//! Configuration: the TOML file is parsed once, at start-up, into typed
//! values. Unknown keys are refused; every problem names its key path and all
//! problems are reported together, so one `samlgate config check` run shows
//! everything to fix.

#[allow(missing_docs)] // field-by-field docs live in docs/config.md
pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::account::parse::{self, Problems};
use crate::account::{Account, AccountStatus, DEFAULT_ID};
use crate::saml::metadata::IdpMetadata;
use raw::RawConfig;

pub use crate::account::parse::ConfigProblem;
pub use crate::account::{Idp, Provisioning, ProvisioningMode, SessionLifetimes, Sp};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("config {path}: {message}")]
    Syntax {
        /// The path.
        path: PathBuf,
        /// The parser's message (names the line and the key).
        message: String,
    },
    /// One or more values are invalid.
    #[error("config {}: {} problem(s):\n{}", path.display(), problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The path.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// Stable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Read { .. } => "config_unreadable",
            Self::Syntax { .. } => "config_syntax",
            Self::Invalid { .. } => "config_invalid",
        }
    }
}

/// Listener addresses.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// TLS certificate chain (PEM), if TLS is on.
    pub tls_cert: Option<PathBuf>,
    /// TLS key (PEM), if TLS is on.
    pub tls_key: Option<PathBuf>,
    /// How long SIGTERM waits for in-flight requests (default 10 s).
    pub drain_secs: u64,
    /// Connection limits and timeouts of both listeners.
    pub limits: ConnLimits,
}

/// Bounds on the connections a listener keeps (`[listen]` keys of the same
/// names). Each is a defence against a client that holds resources without
/// using them: every one has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once per listener (default 10,000); at the
    /// cap the listener stops accepting until one closes.
    pub max_connections: usize,
    /// A connection with no request in flight is closed after this long
    /// (default 60 s), whatever it sends meanwhile (HTTP/2 PINGs and
    /// SETTINGS, a bare preface, nothing at all).
    pub idle_timeout_secs: u64,
    /// A request head must arrive whole within this (default 30 s).
    pub header_timeout_secs: u64,
    /// A TLS handshake must finish within this (default 10 s).
    pub tls_handshake_timeout_secs: u64,
    /// A write to a client that makes no progress for this long ends the
    /// connection (default 60 s): a client that stops reading an answer
    /// does not hold its upstream connection.
    pub write_timeout_secs: u64,
    /// Most concurrent streams on one HTTP/2 connection (default 32): each
    /// may hold an upstream connection.
    pub h2_max_streams: u32,
    /// Largest declared request body (`Content-Length`; default 1 GiB). A
    /// chunked upload streams through to the upstream unbuffered: its size
    /// is the platform's to bound.
    pub max_body_bytes: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout_secs: 60,
            header_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            write_timeout_secs: 60,
            h2_max_streams: 32,
            max_body_bytes: 1 << 30,
        }
    }
}

/// How SMTP is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS on a plain connection (port 587), the default.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only for a relay on the same host or a test server.
    None,
}

/// SMTP settings.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Port (587 STARTTLS, 465 TLS, 25 none by default).
    pub port: u16,
    /// Login, if any.
    pub username: Option<String>,
    /// Password (`SAMLGATE_SMTP_PASSWORD` overrides).
    pub password: Option<String>,
    /// From address.
    pub from: String,
    /// Transport security.
    pub tls: SmtpTls,
}

/// Sessions, as every account's are handled (each account has its own
/// lifetimes: [`SessionLifetimes`]).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How often a session re-reads its user (deactivation takes effect within this), default 5 s.
    pub recheck_secs: u64,
    /// Cookie name (`__Host-` is added over TLS).
    pub cookie_name: String,
}

/// Identity headers sent upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL of the meeting platform.
    pub url: String,
    /// Header name per identity field (email, first_name, last_name,
    /// department, groups, license, vanity).
    pub headers: Vec<(String, String)>,
    /// The same names, parsed once.
    pub header_names: Vec<(String, http::HeaderName)>,
    /// Client headers whose normalised name (lowercase letters and digits,
    /// separators dropped) is one of these, or starts with `strip_prefix`,
    /// are removed. (Only the configured names outside the prefix.)
    pub strip_names: Vec<String>,
    /// Normalised identity header prefix.
    pub strip_prefix: String,
    /// Client-supplied headers starting with this (normalised) are stripped.
    pub identity_header_prefix: String,
    /// Peers whose X-Forwarded-For is trusted (exact IPs).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// HMAC key for the signed identity header, if any.
    pub signed_header_key: Option<String>,
    /// Upstream response timeout, seconds (default 60).
    pub timeout_secs: u64,
    /// Plain HTTP/1.1 requests of signed-in users take the purpose-built
    /// forwarding path (default true); false sends everything through the
    /// general HTTP stack (`src/gateway/fast.rs`).
    pub fast_path: bool,
}

impl UpstreamConfig {
    /// The upstream's `host[:port]` (what the proxy connects to and sends as
    /// Host) and its base path without a trailing slash (empty for the
    /// root; proxied paths go under it). `url` was checked at load to be
    /// `http://host[:port][/base]`.
    pub fn target(&self) -> (&str, &str) {
        let rest = self.url.strip_prefix("http://").unwrap_or(&self.url);
        let (authority, base) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        (authority, base.trim_end_matches('/'))
    }
}

/// Security knobs, all with safe defaults.
#[derive(Debug, Clone, Copy)]
pub struct Security {
    /// Allowed clock difference with the IdP, seconds (default 180).
    pub clock_skew_secs: i64,
    /// Oldest IssueInstant accepted, seconds before now (default 90), on top of the skew.
    pub max_issue_delay_secs: i64,
    /// Largest decoded XML accepted, bytes (default 512 KiB).
    pub max_response_bytes: usize,
    /// Accept SHA-1 signatures and digests (default false).
    pub insecure_allow_sha1: bool,
    /// Accept email addresses with non-ASCII characters (kept as written,
    /// never case-folded; default false: refused as `email_not_ascii`).
    pub allow_international_email: bool,
    /// Accept AES-CBC content encryption of an EncryptedAssertion, and then
    /// only under a Response signature (default false: AES-GCM only).
    pub allow_cbc_encryption: bool,
    /// Accept IdP signing keys of RSA under 2048 bits (default false).
    pub insecure_allow_rsa_1024: bool,
    /// Which XML-DSig implementation verifies signatures.
    pub verifier: VerifierKind,
}

/// `security.verifier`: the XML-DSig implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifierKind {
    /// Exclusive c14n on the parsed document + openssl (`"native"`, the default).
    #[default]
    Native,
    /// libxmlsec1 through samael, verify then reduce (`"libxmlsec1"`).
    Libxmlsec1,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            clock_skew_secs: 180,
            max_issue_delay_secs: 90,
            max_response_bytes: 512 * 1024,
            insecure_allow_sha1: false,
            allow_international_email: false,
            allow_cbc_encryption: false,
            insecure_allow_rsa_1024: false,
            verifier: VerifierKind::default(),
        }
    }
}

/// Which store backs users, sessions and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Embedded on-disk store.
    Embedded {
        /// Database file.
        path: PathBuf,
    },
    /// Redis standalone or cluster.
    Redis {
        /// Standalone URL.
        url: Option<String>,
        /// Cluster node URLs.
        nodes: Vec<String>,
    },
}

/// The `[provisioning]` keys that hold for every account: how new users
/// of a domain not associated with their account verify their address.
#[derive(Debug, Clone)]
pub struct GatewayProvisioning {
    /// How long a verification link works, seconds (default 72 h).
    pub verification_ttl_secs: u64,
    /// Where verification emails are written when no SMTP is configured.
    pub outbox_dir: PathBuf,
}

/// `[accounts]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountsConfig {
    /// Count login decisions per account too
    /// (`samlgate_account_logins_total{account,...}`; default true): one
    /// series per account and code, which a fleet of very many accounts
    /// may turn off.
    pub metrics_label: bool,
}

/// The typed configuration: what belongs to the gateway, and the config
/// file's account (`default`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners.
    pub listen: Listen,
    /// Where the SAML endpoints live on every account's hosts (`[sp]
    /// path_prefix`, default `/saml`).
    pub path_prefix: String,
    /// Security knobs.
    pub security: Security,
    /// Verification mail of every account.
    pub provisioning: GatewayProvisioning,
    /// Store.
    pub store: StoreConfig,
    /// Upstream and identity headers.
    pub upstream: UpstreamConfig,
    /// Sessions.
    pub session: SessionConfig,
    /// Demo mode: the test-only development IdP.
    pub demo: bool,
    /// Demo mode also serves the demo upstream page on `upstream.url`.
    pub demo_upstream: bool,
    /// SMTP; `None` writes mail to the outbox folder.
    pub smtp: Option<SmtpConfig>,
    /// Admin bearer tokens (config plus `SAMLGATE_ADMIN_TOKENS`).
    pub admin_tokens: Vec<String>,
    /// `[accounts]`: how the gateway treats its many accounts.
    pub accounts: AccountsConfig,
    /// The account `default`, from `[sp]`, `[idp]`, `[mapping]`,
    /// `[provisioning]` and `[session]`; `None` without `[idp]` (a gateway
    /// whose accounts all live in the store).
    pub account: Option<Account>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &base, &|k| std::env::var(k).ok()).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_owned(),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            },
            other => other,
        })
    }

    /// Reads a config file and, when `idp.metadata_url` is set, fetches the
    /// metadata (falling back to `idp.metadata_file` when the fetch fails).
    pub async fn load_async(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let url = toml::from_str::<RawConfig>(&text)
            .ok()
            .and_then(|r| r.idp)
            .and_then(|i| i.metadata_url);
        let fetched = match url {
            Some(u) => Some(
                crate::fetch::get_text(&u, 10 * 1024 * 1024, std::time::Duration::from_secs(10))
                    .await
                    .map(|t| (t, u)),
            ),
            None => None,
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml_fetched(&text, &base, &|k| std::env::var(k).ok(), fetched).map_err(|e| {
            match e {
                ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                    path: path.to_owned(),
                    message,
                },
                ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                    path: path.to_owned(),
                    problems,
                },
                other => other,
            }
        })
    }

    /// Parses config text. Relative file paths are tried against the working
    /// directory first, then `base` (the config file's folder). `env` reads
    /// environment variables (injected so tests need not touch the process).
    pub fn from_toml(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_fetched(text, base, env, None)
    }

    /// [`Config::from_toml`] with the result of fetching `idp.metadata_url`
    /// (text and URL, or the fetch error).
    pub fn from_toml_fetched(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        fetched: Option<Result<(String, String), String>>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut p = Problems::default();
        let cfg = Self::from_raw(raw, base, env, fetched, &mut p);
        match cfg {
            Some(c) if p.0.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                path: PathBuf::new(),
                problems: p.0,
            }),
        }
    }

    fn from_raw(
        raw: RawConfig,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        fetched: Option<Result<(String, String), String>>,
        p: &mut Problems,
    ) -> Option<Self> {
        let resolve = |s: &str| -> PathBuf {
            let direct = PathBuf::from(s);
            if direct.is_absolute() || direct.exists() {
                direct
            } else {
                base.join(s)
            }
        };

        // [listen]
        let l = raw.listen.unwrap_or_default();
        let addr = |p: &mut Problems, v: Option<String>, key: &str, default: &str| {
            let s = v.unwrap_or_else(|| default.to_owned());
            match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    p.add(key, format!("{s:?} is not an address:port ({e})"));
                    None
                }
            }
        };
        let public = addr(p, l.public, "listen.public", "0.0.0.0:8080");
        let admin = addr(p, l.admin, "listen.admin", "127.0.0.1:9090");
        if l.tls_cert.is_some() != l.tls_key.is_some() {
            p.add(
                "listen.tls_cert",
                "tls_cert and tls_key must be set together",
            );
        }
        let limits = {
            let d = ConnLimits::default();
            let mut secs = |v: Option<u64>, key: &str, default: u64| {
                let v = v.unwrap_or(default);
                if !(1..=86_400).contains(&v) {
                    p.add(key, "must be between 1 and 86400 seconds");
                }
                v
            };
            let limits = ConnLimits {
                max_connections: l.max_connections.unwrap_or(d.max_connections),
                idle_timeout_secs: secs(
                    l.idle_timeout_secs,
                    "listen.idle_timeout_secs",
                    d.idle_timeout_secs,
                ),
                header_timeout_secs: secs(
                    l.header_timeout_secs,
                    "listen.header_timeout_secs",
                    d.header_timeout_secs,
                ),
                tls_handshake_timeout_secs: secs(
                    l.tls_handshake_timeout_secs,
                    "listen.tls_handshake_timeout_secs",
                    d.tls_handshake_timeout_secs,
                ),
                write_timeout_secs: secs(
                    l.write_timeout_secs,
                    "listen.write_timeout_secs",
                    d.write_timeout_secs,
                ),
                h2_max_streams: l.h2_max_streams.unwrap_or(d.h2_max_streams),
                max_body_bytes: l.max_body_bytes.unwrap_or(d.max_body_bytes),
            };
            if !(1..=1_000_000).contains(&limits.max_connections) {
                p.add("listen.max_connections", "must be between 1 and 1000000");
            }
            if !(1..=1000).contains(&limits.h2_max_streams) {
                p.add("listen.h2_max_streams", "must be between 1 and 1000");
            }
            if limits.max_body_bytes == 0 {
                p.add("listen.max_body_bytes", "must be at least 1");
            }
            limits
        };
        if let (Some(a), Some(b)) = (public, admin)
            && a == b
        {
            p.add(
                "listen.admin",
                "must differ from listen.public: the admin API is never public",
            );
        }

        // [sp] path_prefix: where every account's SAML endpoints live.
        let raw_sp = raw.sp.unwrap_or_default();
        let path_prefix = raw_sp.path_prefix.clone().unwrap_or_else(|| "/saml".into());
        if !path_prefix.starts_with('/') || path_prefix.ends_with('/') || path_prefix.len() < 2 {
            p.add(
                "sp.path_prefix",
                "must start with '/' and not end with one, e.g. \"/saml\"",
            );
        }

        // [security]
        let s = raw.security.unwrap_or_default();
        let d = Security::default();
        let security = Security {
            clock_skew_secs: s.clock_skew_secs.unwrap_or(d.clock_skew_secs),
            max_issue_delay_secs: s.max_issue_delay_secs.unwrap_or(d.max_issue_delay_secs),
            max_response_bytes: s.max_response_bytes.unwrap_or(d.max_response_bytes),
            insecure_allow_sha1: s.insecure_allow_sha1.unwrap_or(false),
            allow_international_email: s.allow_international_email.unwrap_or(false),
            allow_cbc_encryption: s.allow_cbc_encryption.unwrap_or(false),
            insecure_allow_rsa_1024: s.insecure_allow_rsa_1024.unwrap_or(false),
            verifier: match s.verifier.as_deref() {
                None => d.verifier,
                Some("native") => VerifierKind::Native,
                Some("libxmlsec1") => VerifierKind::Libxmlsec1,
                Some(other) => {
                    p.add(
                        "security.verifier",
                        format!("{other:?} is not one of \"native\", \"libxmlsec1\""),
                    );
                    d.verifier
                }
            },
        };
        if !(0..=3600).contains(&security.clock_skew_secs) {
            p.add("security.clock_skew_secs", "must be between 0 and 3600");
        }
        if !(1..=86_400).contains(&security.max_issue_delay_secs) {
            p.add(
                "security.max_issue_delay_secs",
                "must be between 1 and 86400",
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&security.max_response_bytes) {
            p.add(
                "security.max_response_bytes",
                "must be between 1024 and 16777216",
            );
        }

        // [provisioning]: the keys of every account (the others are the
        // default account's, below).
        let pr = raw.provisioning.unwrap_or_default();
        let verification_ttl_secs = pr.verification_ttl_secs.unwrap_or(72 * 3600);
        if !(60..=30 * 86_400).contains(&verification_ttl_secs) {
            p.add(
                "provisioning.verification_ttl_secs",
                "must be between 60 and 2592000",
            );
        }
        let outbox_dir = PathBuf::from(
            pr.outbox_dir
                .clone()
                .unwrap_or_else(|| "data/outbox".into()),
        );

        // [store]
        let st = raw.store.unwrap_or_default();
        let store = match st.kind.as_deref().unwrap_or("embedded") {
            "embedded" => StoreConfig::Embedded {
                path: PathBuf::from(st.path.unwrap_or_else(|| "data/samlgate.db".into())),
            },
            "redis" => {
                let nodes = st.nodes.unwrap_or_default();
                if st.url.is_none() && nodes.is_empty() {
                    p.add(
                        "store.url",
                        "store.kind = \"redis\" needs store.url or store.nodes",
                    );
                }
                StoreConfig::Redis { url: st.url, nodes }
            }
            other => {
                p.add(
                    "store.kind",
                    format!("{other:?} is not \"embedded\" or \"redis\""),
                );
                StoreConfig::Embedded {
                    path: PathBuf::from("data/samlgate.db"),
                }
            }
        };

        // [upstream]
        let up = raw.upstream.unwrap_or_default();
        let upstream_url = up.url.unwrap_or_else(|| "http://127.0.0.1:3000".into());
        if !upstream_url.starts_with("http://") {
            p.add(
                "upstream.url",
                format!("{upstream_url:?} must be an http:// URL (the upstream sits on a trusted network)"),
            );
        }
        match upstream_url.parse::<http::Uri>() {
            Ok(u)
                if u.authority().is_some()
                    && u.query().is_none()
                    && u.scheme_str() == Some("http")
                    // No userinfo (`http://user@host`: it would become the
                    // Host header and the connect target) and no fragment.
                    && !upstream_url.contains(['@', '#']) => {}
            _ => p.add(
                "upstream.url",
                format!("{upstream_url:?} is not a URL of the form http://host[:port][/base] (no user, query or fragment)"),
            ),
        }
        let prefix = up
            .identity_header_prefix
            .unwrap_or_else(|| "X-Samlgate-".into());
        if prefix.len() < 3
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            p.add(
                "upstream.identity_header_prefix",
                "must be 3+ characters of letters, digits and '-'",
            );
        }
        const FIELDS: &[(&str, &str)] = &[
            ("email", "Email"),
            ("first_name", "First-Name"),
            ("last_name", "Last-Name"),
            ("department", "Department"),
            ("groups", "Groups"),
            ("license", "License"),
            ("vanity", "Vanity"),
            ("account", "Account"),
        ];
        let overrides = up.headers.unwrap_or_default();
        for k in overrides.keys() {
            if !FIELDS.iter().any(|(f, _)| f == k) {
                p.add(
                    format!("upstream.headers.{k}"),
                    "unknown identity field (email, first_name, last_name, department, groups, license, vanity, account)",
                );
            }
        }
        let mut headers = Vec::new();
        for (field, suffix) in FIELDS {
            let name = overrides
                .get(*field)
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{suffix}"));
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.add(
                    format!("upstream.headers.{field}"),
                    format!("{name:?} is not a header name"),
                );
            }
            headers.push(((*field).to_owned(), name));
        }
        let mut trusted_proxies = Vec::new();
        for (i, t) in up.trusted_proxies.unwrap_or_default().iter().enumerate() {
            match t.parse() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => p.add(
                    format!("upstream.trusted_proxies[{i}]"),
                    format!("{t:?} is not an IP address"),
                ),
            }
        }
        let signed_header_key = up
            .signed_header_key
            .or_else(|| env("SAMLGATE_SIGNED_HEADER_KEY"));
        if signed_header_key.as_ref().is_some_and(|k| k.len() < 32) {
            p.add(
                "upstream.signed_header_key",
                "must be at least 32 characters",
            );
        }
        // Identity names as the proxy compares them (`gateway::proxy`):
        // lowercase letters and digits, separators dropped.
        let normalise = |n: &str| -> String {
            n.bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| char::from(b.to_ascii_lowercase()))
                .collect()
        };
        let header_names = headers
            .iter()
            .filter_map(|(f, n)| {
                http::HeaderName::from_bytes(n.as_bytes())
                    .ok()
                    .map(|h| (f.clone(), h))
            })
            .collect();
        let strip_prefix = normalise(&prefix);
        // Names under the prefix are stripped by it already: only the others
        // need a comparison of their own (none with the default names).
        let strip_names = headers
            .iter()
            .map(|(_, n)| normalise(n))
            .filter(|n| !n.starts_with(strip_prefix.as_str()))
            .collect();
        let upstream = UpstreamConfig {
            url: upstream_url.trim_end_matches('/').to_owned(),
            headers,
            header_names,
            strip_names,
            strip_prefix,
            identity_header_prefix: prefix,
            trusted_proxies,
            signed_header_key,
            timeout_secs: up.timeout_secs.unwrap_or(60),
            fast_path: up.fast_path.unwrap_or(true),
        };

        // [session]
        let se = raw.session.unwrap_or_default();
        let session = SessionConfig {
            recheck_secs: se.recheck_secs.unwrap_or(5),
            cookie_name: se.cookie_name.unwrap_or_else(|| "samlgate_session".into()),
        };
        if !(1..=300).contains(&session.recheck_secs) {
            p.add("session.recheck_secs", "must be between 1 and 300");
        }
        if session.cookie_name.is_empty()
            || !session
                .cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            p.add("session.cookie_name", "letters, digits, '_' and '-' only");
        }
        let demo_raw = raw.demo.unwrap_or_default();
        let demo = demo_raw.enabled.unwrap_or(false);
        let demo_upstream = demo && demo_raw.serve_upstream.unwrap_or(true);

        // [smtp]
        let smtp = raw.smtp.and_then(|m| {
            let tls = match m.tls.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpTls::Starttls,
                "tls" => SmtpTls::Tls,
                "none" => SmtpTls::None,
                other => {
                    p.add(
                        "smtp.tls",
                        format!("{other:?} is not starttls, tls or none"),
                    );
                    SmtpTls::Starttls
                }
            };
            let host = p.required(m.host.filter(|h| !h.is_empty()), "smtp.host")?;
            let from = p.required(m.from.filter(|f| f.contains('@')), "smtp.from")?;
            let default_port = match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            };
            Some(SmtpConfig {
                host,
                port: m.port.unwrap_or(default_port),
                username: m.username,
                password: env("SAMLGATE_SMTP_PASSWORD").or(m.password),
                from,
                tls,
            })
        });

        // [admin]
        let mut admin_tokens: Vec<String> = raw.admin.and_then(|a| a.tokens).unwrap_or_default();
        if let Some(envt) = env("SAMLGATE_ADMIN_TOKENS") {
            admin_tokens.extend(
                envt.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            );
        }
        for (i, t) in admin_tokens.iter().enumerate() {
            if t.len() < 16 {
                p.add(
                    format!("admin.tokens[{i}]"),
                    "tokens must be at least 16 characters",
                );
            }
        }

        let account = match raw.idp {
            Some(raw_idp) => Self::default_account(
                raw_sp,
                raw_idp,
                raw.mapping.unwrap_or_default(),
                pr,
                (se.lifetime_secs, se.idle_timeout_secs),
                &security,
                &resolve,
                fetched,
                p,
            ),
            None => {
                if raw_sp.entity_id.is_some() || raw_sp.acs_url.is_some() {
                    p.add(
                        "idp",
                        "[sp] describes the default account, which needs [idp] (metadata_file or metadata_url); without [idp] every account lives in the store",
                    );
                }
                None
            }
        };
        Some(Self {
            listen: Listen {
                public: public?,
                admin: admin?,
                tls_cert: l.tls_cert.map(|s| resolve(&s)),
                tls_key: l.tls_key.map(|s| resolve(&s)),
                drain_secs: l.drain_secs.unwrap_or(10),
                limits,
            },
            path_prefix,
            security,
            provisioning: GatewayProvisioning {
                verification_ttl_secs,
                outbox_dir,
            },
            store,
            upstream,
            session,
            demo,
            demo_upstream,
            smtp,
            admin_tokens,
            accounts: AccountsConfig {
                metrics_label: raw
                    .accounts
                    .as_ref()
                    .and_then(|a| a.metrics_label)
                    .unwrap_or(true),
            },
            account,
        })
    }

    /// The account `default` from the config file's sections.
    #[allow(clippy::too_many_arguments)]
    fn default_account(
        sp: raw::RawSp,
        idp: raw::RawIdp,
        mapping: raw::RawMapping,
        pr: raw::RawProvisioning,
        (lifetime, idle): (Option<u64>, Option<u64>),
        security: &Security,
        resolve: &dyn Fn(&str) -> PathBuf,
        fetched: Option<Result<(String, String), String>>,
        p: &mut Problems,
    ) -> Option<Account> {
        let (entity_id, acs_url) = parse::sp_urls(sp.entity_id.clone(), sp.acs_url.clone(), p);
        let (key, cert_pem) =
            parse::sp_key_and_cert(sp.key_file.as_deref(), sp.cert_file.as_deref(), resolve, p);

        if sp.sign_authn_requests == Some(true) && sp.key_file.is_none() {
            p.add("sp.sign_authn_requests", "needs sp.key_file");
        }
        let from_file = |p: &mut Problems, f: &str| {
            let path = resolve(f);
            match std::fs::read_to_string(&path) {
                Ok(text) => match IdpMetadata::parse(&text, idp.entity_id.as_deref()) {
                    Ok(m) => Some((m, path.display().to_string())),
                    Err(e) => {
                        p.add("idp.metadata_file", format!("{}: {e}", path.display()));
                        None
                    }
                },
                Err(e) => {
                    p.add("idp.metadata_file", format!("{}: {e}", path.display()));
                    None
                }
            }
        };
        let metadata = match (&idp.metadata_file, &idp.metadata_url, fetched) {
            (_, Some(_), Some(Ok((text, url)))) => {
                match IdpMetadata::parse(&text, idp.entity_id.as_deref()) {
                    Ok(m) => Some((m, url)),
                    Err(e) => match &idp.metadata_file {
                        Some(f) => {
                            tracing::warn!(url = %url, error = %e, "fetched IdP metadata is unusable; using idp.metadata_file");
                            from_file(p, f)
                        }
                        None => {
                            p.add("idp.metadata_url", format!("{url}: {e}"));
                            None
                        }
                    },
                }
            }
            (Some(f), Some(url), Some(Err(e))) => {
                tracing::warn!(url = %url, error = %e, "cannot fetch IdP metadata; using idp.metadata_file");
                from_file(p, f)
            }
            (None, Some(_), Some(Err(e))) => {
                p.add("idp.metadata_url", e);
                None
            }
            (Some(f), _, _) => from_file(p, f),
            (None, Some(u), None) => {
                p.add("idp.metadata_url", format!("{u} is fetched by serve, check-response and config check; this caller did not fetch it"));
                None
            }
            (None, None, _) => {
                p.add("idp.metadata_file", "is required (or idp.metadata_url)");
                None
            }
        };
        let metadata_refresh_secs =
            parse::idp_refresh(idp.metadata_url.as_deref(), idp.metadata_refresh_secs, p);
        let mapping = parse::mapping_from_raw(mapping, p);
        let provisioning =
            parse::provisioning(pr.mode, pr.associated_domains, pr.update_on_login, p);
        let session = parse::lifetimes(lifetime, idle, p);
        if let Some((m, source)) = &metadata
            && let Err(e) = m.check_key_sizes(security.insecure_allow_rsa_1024)
        {
            let key = if idp.metadata_url.is_some() {
                "idp.metadata_url"
            } else {
                "idp.metadata_file"
            };
            p.add(key, format!("{source}: {e}"));
        }
        let (metadata, metadata_source) = metadata?;
        Some(Account {
            id: DEFAULT_ID.to_owned(),
            name: String::new(),
            hosts: Vec::new(),
            status: AccountStatus::Active,
            sp: Sp {
                entity_id: entity_id?,
                acs_url: acs_url?,
                sign_authn_requests: sp.sign_authn_requests.unwrap_or(key.is_some()),
                key,
                cert_pem,
                request_ttl_secs: sp.request_ttl_secs.unwrap_or(600),
                require_request_cookie: sp.require_request_cookie.unwrap_or(false),
            },
            idp: Idp {
                metadata,
                metadata_source,
                allow_idp_initiated: idp.allow_idp_initiated.unwrap_or(true),
                metadata_url: idp.metadata_url.clone(),
                metadata_refresh_secs,
                entity_selector: idp.entity_id.clone(),
            },
            mapping,
            provisioning,
            session,
        })
    }
}
