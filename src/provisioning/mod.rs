//! Provisioning: who may come in. The login decision (JIT or
//! prior-to-sign-in), the shared rules for new records (status from the
//! associated domains, vanity names, verification emails), and CSV import.

pub mod csv;

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;

use crate::account::{Account, ProvisioningMode};
use crate::config::Config;
use crate::mapping::{License, MappedUser};
use crate::store::{Ephemeral, Store, StoreError, UserRecord, UserSource, UserStatus};

/// Why a login is refused at the provisioning step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `prior_to_sign_in` and the user does not exist.
    #[error("{0} has not been provisioned; ask your administrator to create your account")]
    NotProvisioned(String),
    /// The account is deactivated.
    #[error("the account {0} is deactivated")]
    Deactivated(String),
    /// The account waits for email verification.
    #[error("the account {0} waits for email verification: follow the link sent to that address")]
    PendingVerification(String),
    /// The email belongs to another account of this gateway.
    #[error("{0} belongs to another account of this gateway; sign in through that account")]
    WrongAccount(String),
    /// A new user whose email domain another account lists as associated
    /// (and this one does not): that account's people sign in through it.
    #[error(
        "{0}: its domain belongs to another account of this gateway; sign in through that account"
    )]
    DomainOfOtherAccount(String),
    /// The store cannot be reached: fail closed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Refusal {
    /// The email the refusal is about, when it names one.
    pub fn email(&self) -> Option<&str> {
        match self {
            Self::NotProvisioned(e)
            | Self::Deactivated(e)
            | Self::PendingVerification(e)
            | Self::WrongAccount(e)
            | Self::DomainOfOtherAccount(e) => Some(e),
            Self::Store(_) => None,
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotProvisioned(_) => "not_provisioned",
            Self::Deactivated(_) => "deactivated",
            Self::PendingVerification(_) => "pending_verification",
            Self::WrongAccount(_) | Self::DomainOfOtherAccount(_) => "wrong_account",
            Self::Store(e) => e.code(),
        }
    }
}

/// What the decision did (or, read-only, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new user was created.
    Created,
    /// Mapped fields of an existing user changed.
    Updated,
    /// The existing user was admitted as is.
    Unchanged,
    /// Read-only: a user would be created.
    WouldCreate,
    /// Read-only: the existing user would be updated.
    WouldUpdate,
}

/// A login that may proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The user as stored (or as it would be stored).
    pub user: UserRecord,
    /// What happened.
    pub action: Action,
}

/// Whether `email`'s domain is an associated domain.
pub fn in_associated_domain(email: &str, account: &Account) -> bool {
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    account.provisioning.associated_domains.contains(&domain)
}

/// Who lists which associated domains, across the gateway's accounts.
pub trait DomainOwners: Send + Sync {
    /// Whether an account other than `account` lists `domain` (lowercase)
    /// as associated.
    fn listed_by_other(&self, domain: &str, account: &str) -> bool;
}

impl DomainOwners for crate::account::registry::Snapshot {
    fn listed_by_other(&self, domain: &str, account: &str) -> bool {
        self.by_domain(domain).iter().any(|a| a.id != account)
    }
}

/// A gateway of one account: no other account lists any domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOtherAccounts;

impl DomainOwners for NoOtherAccounts {
    fn listed_by_other(&self, _domain: &str, _account: &str) -> bool {
        false
    }
}

/// Associated domain → the ids of the accounts listing it.
impl DomainOwners for std::collections::HashMap<String, Vec<String>> {
    fn listed_by_other(&self, domain: &str, account: &str) -> bool {
        self.get(domain)
            .is_some_and(|ids| ids.iter().any(|id| id != account))
    }
}

/// Whether a new user `email` of `account` must be refused because its
/// domain is another account's associated domain, which `account` does not
/// also list. Without this an account's IdP could assert (or its admin
/// create) addresses of another company's domain and so take the rightful
/// account's people: the first account to create a user owns the email.
/// Existing users are not affected.
pub fn domain_of_other_account(owners: &dyn DomainOwners, account: &Account, email: &str) -> bool {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    !account.provisioning.associated_domains.contains(&domain)
        && owners.listed_by_other(&domain, &account.id)
}

/// A vanity name is 5-40 characters, starts with a letter, and has only
/// lowercase letters, digits and periods.
pub fn valid_vanity(name: &str) -> bool {
    (5..=40).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
}

/// The preferred vanity name for an email: its local part, lowercased, when valid.
pub fn vanity_candidate(email: &str) -> Option<String> {
    let local = email.split('@').next()?.to_ascii_lowercase();
    valid_vanity(&local).then_some(local)
}

/// A random valid vanity name (`m` + 11 letters/digits).
pub fn random_vanity() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut s = String::from("m");
    for _ in 0..11 {
        let i = rng.random_range(0..ALPHABET.len());
        s.push(char::from(ALPHABET.get(i).copied().unwrap_or(b'x')));
    }
    s
}

/// Claims vanity names for `users` (licensed ones without one), in one batch
/// per round: the local part first, random names for collisions. Sets
/// `user.vanity` on success.
pub async fn assign_vanities(
    store: &dyn Store,
    users: &mut [UserRecord],
) -> Result<(), StoreError> {
    let mut wanted: Vec<(usize, String)> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.license == License::Licensed && u.vanity.is_none())
        .map(|(i, u)| (i, vanity_candidate(&u.email).unwrap_or_else(random_vanity)))
        .collect();
    for _round in 0..6 {
        if wanted.is_empty() {
            return Ok(());
        }
        let claims: Vec<(String, String)> = wanted
            .iter()
            .filter_map(|(i, name)| users.get(*i).map(|u| (name.clone(), u.email.clone())))
            .collect();
        let won = store.claim_vanities(&claims).await?;
        let mut retry = Vec::new();
        for ((i, name), ok) in wanted.into_iter().zip(won) {
            if ok {
                if let Some(u) = users.get_mut(i) {
                    u.vanity = Some(name);
                }
            } else {
                retry.push((i, random_vanity()));
            }
        }
        wanted = retry;
    }
    // 36^11 names: six straight collisions mean something else is wrong.
    Err(StoreError::Unavailable(
        "could not claim a free vanity name".into(),
    ))
}

/// Gives back vanity name `name`, claimed for `email` by an insert that
/// lost (the email exists already) — unless the existing record of that
/// email holds it: a claim is keyed by email, so the loser's claim of the
/// local-part name may be the winner's own.
pub async fn give_back_vanity(
    store: &dyn Store,
    name: &str,
    email: &str,
    winner: Option<&UserRecord>,
) -> Result<(), StoreError> {
    if winner.is_some_and(|w| w.vanity.as_deref() == Some(name)) {
        return Ok(());
    }
    store.release_vanity(name, email).await
}

/// Builds a new record of `account` for `email` from a source, with the
/// status the account's associated domains give it.
pub fn new_record(
    email: &str,
    source: UserSource,
    license: License,
    account: &Account,
    now: DateTime<Utc>,
) -> UserRecord {
    let status = if in_associated_domain(email, account) {
        UserStatus::Active
    } else {
        UserStatus::PendingVerification
    };
    let ts = now.to_rfc3339();
    UserRecord {
        email: email.to_ascii_lowercase(),
        account: account.id.clone(),
        first_name: String::new(),
        last_name: String::new(),
        department: String::new(),
        groups: Vec::new(),
        license,
        features: Vec::new(),
        sso_only: true,
        status,
        vanity: None,
        source,
        created_at: ts.clone(),
        updated_at: ts,
        scim: None,
    }
}

/// Creates a verification token for `email` (stored hashed, single use)
/// and mails the link (SMTP, or a file in the outbox). Returns the link. A
/// mail failure is logged, not fatal: the user's next login sends a new link.
pub async fn send_verification(
    store: &dyn Store,
    cfg: &Config,
    account: &Account,
    email: &str,
) -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    rand::rng().fill(&mut raw);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    let hash = token_hash(&token);
    let ttl = Duration::from_secs(cfg.provisioning.verification_ttl_secs);
    store
        .put_ephemeral(Ephemeral::VerificationToken, &hash, email.as_bytes(), ttl)
        .await?;
    // Remember that a link went out, so logins resend at most every 10 minutes.
    store
        .put_ephemeral(
            Ephemeral::VerificationToken,
            &format!("sent:{email}"),
            b"",
            Duration::from_secs(600),
        )
        .await?;
    // The link goes out once the token (and the user, written behind by a
    // login) is durable.
    store.flush().await?;
    let origin = origin_of(&account.sp.acs_url);
    let link = format!("{origin}{}/verify?token={token}", cfg.path_prefix);
    let body = format!(
        "Your meetings account {email} was created. Open this link to verify your address\n\
         and activate it (valid for {} hours, usable once):\n\n{link}\n",
        cfg.provisioning.verification_ttl_secs / 3600
    );
    let stem = format!("{}-{}", hash.get(..16).unwrap_or(&hash), sanitize(email));
    if let Err(e) = crate::mail::send(cfg, email, "Verify your email address", &body, &stem).await {
        tracing::error!(error = %e, code = e.code(), "verification email not sent");
    }
    Ok(link)
}

/// Resends a verification link to a pending user unless one went out in the
/// last 10 minutes.
async fn maybe_resend(
    store: &dyn Store,
    cfg: &Config,
    account: &Account,
    email: &str,
) -> Result<(), StoreError> {
    if store
        .get_ephemeral(Ephemeral::VerificationToken, &format!("sent:{email}"))
        .await?
        .is_none()
    {
        send_verification(store, cfg, account, email).await?;
    }
    Ok(())
}

/// Consumes a verification token: activates the user. `None` when the token
/// is unknown, used or expired.
pub async fn verify_token(
    store: &dyn Store,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<UserRecord>, StoreError> {
    let Some(email) = store
        .take_ephemeral(Ephemeral::VerificationToken, &token_hash(token))
        .await?
    else {
        return Ok(None);
    };
    let email = String::from_utf8_lossy(&email).into_owned();
    let Some(mut user) = store.get_user(&email).await? else {
        return Ok(None);
    };
    if user.status == UserStatus::PendingVerification {
        user.status = UserStatus::Active;
        user.updated_at = now.to_rfc3339();
        store.put_users(std::slice::from_ref(&user)).await?;
    }
    Ok(Some(user))
}

/// SHA-256 hex of a token (tokens are stored hashed).
pub fn token_hash(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = openssl::sha::sha256(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

fn sanitize(email: &str) -> String {
    email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '@' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url.get(after_scheme..).and_then(|rest| rest.find('/')) {
        Some(i) => url.get(..after_scheme + i).unwrap_or(url).to_owned(),
        None => url.to_owned(),
    }
}

/// `mapped` with what the account's rules make of the user's directory
/// (SCIM) groups: they feed the rules at every login as they did when they
/// were pushed (a license a rule over the assertion set stays first).
fn with_directory_groups(mapped: &MappedUser, groups: &[String], account: &Account) -> MappedUser {
    let mut m = mapped.clone();
    let outcome = account.mapping.directory_outcome(groups);
    if !m.license_by_rule
        && let Some(l) = outcome.license
    {
        m.license = l;
        m.license_by_rule = true;
    }
    for g in groups.iter().chain(outcome.groups.iter()) {
        if !m.groups.contains(g) {
            m.groups.push(g.clone());
        }
    }
    for f in &outcome.features {
        if !m.features.contains(f) {
            m.features.push(f.clone());
        }
    }
    m
}

/// Applies the mapped fields listed in `provisioning.update_on_login`;
/// returns whether anything changed. The email never changes.
fn apply_mapped(user: &mut UserRecord, mapped: &MappedUser, account: &Account) -> bool {
    let before = user.clone();
    for field in &account.provisioning.update_on_login {
        match field.as_str() {
            "first_name" => user.first_name.clone_from(&mapped.first_name),
            "last_name" => user.last_name.clone_from(&mapped.last_name),
            "department" => user.department.clone_from(&mapped.department),
            "groups" => user.groups.clone_from(&mapped.groups),
            "license" => user.license = mapped.license,
            "features" => user.features.clone_from(&mapped.features),
            _ => {}
        }
    }
    *user != before
}

fn check_status(user: &UserRecord) -> Result<(), Refusal> {
    match user.status {
        UserStatus::Active => Ok(()),
        UserStatus::Deactivated => Err(Refusal::Deactivated(user.email.clone())),
        UserStatus::PendingVerification => Err(Refusal::PendingVerification(user.email.clone())),
    }
}

/// The login decision on `account`, shared by the ACS and `check-response`
/// (read-only: `write = false` stores nothing and reports what would
/// happen). A user of another account is refused (`wrong_account`) and
/// left untouched; so is a newcomer whose domain another account lists
/// as associated (`owners`, see [`domain_of_other_account`]).
pub async fn decide(
    store: &dyn Store,
    cfg: &Config,
    account: &Account,
    owners: &dyn DomainOwners,
    mapped: &MappedUser,
    now: DateTime<Utc>,
    write: bool,
) -> Result<Admission, Refusal> {
    decide_then(store, cfg, account, owners, mapped, now, write, None, None)
        .await
        .map(|(a, _)| a)
}

/// [`decide`] with the user's record already read (`read`: Some(None) when
/// there is none), as the ACS reads it with its replay entry; and when a
/// new user is created, `then`'s keys (its first session) in the same store
/// write where the store has one ([`Store::insert_user_claiming_then`]).
/// Also answers whether they were written (else the caller writes the
/// session itself).
#[allow(clippy::too_many_arguments)]
pub async fn decide_then(
    store: &dyn Store,
    cfg: &Config,
    account: &Account,
    owners: &dyn DomainOwners,
    mapped: &MappedUser,
    now: DateTime<Utc>,
    write: bool,
    mut read: Option<Option<UserRecord>>,
    then: Option<crate::store::KeysOf>,
) -> Result<(Admission, bool), Refusal> {
    // Already canonical (`crate::email`); lowercased again for callers
    // that built the mapped user themselves.
    let email = mapped.email.to_ascii_lowercase();
    // Two passes at most: a concurrent first login may create the user
    // between our read and our insert; then we continue as an update.
    for _ in 0..2 {
        let existing = match read.take() {
            Some(r) => r,
            None => store.get_user(&email).await?,
        };
        if let Some(mut user) = existing {
            if user.account != account.id {
                return Err(Refusal::WrongAccount(email));
            }
            if write && user.status == UserStatus::PendingVerification {
                maybe_resend(store, cfg, account, &email).await?;
            }
            check_status(&user)?;
            let merged;
            let mapped = match user.scim.as_ref().filter(|s| !s.groups.is_empty()) {
                Some(s) => {
                    merged = with_directory_groups(mapped, &s.groups, account);
                    &merged
                }
                None => mapped,
            };
            let changed = apply_mapped(&mut user, mapped, account);
            if !changed {
                return Ok((
                    Admission {
                        user,
                        action: Action::Unchanged,
                    },
                    false,
                ));
            }
            user.updated_at = now.to_rfc3339();
            if !write {
                return Ok((
                    Admission {
                        user,
                        action: Action::WouldUpdate,
                    },
                    false,
                ));
            }
            if user.license == License::Licensed && user.vanity.is_none() {
                assign_vanities(store, std::slice::from_mut(&mut user)).await?;
            }
            store.put_users(std::slice::from_ref(&user)).await?;
            return Ok((
                Admission {
                    user,
                    action: Action::Updated,
                },
                false,
            ));
        }
        if domain_of_other_account(owners, account, &email) {
            return Err(Refusal::DomainOfOtherAccount(email));
        }
        if account.provisioning.mode == ProvisioningMode::PriorToSignIn {
            return Err(Refusal::NotProvisioned(email));
        }
        let mut user = new_record(&email, UserSource::Jit, mapped.license, account, now);
        user.first_name.clone_from(&mapped.first_name);
        user.last_name.clone_from(&mapped.last_name);
        user.department.clone_from(&mapped.department);
        user.groups.clone_from(&mapped.groups);
        user.features.clone_from(&mapped.features);
        if !write {
            check_status(&user)?;
            return Ok((
                Admission {
                    user,
                    action: Action::WouldCreate,
                },
                false,
            ));
        }
        // One atomic write where the store has it (embedded): the claim and
        // the insert together, nothing to give back when the email exists.
        let names: Vec<String> = if user.license == License::Licensed && user.vanity.is_none() {
            std::iter::once(vanity_candidate(&email).unwrap_or_else(random_vanity))
                .chain(std::iter::repeat_with(random_vanity))
                .take(6)
                .collect()
        } else {
            Vec::new()
        };
        // With the first session where the store writes both at once.
        let mut with_keys = false;
        let claimed = {
            let one_write = match then.as_ref().and_then(|t| {
                store.insert_user_claiming_then(&user, &names, std::sync::Arc::clone(t))
            }) {
                Some(insert) => {
                    with_keys = true;
                    Some(insert)
                }
                None => store.insert_user_claiming(&user, &names),
            };
            match one_write {
                Some(insert) => Some(insert.await?),
                None => None,
            }
        };
        let inserted = if let Some(claimed) = claimed {
            match claimed {
                Some(created) => {
                    user = created;
                    true
                }
                // Lost the race: read the winner's record on the next pass.
                None => continue,
            }
        } else {
            assign_vanities(store, std::slice::from_mut(&mut user)).await?;
            store
                .insert_users(std::slice::from_ref(&user))
                .await?
                .first()
                == Some(&true)
        };
        if inserted {
            if user.status == UserStatus::PendingVerification {
                send_verification(store, cfg, account, &email).await?;
            }
            check_status(&user)?;
            return Ok((
                Admission {
                    user,
                    action: Action::Created,
                },
                with_keys,
            ));
        }
        // Lost the race: give back the vanity name (unless the winner holds
        // it) and read the winner's record on the next pass.
        if let Some(name) = &user.vanity {
            let winner = store.get_user(&email).await?;
            give_back_vanity(store, name, &email, winner.as_ref()).await?;
        }
    }
    Err(Refusal::Store(StoreError::Unavailable(format!(
        "user {email} changed concurrently; try again"
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanity_rules() {
        assert_eq!(
            vanity_candidate("Alice.Smith@x.org").as_deref(),
            Some("alice.smith")
        );
        assert_eq!(vanity_candidate("bob@x.org"), None, "too short");
        assert_eq!(
            vanity_candidate("1alice@x.org"),
            None,
            "starts with a digit"
        );
        assert_eq!(vanity_candidate("alice_smith@x.org"), None, "underscore");
        assert_eq!(
            vanity_candidate(&format!("{}@x.org", "a".repeat(41))),
            None,
            "too long"
        );
        for _ in 0..100 {
            assert!(valid_vanity(&random_vanity()));
        }
    }

    #[test]
    fn origin() {
        assert_eq!(
            origin_of("https://meet.example.com/saml/acs"),
            "https://meet.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/saml/acs"),
            "http://127.0.0.1:8080"
        );
    }
}
