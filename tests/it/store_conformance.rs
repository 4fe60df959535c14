//! One conformance suite, run against the embedded store, a real Redis and a
//! real 3-master Redis Cluster; plus durability and outage behaviour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use samlgate::clock::SystemClock;
use samlgate::mapping::License;
use samlgate::store::embedded::EmbeddedStore;
use samlgate::store::redis::RedisStore;
use samlgate::store::{Ephemeral, Store, StoreError, UserRecord, UserSource, UserStatus};

use super::redis_support::{RedisServer, cluster, standalone, unique_prefix};

pub fn user(email: &str) -> UserRecord {
    UserRecord {
        account: "default".into(),
        email: email.to_owned(),
        first_name: "First".into(),
        last_name: "Last".into(),
        department: "Dept".into(),
        groups: vec!["g1".into(), "g2".into()],
        license: License::Licensed,
        features: vec!["recording".into()],
        sso_only: true,
        status: UserStatus::Active,
        vanity: None,
        source: UserSource::Api,
        created_at: "2026-01-01T00:00:00+00:00".into(),
        updated_at: "2026-01-01T00:00:00+00:00".into(),
        scim: None,
    }
}

async fn suite(store: Arc<dyn Store>) {
    store.ping().await.unwrap();

    // A login's replay entry with the read of its user (one write where
    // the store can): no user yet, then a replay, then a user.
    let minute = Duration::from_secs(60);
    assert_eq!(
        store
            .insert_ephemeral_get_user(Ephemeral::Replay, "rg1", b"", minute, "rg@example.com")
            .await
            .unwrap(),
        (true, None)
    );
    assert_eq!(
        store
            .insert_ephemeral_get_user(Ephemeral::Replay, "rg1", b"", minute, "rg@example.com")
            .await
            .unwrap(),
        (false, None),
        "replayed"
    );
    let rg = user("rg@example.com");
    store.insert_users(std::slice::from_ref(&rg)).await.unwrap();
    assert_eq!(
        store
            .insert_ephemeral_get_user(Ephemeral::Replay, "rg2", b"", minute, "rg@example.com")
            .await
            .unwrap(),
        (true, Some(rg))
    );
    assert!(store.delete_user("rg@example.com").await.unwrap());

    // users: insert-if-absent, get, overwrite, batch get
    assert_eq!(store.get_user("nobody@example.com").await.unwrap(), None);
    let a = user("a@example.com");
    assert_eq!(
        store.insert_users(std::slice::from_ref(&a)).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        store.insert_users(std::slice::from_ref(&a)).await.unwrap(),
        vec![false]
    );
    assert_eq!(
        store.get_user("a@example.com").await.unwrap(),
        Some(a.clone())
    );
    let mut a2 = a.clone();
    a2.first_name = "Changed".into();
    store.put_users(std::slice::from_ref(&a2)).await.unwrap();
    assert_eq!(
        store
            .get_user("a@example.com")
            .await
            .unwrap()
            .unwrap()
            .first_name,
        "Changed"
    );
    let got = store
        .get_users(&["a@example.com".into(), "zz@example.com".into()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].is_some() && got[1].is_none());

    // a batch mixing new and existing users
    let batch = vec![user("b@example.com"), a.clone(), user("c@example.com")];
    assert_eq!(
        store.insert_users(&batch).await.unwrap(),
        vec![true, false, true]
    );

    // concurrent first inserts of one email: exactly one wins
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut u = user("race@example.com");
            u.first_name = format!("racer{i}");
            s.insert_users(&[u]).await.unwrap()[0]
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one concurrent insert must win");

    // listing: ordered, paginated, nothing skipped or repeated
    let many: Vec<UserRecord> = (0..25)
        .map(|i| user(&format!("list{i:02}@example.org")))
        .collect();
    store.insert_users(&many).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().map(|u| u.email.clone());
        seen.extend(page.into_iter().map(|u| u.email));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "listing is ordered and has no duplicates");
    assert_eq!(seen.len(), 25 + 4); // a, b, c, race + 25

    // vanity names: atomic claims
    let claims = vec![("alice.smith".to_string(), "a@example.com".to_string())];
    assert_eq!(store.claim_vanities(&claims).await.unwrap(), vec![true]);
    assert_eq!(
        store.claim_vanities(&claims).await.unwrap(),
        vec![true],
        "re-claim by the owner"
    );
    let other = vec![("alice.smith".to_string(), "a@other.org".to_string())];
    assert_eq!(store.claim_vanities(&other).await.unwrap(), vec![false]);
    store
        .release_vanity("alice.smith", "a@other.org")
        .await
        .unwrap();
    assert_eq!(
        store.claim_vanities(&other).await.unwrap(),
        vec![false],
        "non-owner cannot release"
    );
    // batches: all free (claimed at once), then free, own and taken mixed
    let free: Vec<(String, String)> = (0..5)
        .map(|i| (format!("batch.free{i}"), format!("f{i}@example.com")))
        .collect();
    assert_eq!(store.claim_vanities(&free).await.unwrap(), vec![true; 5]);
    let mixed = vec![
        ("batch.new".to_string(), "n@example.com".to_string()),
        ("batch.free0".to_string(), "f0@example.com".to_string()),
        (
            "batch.free1".to_string(),
            "intruder@example.com".to_string(),
        ),
        ("alice.smith".to_string(), "a@other.org".to_string()),
    ];
    assert_eq!(
        store.claim_vanities(&mixed).await.unwrap(),
        vec![true, true, false, false]
    );
    assert_eq!(
        store
            .claim_vanities(&[("batch.new".to_string(), "x@example.com".to_string())])
            .await
            .unwrap(),
        vec![false],
        "the mixed batch claimed its free name"
    );
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            s.claim_vanities(&[("contested".to_string(), format!("u{i}@example.com"))])
                .await
                .unwrap()[0]
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one concurrent vanity claim must win");

    // delete releases the user's vanity name
    let mut v = user("vanity@example.com");
    v.vanity = Some("vanity.owner".into());
    store
        .claim_vanities(&[("vanity.owner".into(), v.email.clone())])
        .await
        .unwrap();
    store.insert_users(&[v]).await.unwrap();
    assert!(store.delete_user("vanity@example.com").await.unwrap());
    assert!(!store.delete_user("vanity@example.com").await.unwrap());
    assert_eq!(store.get_user("vanity@example.com").await.unwrap(), None);
    assert_eq!(
        store
            .claim_vanities(&[("vanity.owner".into(), "new@example.com".into())])
            .await
            .unwrap(),
        vec![true]
    );

    // short-lived keys
    let ttl = Duration::from_secs(60);
    store
        .put_ephemeral(Ephemeral::Session, "s1", b"data", ttl)
        .await
        .unwrap();
    assert_eq!(
        store.get_ephemeral(Ephemeral::Session, "s1").await.unwrap(),
        Some(b"data".to_vec())
    );
    assert_eq!(
        store
            .get_ephemeral(Ephemeral::RequestId, "s1")
            .await
            .unwrap(),
        None,
        "kinds are separate"
    );
    store
        .delete_ephemeral(Ephemeral::Session, "s1")
        .await
        .unwrap();
    assert_eq!(
        store.get_ephemeral(Ephemeral::Session, "s1").await.unwrap(),
        None
    );
    assert!(
        store
            .insert_ephemeral(Ephemeral::Replay, "assert-1", b"", ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_ephemeral(Ephemeral::Replay, "assert-1", b"", ttl)
            .await
            .unwrap()
    );
    store
        .put_ephemeral(Ephemeral::RequestId, "req-1", b"/return", ttl)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            s.take_ephemeral(Ephemeral::RequestId, "req-1")
                .await
                .unwrap()
        }));
    }
    let mut got = 0;
    for t in tasks {
        if let Some(v) = t.await.unwrap() {
            assert_eq!(v, b"/return");
            got += 1;
        }
    }
    assert_eq!(got, 1, "a request id is consumed exactly once");

    // expiry
    store
        .put_ephemeral(
            Ephemeral::Session,
            "short",
            b"x",
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        store
            .insert_ephemeral(Ephemeral::Replay, "short", b"", Duration::from_millis(300))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        store
            .get_ephemeral(Ephemeral::Session, "short")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_ephemeral(Ephemeral::Session, "short")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .insert_ephemeral(Ephemeral::Replay, "short", b"", ttl)
            .await
            .unwrap(),
        "an expired replay entry no longer blocks"
    );
}

/// Account records, hosts, the change log and tokens.
async fn accounts_suite(store: &dyn Store) {
    use samlgate::store::{Expect, PutAccount, TokenRecord};
    let rec = |hosts: &[&str], n: u32| {
        serde_json::to_vec(&serde_json::json!({"doc": {"hosts": hosts, "n": n}})).unwrap()
    };
    let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let start = store.account_changes(0).await.unwrap();
    assert!(start.changed.is_empty());
    let PutAccount::Written {
        revision: r1,
        created: true,
    } = store
        .put_account(
            "acme",
            &rec(&["a.test", "b.test"], 1),
            &hosts(&["a.test", "b.test"]),
            Expect::Absent,
        )
        .await
        .unwrap()
    else {
        panic!("create")
    };
    // Absent again: a conflict that names the revision.
    assert_eq!(
        store
            .put_account("acme", &rec(&[], 2), &[], Expect::Absent)
            .await
            .unwrap(),
        PutAccount::Conflict { revision: Some(r1) }
    );
    // Another account may not take acme's host; nothing of it is written.
    assert_eq!(
        store
            .put_account(
                "globex",
                &rec(&["c.test", "b.test"], 1),
                &hosts(&["c.test", "b.test"]),
                Expect::Any
            )
            .await
            .unwrap(),
        PutAccount::HostTaken {
            host: "b.test".into(),
            owner: "acme".into()
        }
    );
    assert!(store.get_account("globex").await.unwrap().is_none());
    // A stale revision is refused; the right one replaces, releasing b.test.
    assert_eq!(
        store
            .put_account(
                "acme",
                &rec(&["a.test"], 2),
                &hosts(&["a.test"]),
                Expect::Revision(r1 + 100)
            )
            .await
            .unwrap(),
        PutAccount::Conflict { revision: Some(r1) }
    );
    let PutAccount::Written {
        revision: r2,
        created: false,
    } = store
        .put_account(
            "acme",
            &rec(&["a.test"], 2),
            &hosts(&["a.test"]),
            Expect::Revision(r1),
        )
        .await
        .unwrap()
    else {
        panic!("replace")
    };
    assert!(r2 > r1);
    let got = store.get_account("acme").await.unwrap().unwrap();
    assert_eq!((got.record, got.revision), (rec(&["a.test"], 2), r2));
    // b.test is free now.
    assert!(matches!(
        store
            .put_account(
                "globex",
                &rec(&["b.test"], 1),
                &hosts(&["b.test"]),
                Expect::Any
            )
            .await
            .unwrap(),
        PutAccount::Written { created: true, .. }
    ));
    // Changes since the start name both; since now, none.
    let ch = store.account_changes(start.version).await.unwrap();
    let mut ids = ch.changed.clone();
    ids.sort();
    assert_eq!(ids, ["acme", "globex"]);
    assert!(
        store
            .account_changes(ch.version)
            .await
            .unwrap()
            .changed
            .is_empty()
    );
    // Listing in id order with a cursor.
    let page = store.list_accounts(None, 1).await.unwrap();
    assert_eq!(
        page.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["acme"]
    );
    let page = store.list_accounts(Some("acme"), 10).await.unwrap();
    assert_eq!(
        page.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["globex"]
    );
    // Tokens: by hash, listed per account, revoked, gone with the account.
    let tok = |id: &str, account: &str| TokenRecord {
        id: id.into(),
        account: account.into(),
        scope: "users".into(),
        name: String::new(),
        hash: format!("hash-{id}"),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    store.put_token(&tok("t1", "acme")).await.unwrap();
    store.put_token(&tok("t2", "acme")).await.unwrap();
    store.put_token(&tok("t3", "globex")).await.unwrap();
    assert_eq!(
        store
            .token_by_hash("hash-t1")
            .await
            .unwrap()
            .unwrap()
            .account,
        "acme"
    );
    assert_eq!(store.list_tokens("acme").await.unwrap().len(), 2);
    assert!(store.delete_token("acme", "t2").await.unwrap());
    assert!(
        !store.delete_token("globex", "t1").await.unwrap(),
        "another account's token"
    );
    assert!(store.token_by_hash("hash-t2").await.unwrap().is_none());
    // Deleting an account: record, hosts and tokens go, the change is logged.
    let before = store.account_changes(0).await.unwrap().version;
    assert!(store.delete_account("acme").await.unwrap());
    assert!(!store.delete_account("acme").await.unwrap());
    assert!(store.get_account("acme").await.unwrap().is_none());
    assert!(store.token_by_hash("hash-t1").await.unwrap().is_none());
    assert!(store.token_by_hash("hash-t3").await.unwrap().is_some());
    assert_eq!(
        store.account_changes(before).await.unwrap().changed,
        ["acme"]
    );
    assert!(matches!(
        store
            .put_account(
                "initech",
                &rec(&["a.test"], 1),
                &hosts(&["a.test"]),
                Expect::Any
            )
            .await
            .unwrap(),
        PutAccount::Written { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_conformance_on_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("a.db"), Arc::new(SystemClock)).unwrap();
    accounts_suite(&store).await;
    let (url, _g1) = standalone();
    let store = RedisStore::standalone(&url, &unique_prefix("acct"))
        .await
        .unwrap();
    accounts_suite(&store).await;
    let (nodes, _g2) = cluster();
    let store = RedisStore::cluster(&nodes, &unique_prefix("acct"))
        .await
        .unwrap();
    accounts_suite(&store).await;
}

/// Keyed documents (SCIM ids, groups) and the session revocation log.
async fn docs_suite(store: &dyn Store) {
    use samlgate::store::DocSpace;
    let s = DocSpace::Group;
    assert_eq!(store.get_doc(s, "acme/1").await.unwrap(), None);
    assert!(store.put_doc(s, "acme/1", b"one", true).await.unwrap());
    assert!(!store.put_doc(s, "acme/1", b"uno", true).await.unwrap());
    assert_eq!(store.get_doc(s, "acme/1").await.unwrap().unwrap(), b"one");
    assert!(store.put_doc(s, "acme/1", b"uno", false).await.unwrap());
    assert_eq!(store.get_doc(s, "acme/1").await.unwrap().unwrap(), b"uno");
    for k in ["acme/2", "acme/3", "acmex/1", "beta/1"] {
        assert!(store.put_doc(s, k, k.as_bytes(), true).await.unwrap());
    }
    // Another space never sees these keys.
    assert_eq!(
        store.get_doc(DocSpace::ScimUser, "acme/1").await.unwrap(),
        None
    );
    let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list_docs(s, "acme/", None, 10).await.unwrap()),
        ["acme/1", "acme/2", "acme/3"]
    );
    assert_eq!(
        keys(
            store
                .list_docs(s, "acme/", Some("acme/1"), 1)
                .await
                .unwrap()
        ),
        ["acme/2"]
    );
    assert_eq!(
        keys(
            store
                .list_docs(s, "acme/", Some("acme/3"), 10)
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    // One of the prefix's values, in order.
    let got = store.list_docs(s, "acme/", None, 10).await.unwrap();
    assert_eq!(got[0].1, b"uno");
    assert!(store.delete_doc(s, "acme/2").await.unwrap());
    assert!(!store.delete_doc(s, "acme/2").await.unwrap());
    assert_eq!(
        keys(store.list_docs(s, "acme/", None, 10).await.unwrap()),
        ["acme/1", "acme/3"]
    );
    // Two concurrent creates of one key: exactly one wins.
    let race = |v: &'static [u8]| store.put_doc(DocSpace::ScimUser, "race", v, true);
    let (w1, w2, w3, w4) = tokio::join!(race(b"a"), race(b"b"), race(b"c"), race(b"d"));
    let wins = [w1, w2, w3, w4];
    assert_eq!(wins.iter().filter(|w| *w.as_ref().unwrap()).count(), 1);

    // Short-lived sets (the Single Logout index).
    let k = Ephemeral::SloIndex;
    let ttl = Duration::from_secs(60);
    assert!(store.set_members(k, "acme:n1").await.unwrap().is_empty());
    for m in ["s1", "s2", "s2", "s3"] {
        store.add_to_set(k, "acme:n1", m, ttl).await.unwrap();
    }
    store.add_to_set(k, "acme:n2", "other", ttl).await.unwrap();
    let mut got = store.set_members(k, "acme:n1").await.unwrap();
    got.sort();
    assert_eq!(got, ["s1", "s2", "s3"]);
    store.remove_from_set(k, "acme:n1", "s2").await.unwrap();
    store.remove_from_set(k, "acme:n1", "nope").await.unwrap();
    let mut got = store.set_members(k, "acme:n1").await.unwrap();
    got.sort();
    assert_eq!(got, ["s1", "s3"]);
    assert_eq!(store.set_members(k, "acme:n2").await.unwrap(), ["other"]);
    // Bounded: a full set drops another member, never the one added.
    for i in 0..samlgate::store::SET_MAX + 5 {
        store
            .add_to_set(k, "acme:big", &format!("m{i:05}"), ttl)
            .await
            .unwrap();
    }
    let big = store.set_members(k, "acme:big").await.unwrap();
    assert_eq!(big.len(), samlgate::store::SET_MAX);
    assert!(big.contains(&format!("m{:05}", samlgate::store::SET_MAX + 4)));
    // Expiry: a set whose time is up is empty.
    store
        .add_to_set(k, "acme:brief", "x", Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.set_members(k, "acme:brief").await.unwrap().is_empty());

    // The revocation log.
    let start = store.revocations_since(None).await.unwrap();
    assert_eq!(start.emails, Some(vec![]));
    let seq = store
        .revoke_sessions(&["a@x.example".into(), "b@x.example".into()])
        .await
        .unwrap();
    assert_eq!(seq, start.seq + 2);
    let r = store.revocations_since(Some(start.seq)).await.unwrap();
    assert_eq!(r.seq, seq);
    assert_eq!(
        r.emails,
        Some(vec!["a@x.example".to_owned(), "b@x.example".to_owned()])
    );
    let r = store.revocations_since(Some(start.seq + 1)).await.unwrap();
    assert_eq!(r.emails, Some(vec!["b@x.example".to_owned()]));
    assert_eq!(
        store.revocations_since(Some(seq)).await.unwrap().emails,
        Some(vec![])
    );
    // A replica ahead of the log (the store lost it): everything is unknown.
    assert_eq!(
        store.revocations_since(Some(seq + 5)).await.unwrap().emails,
        None
    );
    // Further back than the log reaches: unknown too.
    let many: Vec<String> = (0..samlgate::store::REVOCATION_LOG + 1)
        .map(|i| format!("u{i}@x.example"))
        .collect();
    let last = store.revoke_sessions(&many).await.unwrap();
    assert_eq!(
        store.revocations_since(Some(seq)).await.unwrap().emails,
        None
    );
    let r = store.revocations_since(Some(last - 3)).await.unwrap();
    assert_eq!(r.emails.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_sweeps_expired_short_lived_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("p.db"), Arc::new(SystemClock)).unwrap();
    for i in 0..250 {
        store
            .put_ephemeral(
                Ephemeral::Replay,
                &format!("old{i}"),
                b"",
                Duration::from_millis(50),
            )
            .await
            .unwrap();
    }
    for i in 0..20 {
        store
            .put_ephemeral(
                Ephemeral::Session,
                &format!("live{i}"),
                b"x",
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // 100 looked at per call: several calls sweep everything, and a call
    // after the sweep wrapped around finds nothing more.
    let mut purged = 0;
    for _ in 0..10 {
        purged += store.purge_expired(100).await.unwrap();
    }
    assert_eq!(purged, 250);
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    for i in 0..20 {
        assert_eq!(
            store
                .get_ephemeral(Ephemeral::Session, &format!("live{i}"))
                .await
                .unwrap()
                .as_deref(),
            Some(&b"x"[..])
        );
    }
}

/// Capped logs: newest first, at most `keep`, each log on its own, and an
/// embedded store's log survives a reopen.
async fn log_suite(store: &dyn Store) {
    let e = |i: u32| format!("e{i}").into_bytes();
    assert!(store.log_recent("a", 10).await.unwrap().is_empty());
    store.log_push("a", &[e(1), e(2), e(3)], 5).await.unwrap();
    store.log_push("b", &[e(100)], 5).await.unwrap();
    assert_eq!(store.log_recent("a", 10).await.unwrap(), [e(3), e(2), e(1)]);
    assert_eq!(store.log_recent("a", 2).await.unwrap(), [e(3), e(2)]);
    assert!(store.log_recent("a", 0).await.unwrap().is_empty());
    // Past `keep`: the oldest go, in one push and over several.
    store
        .log_push("a", &[e(4), e(5), e(6), e(7)], 5)
        .await
        .unwrap();
    assert_eq!(
        store.log_recent("a", 10).await.unwrap(),
        [e(7), e(6), e(5), e(4), e(3)]
    );
    let many: Vec<Vec<u8>> = (8..20).map(e).collect();
    store.log_push("a", &many, 5).await.unwrap();
    assert_eq!(
        store.log_recent("a", 10).await.unwrap(),
        [e(19), e(18), e(17), e(16), e(15)]
    );
    store.log_push("a", &[], 5).await.unwrap();
    assert_eq!(store.log_recent("a", 10).await.unwrap().len(), 5);
    assert_eq!(store.log_recent("b", 10).await.unwrap(), [e(100)]);
    // A log whose name is another's prefix is its own.
    store.log_push("a2", &[e(50)], 5).await.unwrap();
    assert_eq!(store.log_recent("a", 1).await.unwrap(), [e(19)]);
    assert_eq!(store.log_recent("a2", 10).await.unwrap(), [e(50)]);
    store.log_delete("a").await.unwrap();
    assert!(store.log_recent("a", 10).await.unwrap().is_empty());
    assert_eq!(store.log_recent("a2", 10).await.unwrap(), [e(50)]);
    store.log_push("a", &[e(1)], 5).await.unwrap();
    assert_eq!(store.log_recent("a", 10).await.unwrap(), [e(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_logs_on_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    {
        let store = EmbeddedStore::open(&path, Arc::new(SystemClock)).unwrap();
        log_suite(&store).await;
    }
    let store = EmbeddedStore::open(&path, Arc::new(SystemClock)).unwrap();
    assert_eq!(store.log_recent("a2", 10).await.unwrap(), [b"e50".to_vec()]);
    let (url, _g1) = standalone();
    let store = RedisStore::standalone(&url, &unique_prefix("log"))
        .await
        .unwrap();
    log_suite(&store).await;
    let (nodes, _g2) = cluster();
    let store = RedisStore::cluster(&nodes, &unique_prefix("log"))
        .await
        .unwrap();
    log_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_and_revocations_on_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("d.db"), Arc::new(SystemClock)).unwrap();
    docs_suite(&store).await;
    let (url, _g1) = standalone();
    let store = RedisStore::standalone(&url, &unique_prefix("docs"))
        .await
        .unwrap();
    docs_suite(&store).await;
    let (nodes, _g2) = cluster();
    let store = RedisStore::cluster(&nodes, &unique_prefix("docs"))
        .await
        .unwrap();
    docs_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        EmbeddedStore::open(&dir.path().join("db/samlgate.db"), Arc::new(SystemClock)).unwrap();
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_standalone() {
    let (url, _guard) = standalone();
    let store = RedisStore::standalone(&url, &unique_prefix("conf"))
        .await
        .unwrap();
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_cluster() {
    let (nodes, _guard) = cluster();
    let store = RedisStore::cluster(&nodes, &unique_prefix("conf"))
        .await
        .unwrap();
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samlgate.db");
    {
        let s = EmbeddedStore::open(&path, Arc::new(SystemClock)).unwrap();
        s.insert_users(&[user("durable@example.com")])
            .await
            .unwrap();
        s.put_ephemeral(Ephemeral::Session, "sess", b"v", Duration::from_secs(600))
            .await
            .unwrap();
    }
    let s = EmbeddedStore::open(&path, Arc::new(SystemClock)).unwrap();
    assert!(s.get_user("durable@example.com").await.unwrap().is_some());
    assert_eq!(
        s.get_ephemeral(Ephemeral::Session, "sess").await.unwrap(),
        Some(b"v".to_vec())
    );
}

/// A crash between checkpoints: the database file on disk holds only the
/// last durable state, the log the acknowledged writes since. A copy of both
/// taken while the store runs (what a power cut leaves) opens with every
/// acknowledged write, in order: inserts, overwrites, removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_replays_its_log_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = EmbeddedStore::open(&live, Arc::new(SystemClock)).unwrap();
    for i in 0..50 {
        assert_eq!(
            store
                .insert_users(&[user(&format!("log{i}@example.com"))])
                .await
                .unwrap(),
            vec![true]
        );
    }
    let mut changed = user("log7@example.com");
    changed.first_name = "Changed".into();
    store.put_users(&[changed]).await.unwrap();
    assert!(store.delete_user("log9@example.com").await.unwrap());
    store
        .put_ephemeral(
            Ephemeral::Session,
            "s1",
            b"session",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    // The "crash": both files as they are on disk now.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&live, &copy).unwrap();
    let wal = std::fs::read(dir.path().join("live.db.wal")).unwrap();
    std::fs::write(dir.path().join("copy.db.wal"), &wal).unwrap();
    // The database file alone does not have them yet (no checkpoint): the
    // log is what this test is about.
    let alone = dir.path().join("alone.db");
    std::fs::copy(&live, &alone).unwrap();
    let without_log = EmbeddedStore::open(&alone, Arc::new(SystemClock)).unwrap();
    assert!(
        without_log
            .get_user("log0@example.com")
            .await
            .unwrap()
            .is_none(),
        "checkpointed already: this test would not exercise the log"
    );
    drop(without_log);
    let reopened = EmbeddedStore::open(&copy, Arc::new(SystemClock)).unwrap();
    for i in 0..50 {
        let got = reopened
            .get_user(&format!("log{i}@example.com"))
            .await
            .unwrap();
        assert_eq!(got.is_some(), i != 9, "log{i}");
    }
    assert_eq!(
        reopened
            .get_user("log7@example.com")
            .await
            .unwrap()
            .unwrap()
            .first_name,
        "Changed"
    );
    assert_eq!(
        reopened
            .get_ephemeral(Ephemeral::Session, "s1")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"session"[..])
    );
    // Replayed and made durable: the database file alone has them now.
    drop(reopened);
    let again = dir.path().join("again.db");
    std::fs::copy(&copy, &again).unwrap();
    let durable = EmbeddedStore::open(&again, Arc::new(SystemClock)).unwrap();
    assert!(
        durable
            .get_user("log49@example.com")
            .await
            .unwrap()
            .is_some()
    );
}

/// The crash: the store at `live` opened again from a copy of its database
/// file as on disk now and of its log (`wal`, or the log file as on disk
/// now).
fn crash_copy(live: &std::path::Path, wal: Option<&[u8]>) -> EmbeddedStore {
    let copy = live.with_file_name("copy.db");
    std::fs::copy(live, &copy).unwrap();
    let wal = match wal {
        Some(w) => w.to_vec(),
        None => std::fs::read(live.with_extension("db.wal")).unwrap(),
    };
    std::fs::write(copy.with_extension("db.wal"), &wal).unwrap();
    EmbeddedStore::open(&copy, Arc::new(SystemClock)).unwrap()
}

/// Write-behind (a login's writes before its session): answered once
/// applied and seen at once by every reader, no sync of their own; the next
/// durable write syncs once for the chain, `flush` makes them durable too,
/// and a crash-time copy after either holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_write_behind_is_seen_at_once_and_made_durable_by_the_next_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = EmbeddedStore::open(&live, Arc::new(SystemClock)).unwrap();
    let behind = store
        .write_behind()
        .expect("the embedded store writes behind");
    let minute = Duration::from_secs(60);
    let before = store.log_syncs();
    assert!(
        behind
            .insert_ephemeral(Ephemeral::Replay, "a1", b"", minute)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_ephemeral(Ephemeral::Replay, "a1", b"", minute)
            .await
            .unwrap(),
        "the replay entry is there for the durable handle at once"
    );
    let after_replay = store.log_syncs();
    assert_eq!(
        behind
            .claim_vanities(&[("wb.user".into(), "wb@example.com".into())])
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(
        behind
            .insert_users(&[user("wb@example.com")])
            .await
            .unwrap(),
        vec![true]
    );
    assert!(store.get_user("wb@example.com").await.unwrap().is_some());
    assert_eq!(
        store.log_syncs(),
        after_replay,
        "write-behind writes sync nothing"
    );
    store
        .put_ephemeral(Ephemeral::Session, "s1", b"session", minute)
        .await
        .unwrap();
    assert_eq!(
        store.log_syncs(),
        after_replay + 1,
        "the durable write syncs once, for the chain"
    );
    assert!(before <= after_replay);
    behind
        .insert_users(&[user("wb2@example.com")])
        .await
        .unwrap();
    behind.flush().await.unwrap();
    let reopened = crash_copy(&live, None);
    for email in ["wb@example.com", "wb2@example.com"] {
        assert!(reopened.get_user(email).await.unwrap().is_some(), "{email}");
    }
    assert!(
        !reopened
            .insert_ephemeral(Ephemeral::Replay, "a1", b"", minute)
            .await
            .unwrap(),
        "the replay entry survived"
    );
    assert_eq!(
        reopened
            .claim_vanities(&[("wb.user".into(), "other@example.com".into())])
            .await
            .unwrap(),
        vec![false],
        "the vanity name survived"
    );
    assert!(
        reopened
            .get_ephemeral(Ephemeral::Session, "s1")
            .await
            .unwrap()
            .is_some()
    );
}

/// Lazy writes (the console's sign-in activity): seen at once, never in the
/// log and never synced, even a batch far over the log's direct-commit size
/// (which, logged, would have been a durable commit of its own), while a
/// write-behind one is logged; durable at the next checkpoint, which comes
/// within about a second (here: the writer's idle checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lazy_writes_skip_the_log_and_are_durable_at_the_next_checkpoint() {
    use samlgate::store::DocSpace;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = EmbeddedStore::open(&live, Arc::new(SystemClock)).unwrap();
    let lazy = store.lazy().expect("the embedded store writes lazily");
    let behind = store.write_behind().unwrap();
    let syncs = store.log_syncs();
    // 400 documents of 1 KiB: 400 KiB in one write.
    let docs: Vec<(String, Vec<u8>)> = (0..400)
        .map(|i| {
            let mut v = format!("lazy-marker-{i:04}").into_bytes();
            v.resize(1024, b'.');
            (format!("doc{i:04}"), v)
        })
        .collect();
    lazy.put_docs(DocSpace::LastLogin, &docs).await.unwrap();
    lazy.log_push("lazy-log", &[b"lazy-entry-marker".to_vec()], 10)
        .await
        .unwrap();
    behind
        .put_doc(DocSpace::LastLogin, "behind", b"behind-marker", false)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_doc(DocSpace::LastLogin, "doc0399")
            .await
            .unwrap()
            .as_deref(),
        Some(docs[399].1.as_slice()),
        "seen at once"
    );
    assert_eq!(
        store.log_recent("lazy-log", 5).await.unwrap(),
        vec![b"lazy-entry-marker".to_vec()]
    );
    assert_eq!(store.log_syncs(), syncs, "lazy writes sync nothing");
    let wal = std::fs::read(dir.path().join("live.db.wal")).unwrap();
    let holds = |needle: &[u8]| wal.windows(needle.len()).any(|w| w == needle);
    assert!(holds(b"behind-marker"), "a write-behind write is logged");
    assert!(!holds(b"lazy-marker-"), "a lazy write is not");
    assert!(!holds(b"lazy-entry-marker"));
    // Idle for over a second: the writer checkpoints. The crash: both files
    // as they are on disk then.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reopened = crash_copy(&live, None);
    assert_eq!(
        reopened
            .get_doc(DocSpace::LastLogin, "doc0000")
            .await
            .unwrap()
            .as_deref(),
        Some(docs[0].1.as_slice()),
        "durable after the checkpoint"
    );
    assert_eq!(
        reopened.log_recent("lazy-log", 5).await.unwrap(),
        vec![b"lazy-entry-marker".to_vec()]
    );
}

/// A crash between a checkpoint's durable commit and the clearing of the
/// log: the database already holds a newer value than the log's frame (a
/// lazy write after it), and opening replays nothing over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_replay_after_a_checkpoint_skips_the_frames_it_holds() {
    use samlgate::store::DocSpace;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = EmbeddedStore::open(&live, Arc::new(SystemClock)).unwrap();
    assert!(
        store
            .put_doc(DocSpace::LastLogin, "k", b"logged", false)
            .await
            .unwrap()
    );
    let lazy = store.lazy().unwrap();
    assert!(
        lazy.put_doc(DocSpace::LastLogin, "k", b"lazy", false)
            .await
            .unwrap()
    );
    // The log as it was before the checkpoint cleared it.
    let wal = std::fs::read(dir.path().join("live.db.wal")).unwrap();
    assert!(wal.windows(6).any(|w| w == b"logged"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reopened = crash_copy(&live, Some(&wal));
    assert_eq!(
        reopened
            .get_doc(DocSpace::LastLogin, "k")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"lazy"[..]),
        "the logged frame is older than the database"
    );
}

/// A new user's first session in the same write as the user: the keys are
/// made of the user as inserted (with its vanity name), the write is
/// durable (synced) even through a write-behind handle, and an existing
/// email writes neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_inserts_a_user_with_its_first_session_in_one_durable_write() {
    use samlgate::store::KeysOf;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("s.db");
    let store = EmbeddedStore::open(&live, Arc::new(SystemClock)).unwrap();
    let behind = store.write_behind().unwrap();
    let keys = |key: &'static str| -> KeysOf {
        Arc::new(move |u: &UserRecord| {
            vec![(
                Ephemeral::Session,
                key.to_owned(),
                u.vanity.clone().unwrap_or_default().into_bytes(),
                Duration::from_secs(60),
            )]
        })
    };
    let names: Vec<String> = vec!["carol.jones".into()];
    let carol = user("carol.jones@example.com");
    let syncs = store.log_syncs();
    let created = behind
        .insert_user_claiming_then(&carol, &names, keys("s-carol"))
        .expect("the embedded store has the one-write insert")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.vanity.as_deref(), Some("carol.jones"));
    assert_eq!(store.log_syncs(), syncs + 1, "durable: the log was synced");
    let reopened = crash_copy(&live, None);
    assert_eq!(
        reopened
            .get_ephemeral(Ephemeral::Session, "s-carol")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"carol.jones"[..]),
        "the session, made of the user as inserted"
    );
    assert!(
        reopened
            .get_user("carol.jones@example.com")
            .await
            .unwrap()
            .is_some()
    );
    // The same email again: nothing inserted, no session.
    assert_eq!(
        store
            .insert_user_claiming_then(&carol, &names, keys("s-again"))
            .unwrap()
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .get_ephemeral(Ephemeral::Session, "s-again")
            .await
            .unwrap()
            .is_none()
    );
}

/// The embedded store's user insert with its vanity claim, in one write:
/// the first free name of the list (or this email's own) is taken; an
/// existing email inserts and claims nothing; with every name taken nothing
/// is inserted; a non-default account's user is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_inserts_a_user_with_its_vanity_claim_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    let names: Vec<String> = vec!["alice.smith".into(), "m0000000001".into()];
    let claim = async |u: &UserRecord, names: &[String]| {
        store
            .insert_user_claiming(u, names)
            .expect("the embedded store has the one-write insert")
            .await
    };
    let alice = user("alice.smith@example.com");
    let created = claim(&alice, &names).await.unwrap().unwrap();
    assert_eq!(created.vanity.as_deref(), Some("alice.smith"));
    assert_eq!(
        store
            .get_user("alice.smith@example.com")
            .await
            .unwrap()
            .unwrap()
            .vanity
            .as_deref(),
        Some("alice.smith")
    );
    // The first name is taken: the next one.
    let other = user("alice.smith@other.example");
    let created = claim(&other, &names).await.unwrap().unwrap();
    assert_eq!(created.vanity.as_deref(), Some("m0000000001"));
    // An existing email: nothing inserted, nothing claimed.
    assert_eq!(
        claim(&alice, &["fresh.name".to_owned()]).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .claim_vanities(&[("fresh.name".into(), "x@example.com".into())])
            .await
            .unwrap(),
        vec![true],
        "the refused insert claimed nothing"
    );
    // Every name taken: an error, and no user.
    assert!(claim(&user("z@example.com"), &names).await.is_err());
    assert!(store.get_user("z@example.com").await.unwrap().is_none());
    // A name already claimed for this email is its own; no names: no claim.
    store
        .claim_vanities(&[("own.name".into(), "own@example.com".into())])
        .await
        .unwrap();
    let own = claim(&user("own@example.com"), &["own.name".to_owned()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.vanity.as_deref(), Some("own.name"));
    let mut basic = user("basic@example.com");
    basic.license = License::Basic;
    basic.account = "acme".into();
    assert_eq!(claim(&basic, &[]).await.unwrap().unwrap().vanity, None);
    let (listed, _) = store.list_account_users("acme", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1, "indexed in its account");
}

/// A crash after a large group's durable commit but before the log was
/// cleared: the log's older frames must not be replayed over the newer
/// values that commit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_replays_no_frame_over_a_newer_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = EmbeddedStore::open(&live, Arc::new(SystemClock)).unwrap();
    let mut x = user("x@example.com");
    x.first_name = "Old".into();
    store.put_users(&[x.clone()]).await.unwrap();
    // The log as it is now: one frame, x = Old.
    let logged = std::fs::read(dir.path().join("live.db.wal")).unwrap();
    // A large group (over the log's limit): committed to the database file
    // directly, x = New among 300 users.
    x.first_name = "New".into();
    let mut many: Vec<UserRecord> = (0..300)
        .map(|i| user(&format!("bulk{i}@example.com")))
        .collect();
    many.push(x);
    store.put_users(&many).await.unwrap();
    // The crash: the database file as committed, the log not yet cleared.
    let reopened = crash_copy(&live, Some(&logged));
    assert_eq!(
        reopened
            .get_user("x@example.com")
            .await
            .unwrap()
            .unwrap()
            .first_name,
        "New"
    );
    assert!(
        reopened
            .get_user("bulk299@example.com")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_a_prompt_store_unavailable_and_recovers() {
    let mut server = RedisServer::start();
    let store = RedisStore::standalone(&server.url(), "outage")
        .await
        .unwrap();
    store.insert_users(&[user("o@example.com")]).await.unwrap();
    server.stop();
    let start = Instant::now();
    let e = store.get_user("o@example.com").await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(e.code(), "store_unavailable");
    let e = store
        .insert_users(&[user("p@example.com")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "store_unavailable");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "outage detection took {:?}",
        start.elapsed()
    );
    server.restart();
    // The connection manager reconnects by itself.
    let mut ok = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "store did not recover after redis came back");
    store.insert_users(&[user("p@example.com")]).await.unwrap();
}

#[tokio::test]
async fn connecting_to_nothing_fails_promptly() {
    let port = super::redis_support::free_port();
    let start = Instant::now();
    let r = RedisStore::standalone(&format!("redis://127.0.0.1:{port}"), "x").await;
    assert!(r.is_err());
    assert!(start.elapsed() < Duration::from_secs(10));
}
