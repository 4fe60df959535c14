//! Real `redis-server` processes for the tests: a standalone server and a
//! 3-master cluster on loopback, each killed when dropped. `scripts/test.sh`
//! may start shared ones and pass them in `SAMLGATE_TEST_REDIS_URL` /
//! `SAMLGATE_TEST_REDIS_CLUSTER`; without those the tests start their own.
#![allow(clippy::disallowed_methods)] // thread::sleep while polling a child process

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port for a cluster node. Redis Cluster listens on the port plus
/// 10,000 for its bus, so the port must be at most 55,535 (the kernel's
/// ephemeral range here reaches 60,999) and both must be free. Picked below
/// the ephemeral range so an outgoing connection cannot take it meanwhile.
pub fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let p: u16 = rand::random_range(20_000..=30_000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(p) && free(p + 10_000) {
            return p;
        }
    }
    panic!("no free port pair for a cluster node in 20000-40000");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One redis-server child.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::spawn(free_port(), tempfile::tempdir().unwrap(), false)
    }

    fn spawn(port: u16, dir: tempfile::TempDir, cluster: bool) -> Self {
        Self::spawn_with(port, dir, cluster, &[])
    }

    /// [`RedisServer::spawn`] with `extra` arguments.
    fn spawn_with(port: u16, dir: tempfile::TempDir, cluster: bool, extra: &[&str]) -> Self {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        cmd.args(extra);
        let child = cmd
            .spawn()
            .expect("redis-server on PATH (scripts/install-deps.sh installs it)");
        wait_until("redis-server", || ping(port));
        Self {
            child: Some(child),
            port,
            dir,
            cluster,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): a store that stalls instead of failing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(sig)
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let s = Self::spawn(self.port, dir, self.cluster);
        *self = s;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters, no replicas, slots spread by redis-cli.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::spawn(cluster_port(), tempfile::tempdir().unwrap(), true))
            .collect();
        Self::form(nodes, 0)
    }

    /// Makes `nodes` one cluster with `replicas` replicas per master, and
    /// waits until every node says `cluster_state:ok`.
    fn form(nodes: Vec<RedisServer>, replicas: u8) -> Self {
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            let port = n.port.to_string();
            wait_until("cluster_state:ok", || {
                Command::new("redis-cli")
                    .args(["-p", &port, "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Three masters and three replicas that fail over within about a
    /// second (`cluster-node-timeout 1000`); a replica may always be
    /// promoted (`cluster-replica-validity-factor 0`: otherwise, on a loaded
    /// machine, a replica whose last contact with its master looks too old
    /// may refuse; one CI-like run saw no failover within 9 s, cause not
    /// established).
    pub fn start_with_replicas() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::spawn_with(
                    cluster_port(),
                    tempfile::tempdir().unwrap(),
                    true,
                    &[
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let Self { nodes } = Self::form(nodes, 1);
        // Every replica in sync with its master (a replica that has not
        // finished its first sync cannot be promoted).
        wait_until("3 replicas in sync", || {
            nodes
                .iter()
                .filter(|n| {
                    Command::new("redis-cli")
                        .args(["-p", &n.port.to_string(), "info", "replication"])
                        .output()
                        .map(|o| {
                            let t = String::from_utf8_lossy(&o.stdout);
                            t.contains("role:slave")
                                && t.contains("master_link_status:up")
                                && t.contains("master_sync_in_progress:0")
                        })
                        .unwrap_or(false)
                })
                .count()
                == 3
        });
        Self { nodes }
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .unwrap_or_else(|| panic!("no master serves the slot of {key}"))
    }

    /// The port of the master serving `key`'s slot, if one does (none
    /// while a failed master's replica is not yet promoted).
    pub fn try_master_of(&self, key: &str) -> Option<u16> {
        let any = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .unwrap()
            .port
            .to_string();
        let slot: u16 = String::from_utf8_lossy(
            &Command::new("redis-cli")
                .args(["-p", &any, "cluster", "keyslot", key])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .parse()
        .unwrap();
        let nodes = String::from_utf8_lossy(
            &Command::new("redis-cli")
                .args(["-p", &any, "cluster", "nodes"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            for range in &f[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                    && (a..=b).contains(&slot)
                {
                    return Some(port);
                }
            }
        }
        None
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        for n in &mut self.nodes {
            if n.port == port {
                n.stop();
            }
        }
    }
}

/// The shared standalone server's URL, or a private one (kept alive by the guard).
pub fn standalone() -> (String, Option<RedisServer>) {
    match std::env::var("SAMLGATE_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => (u, None),
        _ => {
            let s = RedisServer::start();
            (s.url(), Some(s))
        }
    }
}

/// The shared cluster's node URLs, or a private cluster.
pub fn cluster() -> (Vec<String>, Option<RedisCluster>) {
    match std::env::var("SAMLGATE_TEST_REDIS_CLUSTER") {
        Ok(u) if !u.is_empty() => (u.split(',').map(str::to_owned).collect(), None),
        _ => {
            let c = RedisCluster::start();
            (c.urls(), Some(c))
        }
    }
}

/// A key prefix unique to one test, so tests can share a server.
pub fn unique_prefix(test: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "t{}-{}-{test}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
