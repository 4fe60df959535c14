//! The login decision and email verification, on the embedded store and a
//! real Redis.

use crate::DefaultAccount;
use std::sync::Arc;

use samlgate::clock::SystemClock;
use samlgate::config::{Config, ProvisioningMode};
use samlgate::mapping::{License, MappedUser};
use samlgate::provisioning::{Action, Refusal, decide, verify_token};
use samlgate::store::embedded::EmbeddedStore;
use samlgate::store::redis::RedisStore;
use samlgate::store::{Store, UserStatus};

use super::redis_support::{RedisServer, standalone, unique_prefix};
use super::store_conformance::user;
use super::support::config;

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn mapped(email: &str, license: License) -> MappedUser {
    MappedUser {
        email: email.into(),
        first_name: "Alice".into(),
        last_name: "Liddell".into(),
        department: "Eng".into(),
        groups: vec!["staff".into()],
        license,
        features: vec![],
        license_by_rule: true,
        admin: false,
    }
}

fn cfg(mode: ProvisioningMode, outbox: &std::path::Path) -> Config {
    let mut c = config("config.toml");
    c.acct_mut().provisioning.mode = mode;
    c.provisioning.outbox_dir = outbox.to_owned();
    c
}

async fn decision_suite(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let jit = cfg(ProvisioningMode::Jit, dir.path());
    let prior = cfg(ProvisioningMode::PriorToSignIn, dir.path());

    // prior_to_sign_in: nobody gets in unprovisioned, nothing is created
    let e = decide(
        store.as_ref(),
        &prior,
        prior.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("new@example.com", License::Basic),
        now(),
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "not_provisioned");
    assert_eq!(store.get_user("new@example.com").await.unwrap(), None);

    // JIT creates, then updates a changed attribute, never the email
    let a = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("Alice.Smith@Example.com", License::Licensed),
        now(),
        true,
    )
    .await
    .unwrap();
    assert_eq!(a.action, Action::Created);
    assert_eq!(a.user.email, "alice.smith@example.com");
    assert_eq!(a.user.status, UserStatus::Active);
    assert_eq!(a.user.vanity.as_deref(), Some("alice.smith"));
    let mut changed = mapped("alice.smith@example.com", License::Licensed);
    changed.last_name = "Married".into();
    let a = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &changed,
        now(),
        true,
    )
    .await
    .unwrap();
    assert_eq!(a.action, Action::Updated);
    assert_eq!(
        store
            .get_user("alice.smith@example.com")
            .await
            .unwrap()
            .unwrap()
            .last_name,
        "Married"
    );
    let a = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &changed,
        now(),
        true,
    )
    .await
    .unwrap();
    assert_eq!(a.action, Action::Unchanged);

    // the existing user is admitted in prior_to_sign_in too
    assert!(
        decide(
            store.as_ref(),
            &prior,
            prior.acct(),
            &samlgate::provisioning::NoOtherAccounts,
            &changed,
            now(),
            true
        )
        .await
        .is_ok()
    );

    // deactivated users are refused
    let mut u = store
        .get_user("alice.smith@example.com")
        .await
        .unwrap()
        .unwrap();
    u.status = UserStatus::Deactivated;
    store.put_users(&[u]).await.unwrap();
    let e = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &changed,
        now(),
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "deactivated");

    // outside the associated domains: created pending, mailed, refused until verified
    let e = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("bob.jones@elsewhere.org", License::Basic),
        now(),
        true,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Refusal::PendingVerification(_)), "{e:?}");
    assert_eq!(
        store
            .get_user("bob.jones@elsewhere.org")
            .await
            .unwrap()
            .unwrap()
            .status,
        UserStatus::PendingVerification
    );
    let mail: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mail.len(), 1);
    let body = std::fs::read_to_string(&mail[0]).unwrap();
    assert!(body.starts_with("To: bob.jones@elsewhere.org"));
    let token = body.split("token=").nth(1).unwrap().trim().to_owned();
    let e = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("bob.jones@elsewhere.org", License::Basic),
        now(),
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.code(),
        "pending_verification",
        "still refused before the link is followed"
    );
    let v = verify_token(store.as_ref(), &token, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.status, UserStatus::Active);
    assert!(
        verify_token(store.as_ref(), &token, now())
            .await
            .unwrap()
            .is_none(),
        "single use"
    );
    assert!(
        verify_token(store.as_ref(), "forged", now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        decide(
            store.as_ref(),
            &jit,
            jit.acct(),
            &samlgate::provisioning::NoOtherAccounts,
            &mapped("bob.jones@elsewhere.org", License::Basic),
            now(),
            true
        )
        .await
        .is_ok()
    );

    // read-only decisions write nothing
    let a = decide(
        store.as_ref(),
        &jit,
        jit.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("carol.ro@example.com", License::Basic),
        now(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(a.action, Action::WouldCreate);
    assert_eq!(store.get_user("carol.ro@example.com").await.unwrap(), None);

    // concurrent first logins of one new user create exactly one user
    let jit = Arc::new(jit);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (s, c) = (Arc::clone(&store), Arc::clone(&jit));
        tasks.push(tokio::spawn(async move {
            decide(
                s.as_ref(),
                &c,
                c.acct(),
                &samlgate::provisioning::NoOtherAccounts,
                &mapped("racer.one@example.com", License::Licensed),
                now(),
                true,
            )
            .await
            .map(|a| a.action)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let action = t.await.unwrap().unwrap();
        created += usize::from(action == Action::Created);
    }
    assert_eq!(created, 1);
    assert_eq!(
        store
            .get_user("racer.one@example.com")
            .await
            .unwrap()
            .unwrap()
            .vanity
            .as_deref(),
        Some("racer.one")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_decision_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    decision_suite(Arc::new(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_decision_redis() {
    let (url, _g) = standalone();
    let s = RedisStore::standalone(&url, &unique_prefix("decide"))
        .await
        .unwrap();
    decision_suite(Arc::new(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_local_part_on_two_processes_gets_two_vanity_names() {
    // Two independent connections stand for two gateway processes.
    let (url, _g) = standalone();
    let prefix = unique_prefix("vanity");
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(cfg(ProvisioningMode::Jit, dir.path()));
    for round in 0..10 {
        let a: Arc<dyn Store> = Arc::new(RedisStore::standalone(&url, &prefix).await.unwrap());
        let b: Arc<dyn Store> = Arc::new(RedisStore::standalone(&url, &prefix).await.unwrap());
        let local = format!("sam.vimes{round}");
        let (ca, cb) = (Arc::clone(&c), Arc::clone(&c));
        let (la, lb) = (local.clone(), local.clone());
        let ta = tokio::spawn(async move {
            decide(
                a.as_ref(),
                &ca,
                ca.acct(),
                &samlgate::provisioning::NoOtherAccounts,
                &mapped(&format!("{la}@example.com"), License::Licensed),
                now(),
                true,
            )
            .await
        });
        let tb = tokio::spawn(async move {
            decide(
                b.as_ref(),
                &cb,
                cb.acct(),
                &samlgate::provisioning::NoOtherAccounts,
                &mapped(&format!("{lb}@example.com.au"), License::Licensed),
                now(),
                true,
            )
            .await
        });
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let va = ra.ok().and_then(|a| a.user.vanity);
        let s = RedisStore::standalone(&url, &prefix).await.unwrap();
        let vb = match rb {
            Ok(a) => a.user.vanity,
            // example.com.au is not associated: created pending, refused; read it back
            Err(_) => {
                s.get_user(&format!("{local}@example.com.au"))
                    .await
                    .unwrap()
                    .unwrap()
                    .vanity
            }
        };
        let (va, vb) = (va.unwrap(), vb.unwrap());
        assert_ne!(va, vb, "two users must never share a vanity name");
        assert!(
            va == local || vb == local,
            "one of them gets the local part"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_refuses_logins_with_store_unavailable() {
    let mut server = RedisServer::start();
    let s = RedisStore::standalone(&server.url(), "outage-login")
        .await
        .unwrap();
    s.insert_users(&[user("known@example.com")]).await.unwrap();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    for mode in [ProvisioningMode::Jit, ProvisioningMode::PriorToSignIn] {
        let e = decide(
            &s,
            &cfg(mode, dir.path()),
            cfg(mode, dir.path()).acct(),
            &samlgate::provisioning::NoOtherAccounts,
            &mapped("known@example.com", License::Licensed),
            now(),
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.code(),
            "store_unavailable",
            "{mode:?}: no login without the store"
        );
    }
}

/// A real SMTP server (aiosmtpd) writing to a maildir.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    #[allow(clippy::disallowed_methods)] // polling a child process
    fn start() -> Self {
        let maildir = tempfile::tempdir().unwrap();
        let port = super::redis_support::free_port();
        let child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3-aiosmtpd (scripts/install-deps.sh installs it)");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(15),
                "aiosmtpd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            port,
            maildir,
        }
    }

    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_mail_goes_out_through_smtp() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(ProvisioningMode::Jit, dir.path());
    c.smtp = Some(samlgate::config::SmtpConfig {
        host: "127.0.0.1".into(),
        port: sink.port,
        username: None,
        password: None,
        from: "meetings@example.com".into(),
        tls: samlgate::config::SmtpTls::None,
    });
    samlgate::mail::send(&c, "probe@outside.org", "probe", "hello\nworld\n", "probe")
        .await
        .unwrap();
    assert_eq!(sink.messages().len(), 1);
    let store = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    let e = decide(
        &store,
        &c,
        c.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("frank@outside.org", License::Basic),
        now(),
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "pending_verification");
    let msgs: Vec<String> = sink
        .messages()
        .into_iter()
        .filter(|m| !m.contains("probe@outside.org"))
        .collect();
    assert_eq!(msgs.len(), 1, "one message arrived");
    let m = &msgs[0];
    assert!(m.contains("To: frank@outside.org"), "{m}");
    assert!(m.contains("From: meetings@example.com"), "{m}");
    assert!(m.contains("Subject: Verify your email address"), "{m}");
    // a second login within 10 minutes sends nothing new
    let _ = decide(
        &store,
        &c,
        c.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped("frank@outside.org", License::Basic),
        now(),
        true,
    )
    .await;
    assert_eq!(sink.messages().len(), 2, "probe + one verification");
    // Undo quoted-printable if the transport chose it.
    let m = m
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let token = m
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let u = verify_token(&store, &token, now()).await.unwrap().unwrap();
    assert_eq!(u.status, UserStatus::Active);
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .all(|e| e.unwrap().file_name() != "outbox"),
        "no outbox file when SMTP is set"
    );
}
