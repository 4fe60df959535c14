//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and by the
//! regression test that replays their corpus (`tests/it/fuzz_replay.rs`).
//! Not part of the API.

use std::sync::OnceLock;

use crate::check::check_response;
use crate::clock::FixedClock;
use crate::config::Config;
use crate::mapping::{Mapping, MappingInput, SamlAttribute};
use crate::saml::metadata::IdpMetadata;

fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
            Config::load(&dir.join("config.toml")).ok()
        })
        .as_ref()
}

/// Runs the whole check on `data` with the fixture config and clock.
pub fn saml_response(data: &[u8]) {
    let Some(cfg) = config() else { return };
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:30Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let _ = check_response(
        data,
        cfg,
        &["_4f1c3b9e2a7d4e6f8a9b0c1d2e3f4a5b".into()],
        &FixedClock(at),
    );
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
    let _ = Mapping::default().apply(&input, &mut Vec::new());
}
