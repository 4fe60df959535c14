//! Accounts: one customer company's SSO settings (its SP identity, its IdP,
//! its attribute mapping, its provisioning mode and associated domains, its
//! session lifetimes), as a value the request path carries from the Host
//! header through verify → map → provision → session → proxy.
//!
//! The config file's `[sp]`, `[idp]`, `[mapping]`, `[provisioning]` and
//! `[session]` sections are the account `default`; every other account is a
//! document in the store, shared by all replicas.

pub mod doc;
pub mod manage;
pub mod parse;
#[allow(missing_docs)] // field-by-field docs live in docs/config.md and the README
pub mod raw;
pub mod registry;

use openssl::pkey::{PKey, Private};

use crate::mapping::Mapping;
use crate::saml::metadata::IdpMetadata;

/// The id of the config file's account.
pub const DEFAULT_ID: &str = "default";

/// Whether an account's users may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Serving.
    Active,
    /// Logins refused (`account_suspended`), sessions end within
    /// `session.recheck_secs`; its users and settings are kept.
    Suspended,
}

/// One account: everything a login on one of its hosts is decided by.
#[derive(Debug, Clone)]
pub struct Account {
    /// `^[a-z][a-z0-9-]{1,39}$`; `default` for the config file's.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Host names (lowercase, no port) whose requests are this account's.
    pub hosts: Vec<String>,
    /// Active or suspended.
    pub status: AccountStatus,
    /// This SP as the account's IdP knows it.
    pub sp: Sp,
    /// The account's IdP.
    pub idp: Idp,
    /// Attribute mapping.
    pub mapping: Mapping,
    /// Provisioning mode and associated domains.
    pub provisioning: Provisioning,
    /// Session lifetimes.
    pub session: SessionLifetimes,
}

impl Account {
    /// Whether this is the config file's account.
    pub fn is_default(&self) -> bool {
        self.id == DEFAULT_ID
    }

    /// Whether its users may sign in.
    pub fn is_active(&self) -> bool {
        self.status == AccountStatus::Active
    }

    /// `key` in this account's part of a shared key space (outstanding
    /// request ids, the replay cache): the default account's keys are
    /// unprefixed, as they were before accounts existed, so a rolling
    /// upgrade loses no outstanding request and forgets no replay; another
    /// account's are `{id}:{key}` (an id has no `:`, so no two accounts'
    /// keys can meet).
    pub fn scoped<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        if self.is_default() {
            key.into()
        } else {
            format!("{}:{key}", self.id).into()
        }
    }
}

/// How long the account's sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetimes {
    /// Absolute lifetime, seconds (default 8 h; capped by SessionNotOnOrAfter).
    pub lifetime_secs: u64,
    /// Idle timeout, seconds (default 1 h).
    pub idle_timeout_secs: u64,
}

/// This service provider.
#[derive(Debug, Clone)]
pub struct Sp {
    /// SP entity id (the expected Audience).
    pub entity_id: String,
    /// Assertion Consumer Service URL (expected Destination and Recipient).
    pub acs_url: String,
    /// Private key for decrypting assertions.
    pub key: Option<PKey<Private>>,
    /// Certificate (PEM) published in SP metadata.
    pub cert_pem: Option<String>,
    /// Sign AuthnRequests (default: when a key is configured).
    pub sign_authn_requests: bool,
    /// How long an AuthnRequest id stays outstanding (default 600 s).
    pub request_ttl_secs: u64,
    /// Refuse a solicited response whose POST arrives without the
    /// browser-binding cookie `/saml/login` set (default false: such a
    /// response is admitted when its signed InResponseTo names an
    /// outstanding request, as before the cookie existed).
    pub require_request_cookie: bool,
}

/// The identity provider.
#[derive(Debug, Clone)]
pub struct Idp {
    /// Parsed metadata.
    pub metadata: IdpMetadata,
    /// Where it came from.
    pub metadata_source: String,
    /// Accept unsolicited responses (no InResponseTo).
    pub allow_idp_initiated: bool,
    /// Where the metadata is fetched from and refreshed, if anywhere.
    pub metadata_url: Option<String>,
    /// Refresh interval for `metadata_url`, seconds (default 3600).
    pub metadata_refresh_secs: u64,
    /// `[idp] entity_id`: selects one IdP in a multi-entity metadata file.
    pub entity_selector: Option<String>,
}

/// Provisioning mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisioningMode {
    /// Create or update users at login.
    Jit,
    /// Only users created ahead of time may sign in.
    PriorToSignIn,
}

/// Provisioning settings.
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// Mode.
    pub mode: ProvisioningMode,
    /// Email domains whose new users are active at once (lowercase).
    pub associated_domains: Vec<String>,
    /// Mapped fields an existing user's login updates (the email never changes).
    pub update_on_login: Vec<String>,
}
