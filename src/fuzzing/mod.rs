//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and by the
//! regression test that replays their corpus (`tests/it/fuzz_replay.rs`).
//! Not part of the API.

use std::sync::OnceLock;

mod proxy;
pub use proxy::{fast_head, proxy_differential};

/// A small deterministic generator (xorshift64*) for the campaign driver
/// and the tests' pseudo-random sweeps.
pub struct Rng(u64);

impl Rng {
    /// Seeded (a zero seed is made odd: xorshift never leaves zero).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

use crate::check::check_response;
use crate::clock::FixedClock;
use crate::config::{Config, VerifierKind};
use crate::mapping::{Mapping, MappingInput, SamlAttribute};
use crate::saml::metadata::IdpMetadata;

/// The fixture config with each verifier: `(native, libxmlsec1)`.
fn configs() -> Option<&'static (Config, Config)> {
    static CONFIGS: OnceLock<Option<(Config, Config)>> = OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
            let mut native = Config::load(&dir.join("config.toml")).ok()?;
            native.security.verifier = VerifierKind::Native;
            let mut oracle = native.clone();
            oracle.security.verifier = VerifierKind::Libxmlsec1;
            Some((native, oracle))
        })
        .as_ref()
}

fn check(data: &[u8], cfg: &Config) -> crate::check::Report {
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:30Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    check_response(
        data,
        cfg,
        &["_4f1c3b9e2a7d4e6f8a9b0c1d2e3f4a5b".into()],
        &FixedClock(at),
    )
}

/// Runs the whole check on `data` with the fixture config (each verifier)
/// and clock.
pub fn saml_response(data: &[u8]) {
    let Some((native, oracle)) = configs() else {
        return;
    };
    let _ = check(data, native);
    let _ = check(data, oracle);
}

/// The differential target: both verifiers on `data`. Returns a description
/// of the disagreement when one accepts what the other refuses (the fuzz
/// target panics on it; a native accept of what libxmlsec1 refuses is the
/// failure that matters most).
pub fn verifier_differential(data: &[u8]) -> Option<String> {
    let (native, oracle) = configs()?;
    let n = check(data, native);
    let o = check(data, oracle);
    (n.code.is_none() != o.code.is_none()).then(|| {
        format!(
            "native {:?} {:?} vs libxmlsec1 {:?} {:?}",
            n.code, n.reason, o.code, o.reason
        )
    })
}

/// Parses metadata text.
pub fn metadata(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = IdpMetadata::parse(s, None);
    }
}

/// Splits `data` into attributes (`name=value` lines) and maps them.
pub fn mapping(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let name_id = lines.next();
    let attributes: Vec<SamlAttribute> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| SamlAttribute {
            name: n.to_owned(),
            friendly_name: None,
            name_format: None,
            values: v.split('|').map(str::to_owned).collect(),
        })
        .collect();
    let input = MappingInput {
        name_id,
        attributes: &attributes,
    };
    let _ = Mapping::default().apply(&input, &mut crate::mapping::Trace::collecting());
}

/// The admin API's JSON bodies: the first byte picks the body (an
/// `ssoCreate`, a user PATCH, an account document, an account document
/// merge-patched by a second one after a NUL), the rest is the JSON. Panics
/// when an accepted body breaks a promise the handlers rely on: a created
/// user's email not canonical, a name, list or text over its limit.
pub fn admin_json(data: &[u8]) {
    use crate::admin::body;
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let Ok(req) = serde_json::from_slice::<body::CreateRequest>(json) else {
                return;
            };
            if let Ok(u) = body::new_user(req, kind & 0x80 != 0) {
                assert_eq!(
                    crate::email::canonical(&u.email, true).as_deref(),
                    Ok(u.email.as_str()),
                    "an accepted email is canonical"
                );
                for n in [&u.first_name, &u.last_name] {
                    assert!(
                        n.chars().count() <= body::MAX_NAME && !n.chars().any(char::is_control)
                    );
                }
            }
        }
        1 => {
            let Ok(req) = serde_json::from_slice::<body::PatchRequest>(json) else {
                return;
            };
            let mut u = fuzz_user();
            if body::apply_patch(req, &mut u).is_ok() {
                assert!(u.groups.len() <= body::MAX_GROUPS);
                assert!(u.features.len() <= body::MAX_FEATURES);
                assert!(u.department.chars().count() <= body::MAX_DEPARTMENT);
                for g in &u.groups {
                    assert!(!g.is_empty() && g.chars().count() <= body::MAX_GROUP);
                }
                for f in &u.features {
                    assert!(!f.is_empty() && f.chars().count() <= body::MAX_FEATURE);
                }
                // What was accepted serialises and reads back alike.
                let text = serde_json::to_vec(&u).unwrap_or_default();
                let back: Option<crate::store::UserRecord> = serde_json::from_slice(&text).ok();
                assert_eq!(back.as_ref(), Some(&u), "a patched record round-trips");
            }
        }
        k => {
            let (first, patch) = match json.iter().position(|&b| b == 0) {
                Some(i) if k == 3 => (json.get(..i).unwrap_or(json), json.get(i + 1..)),
                _ => (json, None),
            };
            let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(first) else {
                return;
            };
            if let Some(p) = patch.and_then(|p| serde_json::from_slice(p).ok()) {
                crate::account::doc::merge_patch(&mut doc, &p);
            }
            // Paths in a document name files on the gateway's machine: the
            // target builds only documents that name none.
            let text = doc.to_string();
            if text.contains("_file") {
                return;
            }
            let _ = crate::account::doc::build(
                "acme",
                &doc,
                &crate::config::Security::default(),
                "/saml",
                crate::account::doc::Fetched::Cached(None),
            );
        }
    }
}

fn fuzz_user() -> crate::store::UserRecord {
    crate::store::UserRecord {
        email: "bob@example.com".into(),
        account: crate::account::DEFAULT_ID.into(),
        first_name: "Bob".into(),
        last_name: String::new(),
        department: String::new(),
        groups: Vec::new(),
        license: crate::mapping::License::Basic,
        features: Vec::new(),
        sso_only: true,
        status: crate::store::UserStatus::Active,
        vanity: None,
        source: crate::store::UserSource::Api,
        created_at: String::new(),
        updated_at: String::new(),
        scim: None,
    }
}

/// The CSV import on `data` as a file (dry run against an empty embedded
/// store): never panics, and its report adds up (every row read is
/// counted once: created, skipped, updated or an error). The users it
/// would create.
pub fn csv_import(data: &[u8]) -> u64 {
    let Some(h) = csv_harness() else {
        return 0;
    };
    let opts = crate::provisioning::csv::ImportOptions {
        dry_run: true,
        batch_size: 7,
        ..Default::default()
    };
    let Some(account) = h.cfg.account.as_ref() else {
        return 0;
    };
    let owners = crate::provisioning::NoOtherAccounts;
    let report = h.rt.block_on(crate::provisioning::csv::import(
        h.store.as_ref(),
        &h.cfg,
        account,
        &owners,
        data,
        &opts,
        chrono::DateTime::UNIX_EPOCH,
        &mut |_| {},
    ));
    if let Ok(r) = report {
        assert!(
            r.interrupted.is_none(),
            "an empty embedded store never fails"
        );
        assert_eq!(
            r.created + r.skipped + r.updated + r.error_count,
            r.rows
                + u64::try_from(
                    r.errors
                        .iter()
                        .filter(|e| e.reason.starts_with("unreadable row"))
                        .count()
                )
                .unwrap_or(0),
            "every row counted once: {r:?}"
        );
        return r.created;
    }
    0
}

struct CsvHarness {
    rt: tokio::runtime::Runtime,
    cfg: Config,
    store: std::sync::Arc<dyn crate::store::Store>,
    _dir: tempfile::TempDir,
}

fn csv_harness() -> Option<&'static CsvHarness> {
    static H: OnceLock<Option<CsvHarness>> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let dir = tempfile::tempdir().ok()?;
        let (cfg, _) = configs()?.clone();
        let clock: std::sync::Arc<dyn crate::clock::Clock> =
            std::sync::Arc::new(crate::clock::SystemClock);
        let store =
            crate::store::embedded::EmbeddedStore::open(&dir.path().join("s.db"), clock).ok()?;
        Some(CsvHarness {
            rt,
            cfg,
            store: std::sync::Arc::new(store),
            _dir: dir,
        })
    })
    .as_ref()
}
