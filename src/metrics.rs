//! Prometheus metrics, served on the admin listener. Labels stay
//! low-cardinality: outcome and refusal code, status class; never a user,
//! a path or an id.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Latency bucket bounds, seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Counters written on the request path are kept in this many shards, each
/// thread writing one (its own cache lines while there are no more threads
/// than shards), and summed when rendered.
const SHARDS: usize = 4;

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// One shard of a histogram, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HistogramShard {
    counts: [AtomicU64; 14],
    sum_micros: AtomicU64,
}

/// A cumulative histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    shards: [HistogramShard; SHARDS],
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let Some(s) = self.shards.get(shard()) else {
            return;
        };
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = s.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        s.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn count(&self, i: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.counts.get(i).map_or(0, |c| c.load(Ordering::Relaxed)))
            .sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.count(i);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.count(BUCKETS.len());
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let micros: u64 = self
            .shards
            .iter()
            .map(|s| s.sum_micros.load(Ordering::Relaxed))
            .sum();
        let sum = micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
    }
}

/// One shard of the proxied-requests counters, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ProxiedShard([AtomicU64; 6]);

/// Every metric the gateway keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    logins: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The same decisions per account (unless `[accounts] metrics_label =
    /// false`: a fleet of very many accounts may not want a series each).
    account_logins: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    no_account_label: std::sync::atomic::AtomicBool,
    /// Proxied responses by status class: index 1..=5 for 1xx..5xx.
    proxied: [ProxiedShard; SHARDS],
    store_errors: AtomicU64,
    authn_requests: AtomicU64,
    /// Requests refused for their head (`gateway::head`), by code.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// SCIM requests by method and status.
    scim: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// SCIM authentication failures by reason.
    scim_auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Time spent verifying a SAMLResponse.
    pub verify_latency: Histogram,
    /// Upstream response time (headers received).
    pub upstream_latency: Histogram,
}

impl Metrics {
    /// Counts a login decision (`outcome` accept/reject, `code` "" on accept).
    pub fn login(&self, outcome: &'static str, code: &'static str) {
        if let Ok(mut m) = self.logins.lock() {
            *m.entry((outcome, code)).or_default() += 1;
        }
    }

    /// Counts a login decision on `account` (in both families).
    pub fn account_login(&self, account: &str, outcome: &'static str, code: &'static str) {
        self.login(outcome, code);
        if self.no_account_label.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut m) = self.account_logins.lock() {
            match m.get_mut(&(account.to_owned(), outcome, code)) {
                Some(n) => *n += 1,
                None => {
                    m.insert((account.to_owned(), outcome, code), 1);
                }
            }
        }
    }

    /// Whether login decisions are also counted per account (default on).
    pub fn set_account_label(&self, on: bool) {
        self.no_account_label.store(!on, Ordering::Relaxed);
    }

    /// Counts a proxied request by status class (2, 3, 4, 5).
    pub fn proxied(&self, status: u16) {
        if let Some(c) = self
            .proxied
            .get(shard())
            .and_then(|s| s.0.get(usize::from(status / 100)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request refused for its head (`code` as answered).
    pub fn request_refused(&self, code: &'static str) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// Counts a SCIM request by method and answer status.
    pub fn scim(&self, method: &'static str, status: u16) {
        if let Ok(mut m) = self.scim.lock() {
            *m.entry((method, status)).or_default() += 1;
        }
    }

    /// Counts a failed SCIM authentication (`missing`, `unknown`,
    /// `other_account`, `scope`, `rate_limited`).
    pub fn scim_auth_failure(&self, reason: &'static str) {
        if let Ok(mut m) = self.scim_auth_failures.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Counts an AuthnRequest sent to the IdP (a login started here).
    pub fn authn_request(&self) {
        self.authn_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a store error.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP samlgate_logins_total Login decisions by outcome and refusal code.\n# TYPE samlgate_logins_total counter\n");
        if let Ok(m) = self.logins.lock() {
            for ((outcome, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "samlgate_logins_total{{outcome=\"{outcome}\",code=\"{code}\"}} {n}"
                );
            }
        }
        if !self.no_account_label.load(Ordering::Relaxed) {
            out.push_str("# HELP samlgate_account_logins_total Login decisions per account, by outcome and refusal code.\n# TYPE samlgate_account_logins_total counter\n");
            if let Ok(m) = self.account_logins.lock() {
                for ((account, outcome, code), n) in m.iter() {
                    let _ = writeln!(
                        out,
                        "samlgate_account_logins_total{{account=\"{account}\",outcome=\"{outcome}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP samlgate_authn_requests_total AuthnRequests sent to the IdP (logins started).\n# TYPE samlgate_authn_requests_total counter\nsamlgate_authn_requests_total {}",
            self.authn_requests.load(Ordering::Relaxed)
        );
        out.push_str("# HELP samlgate_proxied_requests_total Requests proxied upstream by status class.\n# TYPE samlgate_proxied_requests_total counter\n");
        for class in 1..6 {
            let n: u64 = self
                .proxied
                .iter()
                .map(|s| s.0.get(class).map_or(0, |c| c.load(Ordering::Relaxed)))
                .sum();
            if n > 0 {
                let _ = writeln!(
                    out,
                    "samlgate_proxied_requests_total{{status=\"{class}xx\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP samlgate_store_errors_total Store operations that failed.\n# TYPE samlgate_store_errors_total counter\nsamlgate_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );
        out.push_str("# HELP samlgate_requests_refused_total Requests refused for their head (smuggling attempts, bad Host, CONNECT, oversized bodies) by code.\n# TYPE samlgate_requests_refused_total counter\n");
        if let Ok(m) = self.refused.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "samlgate_requests_refused_total{{code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP samlgate_scim_requests_total SCIM requests by method and status.\n# TYPE samlgate_scim_requests_total counter\n");
        if let Ok(m) = self.scim.lock() {
            for ((method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "samlgate_scim_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP samlgate_scim_auth_failures_total Failed SCIM authentications by reason.\n# TYPE samlgate_scim_auth_failures_total counter\n");
        if let Ok(m) = self.scim_auth_failures.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "samlgate_scim_auth_failures_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        CONNECTIONS.render(&mut out);
        self.verify_latency.render(
            &mut out,
            "samlgate_verify_seconds",
            "Time to verify a SAMLResponse.",
        );
        self.upstream_latency.render(
            &mut out,
            "samlgate_upstream_seconds",
            "Upstream response time (headers).",
        );
        out
    }
}

/// The listeners a connection can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The public listener.
    Public = 0,
    /// The admin listener.
    Admin = 1,
}

impl Listener {
    fn label(i: usize) -> &'static str {
        if i == 0 { "public" } else { "admin" }
    }
}

/// Why a connection was closed by the gateway rather than by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No request in flight for `listen.idle_timeout_secs`.
    Idle = 0,
    /// A request head did not arrive whole within `listen.header_timeout_secs`.
    HeaderTimeout = 1,
    /// The TLS handshake took over `listen.tls_handshake_timeout_secs`.
    HandshakeTimeout = 2,
    /// A write made no progress for `listen.write_timeout_secs`.
    WriteTimeout = 3,
    /// A WebSocket tunnel whose session ended, or that sat idle.
    TunnelEnded = 4,
}

const CLOSE_REASONS: [&str; 5] = [
    "idle",
    "header_timeout",
    "handshake_timeout",
    "write_timeout",
    "tunnel_ended",
];

/// Connection counts of both listeners (process-wide: each listener has
/// its own accept loop, and the admin listener has no gateway).
#[derive(Debug)]
pub struct ConnMetrics {
    open: [AtomicU64; 2],
    accepted: [AtomicU64; 2],
    /// Times a listener sat at `listen.max_connections`, not accepting.
    at_cap: [AtomicU64; 2],
    closed: [[AtomicU64; 5]; 2],
}

/// The process's connection counts.
pub static CONNECTIONS: ConnMetrics = ConnMetrics {
    open: [AtomicU64::new(0), AtomicU64::new(0)],
    accepted: [AtomicU64::new(0), AtomicU64::new(0)],
    at_cap: [AtomicU64::new(0), AtomicU64::new(0)],
    closed: [
        [
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        ],
        [
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        ],
    ],
};

/// Counts one open connection while it lives.
#[derive(Debug)]
pub struct OpenConnection(Listener);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(c) = CONNECTIONS.open.get(self.0 as usize) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ConnMetrics {
    /// Counts an accepted connection; open until the guard drops.
    pub fn accepted(&self, l: Listener) -> OpenConnection {
        if let Some(c) = self.accepted.get(l as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.open.get(l as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        OpenConnection(l)
    }

    /// Counts a wait at the connection cap.
    pub fn at_cap(&self, l: Listener) {
        if let Some(c) = self.at_cap.get(l as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection the gateway closed, and why.
    pub fn closed(&self, l: Listener, why: CloseReason) {
        if let Some(c) = self
            .closed
            .get(l as usize)
            .and_then(|r| r.get(why as usize))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Open connections on `l` now.
    pub fn open(&self, l: Listener) -> u64 {
        self.open
            .get(l as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Connections on `l` closed for `why` so far.
    pub fn closed_count(&self, l: Listener, why: CloseReason) -> u64 {
        self.closed
            .get(l as usize)
            .and_then(|r| r.get(why as usize))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP samlgate_connections_open Connections open now, by listener.\n# TYPE samlgate_connections_open gauge\n");
        for (i, c) in self.open.iter().enumerate() {
            let _ = writeln!(
                out,
                "samlgate_connections_open{{listener=\"{}\"}} {}",
                Listener::label(i),
                load(c)
            );
        }
        out.push_str("# HELP samlgate_connections_accepted_total Connections accepted, by listener.\n# TYPE samlgate_connections_accepted_total counter\n");
        for (i, c) in self.accepted.iter().enumerate() {
            let _ = writeln!(
                out,
                "samlgate_connections_accepted_total{{listener=\"{}\"}} {}",
                Listener::label(i),
                load(c)
            );
        }
        out.push_str("# HELP samlgate_connections_at_cap_total Times a listener reached listen.max_connections and paused accepting.\n# TYPE samlgate_connections_at_cap_total counter\n");
        for (i, c) in self.at_cap.iter().enumerate() {
            let _ = writeln!(
                out,
                "samlgate_connections_at_cap_total{{listener=\"{}\"}} {}",
                Listener::label(i),
                load(c)
            );
        }
        out.push_str("# HELP samlgate_connections_closed_total Connections the gateway closed, by listener and reason.\n# TYPE samlgate_connections_closed_total counter\n");
        for (i, row) in self.closed.iter().enumerate() {
            for (why, c) in CLOSE_REASONS.iter().zip(row.iter()) {
                let _ = writeln!(
                    out,
                    "samlgate_connections_closed_total{{listener=\"{}\",reason=\"{why}\"}} {}",
                    Listener::label(i),
                    load(c)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_text() {
        let m = Metrics::default();
        m.login("accept", "");
        m.account_login("acme", "reject", "wrong_account");
        m.login("reject", "signature_invalid");
        m.login("reject", "signature_invalid");
        m.proxied(200);
        m.proxied(502);
        m.store_error();
        m.authn_request();
        m.verify_latency.observe(Duration::from_micros(700));
        let text = m.render();
        for line in [
            "samlgate_logins_total{outcome=\"accept\",code=\"\"} 1",
            "samlgate_logins_total{outcome=\"reject\",code=\"signature_invalid\"} 2",
            "samlgate_logins_total{outcome=\"reject\",code=\"wrong_account\"} 1",
            "samlgate_account_logins_total{account=\"acme\",outcome=\"reject\",code=\"wrong_account\"} 1",
            "samlgate_proxied_requests_total{status=\"2xx\"} 1",
            "samlgate_proxied_requests_total{status=\"5xx\"} 1",
            "samlgate_store_errors_total 1",
            "samlgate_authn_requests_total 1",
            "samlgate_verify_seconds_bucket{le=\"0.0005\"} 0",
            "samlgate_verify_seconds_bucket{le=\"0.001\"} 1",
            "samlgate_verify_seconds_bucket{le=\"+Inf\"} 1",
            "samlgate_verify_seconds_count 1",
            "samlgate_upstream_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn the_per_account_family_can_be_turned_off() {
        let m = Metrics::default();
        m.set_account_label(false);
        m.account_login("acme", "accept", "");
        let text = m.render();
        assert!(text.contains("samlgate_logins_total{outcome=\"accept\",code=\"\"} 1"));
        assert!(!text.contains("samlgate_account_logins_total"), "{text}");
    }
}
