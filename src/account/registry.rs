//! The accounts a replica serves, by id and by host name.
//!
//! A [`Registry`] holds the current [`Snapshot`] (immutable: a change builds
//! a new one and swaps it in) and a version counter that every change
//! bumps. The public listener's workers each keep their own copy of the
//! snapshot and take a new one when the version moves, so looking up an
//! account on the request path touches no lock or reference count that
//! another core writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{Account, DEFAULT_ID};

/// The accounts in force at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    version: u64,
    by_id: HashMap<String, Arc<Account>>,
    by_host: HashMap<String, Arc<Account>>,
    /// Associated domain → the accounts listing it (discovery).
    by_domain: HashMap<String, Vec<Arc<Account>>>,
    default: Option<Arc<Account>>,
}

/// A Host header's name as hosts are listed: the port dropped, ASCII
/// lowercase, no trailing dot. IPv6 literals keep their brackets.
pub fn host_name(host: &str) -> std::borrow::Cow<'_, str> {
    let name = if host.starts_with('[') {
        host.find(']').and_then(|i| host.get(..=i)).unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

impl Snapshot {
    /// The account `id` (`default` included).
    pub fn by_id(&self, id: &str) -> Option<&Arc<Account>> {
        if id == DEFAULT_ID {
            return self.default.as_ref();
        }
        self.by_id.get(id)
    }

    /// The account serving `host` (a Host header or `:authority`): the one
    /// listing it, else the default account when there is one.
    pub fn for_host(&self, host: Option<&str>) -> Option<&Arc<Account>> {
        host.and_then(|h| self.by_host.get(host_name(h).as_ref()))
            .or(self.default.as_ref())
    }

    /// The account listing `host` exactly (no fallback to the default).
    pub fn owner_of(&self, host: &str) -> Option<&Arc<Account>> {
        self.by_host.get(host_name(host).as_ref())
    }

    /// The accounts whose associated domains include `domain` (lowercase).
    pub fn by_domain(&self, domain: &str) -> &[Arc<Account>] {
        self.by_domain.get(domain).map_or(&[], Vec::as_slice)
    }

    /// The config file's account, if any.
    pub fn default_account(&self) -> Option<&Arc<Account>> {
        self.default.as_ref()
    }

    /// Every account but the default, in no particular order.
    pub fn stored(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.by_id.values()
    }

    /// How many accounts (the default included).
    pub fn len(&self) -> usize {
        self.by_id.len() + usize::from(self.default.is_some())
    }

    /// No account at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registry version this snapshot was taken at.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn insert(&mut self, account: Arc<Account>) {
        self.remove(&account.id);
        for d in &account.provisioning.associated_domains {
            self.by_domain
                .entry(d.clone())
                .or_default()
                .push(Arc::clone(&account));
        }
        if account.is_default() {
            self.default = Some(account);
            return;
        }
        for h in &account.hosts {
            self.by_host.insert(h.clone(), Arc::clone(&account));
        }
        self.by_id.insert(account.id.clone(), account);
    }

    fn remove(&mut self, id: &str) {
        let old = if id == DEFAULT_ID {
            self.default.take()
        } else {
            self.by_id.get(id).cloned()
        };
        if let Some(old) = &old {
            for d in &old.provisioning.associated_domains {
                if let Some(list) = self.by_domain.get_mut(d) {
                    list.retain(|a| a.id != old.id);
                    if list.is_empty() {
                        self.by_domain.remove(d);
                    }
                }
            }
        }
        if id == DEFAULT_ID {
            return;
        }
        if let Some(old) = self.by_id.remove(id) {
            for h in &old.hosts {
                // Only the host entries that still point at this account: a
                // host moved to another account in the same change stays.
                if self.by_host.get(h).is_some_and(|a| a.id == old.id) {
                    self.by_host.remove(h);
                }
            }
        }
    }
}

/// The accounts of one replica, shared by its listeners.
#[derive(Debug, Default)]
pub struct Registry {
    version: AtomicU64,
    current: RwLock<Arc<Snapshot>>,
    /// The stored accounts have been read once (readiness).
    loaded: std::sync::atomic::AtomicBool,
}

/// One change to the registry.
#[derive(Debug, Clone)]
pub enum Change {
    /// Add or replace an account.
    Put(Arc<Account>),
    /// Remove the account with this id.
    Remove(String),
}

impl Registry {
    /// A registry holding `accounts` (the default among them, if any), and
    /// nothing more to load.
    pub fn new(accounts: impl IntoIterator<Item = Account>) -> Self {
        let r = Self::loading(accounts);
        r.set_loaded();
        r
    }

    /// A registry holding `accounts` while the stored ones are still to be
    /// read (a replica starting: not ready until [`Registry::set_loaded`]).
    pub fn loading(accounts: impl IntoIterator<Item = Account>) -> Self {
        let r = Self::default();
        r.apply(accounts.into_iter().map(|a| Change::Put(Arc::new(a))));
        r
    }

    /// The accounts in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Bumped by every change: a worker whose copy is older takes a new one.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Applies `changes` at once (readers see all of them or none).
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = (**guard).clone();
        for c in changes {
            match c {
                Change::Put(a) => next.insert(a),
                Change::Remove(id) => next.remove(&id),
            }
        }
        next.version = self.version.load(Ordering::Acquire) + 1;
        let v = next.version;
        *guard = Arc::new(next);
        self.version.store(v, Ordering::Release);
    }

    /// Records that the stored accounts have been read once.
    pub fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether the stored accounts have been read once since start: until
    /// then a replica serves only the config file's account (`/readyz`
    /// answers 503).
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The account `id`, as now in force.
    pub fn get(&self, id: &str) -> Option<Arc<Account>> {
        self.snapshot().by_id(id).cloned()
    }
}

/// A worker's own copy of the registry's snapshot, renewed when the
/// registry's version moves.
#[derive(Debug)]
pub struct LocalView {
    registry: Arc<Registry>,
    copy: RwLock<Arc<Snapshot>>,
}

impl LocalView {
    /// A view of `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        let copy = RwLock::new(Arc::new((*registry.snapshot()).clone()));
        Self { registry, copy }
    }

    /// The registry behind this view.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The accounts in force (this worker's copy, renewed when stale).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let want = self.registry.version();
        if let Ok(c) = self.copy.read()
            && c.version == want
        {
            return Arc::clone(&c);
        }
        // A shallow copy: its maps hold the shared accounts, but the copy
        // itself (and its reference count) is this worker's.
        let fresh = Arc::new((*self.registry.snapshot()).clone());
        match self.copy.write() {
            Ok(mut c) => *c = Arc::clone(&fresh),
            Err(p) => *p.into_inner() = Arc::clone(&fresh),
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_matched_without_port_case_or_trailing_dot() {
        for (h, want) in [
            ("acme.example.com", "acme.example.com"),
            ("Acme.Example.COM:8443", "acme.example.com"),
            ("acme.example.com.", "acme.example.com"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(host_name(h), want, "{h}");
        }
    }
}
