//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and by the
//! regression test that replays their corpus (`tests/it/fuzz_replay.rs`).
//! Not part of the API.

use std::sync::OnceLock;

mod proxy;
pub use proxy::proxy_differential;

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
