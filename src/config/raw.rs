//! The config file as written: serde structs that refuse unknown keys.
//! [`super::Config::from_raw`] turns them into typed values.

use serde::Deserialize;

pub use crate::account::raw::{RawField, RawMapping, RawRule, RawTransform, RawTransformTable};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<RawListen>,
    pub sp: Option<RawSp>,
    pub idp: Option<RawIdp>,
    pub security: Option<RawSecurity>,
    pub mapping: Option<RawMapping>,
    pub provisioning: Option<RawProvisioning>,
    pub store: Option<RawStore>,
    pub upstream: Option<RawUpstream>,
    pub admin: Option<RawAdmin>,
    pub session: Option<RawSession>,
    pub demo: Option<RawDemo>,
    pub smtp: Option<RawSmtp>,
    pub accounts: Option<RawAccounts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounts {
    pub metrics_label: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
    pub tls: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub lifetime_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub recheck_secs: Option<u64>,
    pub cookie_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub enabled: Option<bool>,
    pub serve_upstream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub public: Option<String>,
    pub admin: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub drain_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub tls_handshake_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
    pub h2_max_streams: Option<u32>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSp {
    pub entity_id: Option<String>,
    pub acs_url: Option<String>,
    /// PEM private key: decrypts EncryptedAssertion (and signs AuthnRequests).
    pub key_file: Option<String>,
    /// PEM certificate matching `key_file`, published in SP metadata.
    pub cert_file: Option<String>,
    pub path_prefix: Option<String>,
    pub sign_authn_requests: Option<bool>,
    pub request_ttl_secs: Option<u64>,
    pub require_request_cookie: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdp {
    pub metadata_file: Option<String>,
    pub metadata_url: Option<String>,
    /// Selects one IdP when the metadata holds several.
    pub entity_id: Option<String>,
    pub allow_idp_initiated: Option<bool>,
    pub metadata_refresh_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub clock_skew_secs: Option<i64>,
    pub max_issue_delay_secs: Option<i64>,
    pub max_response_bytes: Option<usize>,
    pub insecure_allow_sha1: Option<bool>,
    pub allow_international_email: Option<bool>,
    pub allow_cbc_encryption: Option<bool>,
    pub insecure_allow_rsa_1024: Option<bool>,
    pub verifier: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    pub mode: Option<String>,
    pub associated_domains: Option<Vec<String>>,
    pub update_on_login: Option<Vec<String>>,
    pub verification_ttl_secs: Option<u64>,
    pub outbox_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub nodes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub identity_header_prefix: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub signed_header_key: Option<String>,
    pub timeout_secs: Option<u64>,
    pub fast_path: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub tokens: Option<Vec<String>>,
}
