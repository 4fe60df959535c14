//! CSV import: header matching, per-row errors by line, idempotent reruns,
//! update and dry-run modes, and a Redis outage in the middle.

use crate::DefaultAccount;
use std::sync::Arc;

use samlgate::clock::SystemClock;
use samlgate::mapping::License;
use samlgate::provisioning::csv::{ImportOptions, ImportReport, import};
use samlgate::store::embedded::EmbeddedStore;
use samlgate::store::redis::RedisStore;
use samlgate::store::{Store, UserStatus};

use super::redis_support::{RedisServer, standalone, unique_prefix};
use super::support::config;

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

async fn run(store: &dyn Store, csv: &str, opts: &ImportOptions) -> ImportReport {
    let mut cfg = config("config.toml");
    cfg.provisioning.outbox_dir = std::env::temp_dir().join("samlgate-test-outbox");
    import(
        store,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        csv.as_bytes(),
        opts,
        now(),
        &mut |_| {},
    )
    .await
    .unwrap()
}

const MESSY: &str = "\u{feff}Email,First_Name,LAST NAME,department,User Group\r\n\
alice@example.com,Alice,Liddell,Eng,staff;admins\r\n\
\"bob@example.com\",\"Bob, Jr.\",Builder,,\r\n\
not-an-email,X,Y,,\r\n\
,NoEmail,Z,,\r\n\
alice@example.com,Dup,Row,,\r\n\
carol@example.com,Carol,Danvers,Eng,staff,extra\r\n\
dave@elsewhere.org,Dave,Lister,,\r\n\
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messy_file_imports_good_rows_and_reports_bad_ones_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    let opts = ImportOptions {
        license: License::Licensed,
        features: vec!["recording".into()],
        sso_only: true,
        ..Default::default()
    };
    let r = run(&store, MESSY, &opts).await;
    assert_eq!(
        (r.created, r.updated, r.skipped, r.error_count),
        (3, 0, 0, 4),
        "{r:#?}"
    );
    let lines: Vec<u64> = r.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5, 6, 7]);
    assert!(r.errors[0].reason.contains("invalid email"));
    assert!(r.errors[1].reason.contains("missing email"));
    assert!(r.errors[2].reason.contains("duplicate"));
    assert!(r.errors[3].reason.contains("fields"));
    let bob = store.get_user("bob@example.com").await.unwrap().unwrap();
    assert_eq!(bob.first_name, "Bob, Jr.");
    assert!(bob.sso_only);
    assert_eq!(bob.license, License::Licensed);
    assert_eq!(bob.features, vec!["recording"]);
    let alice = store.get_user("alice@example.com").await.unwrap().unwrap();
    assert_eq!(alice.groups, vec!["staff", "admins"]);
    assert_eq!(
        alice.vanity.as_deref(),
        Some("alice"),
        "5 letters: a valid vanity name"
    );
    let dave = store.get_user("dave@elsewhere.org").await.unwrap().unwrap();
    assert_eq!(dave.status, UserStatus::PendingVerification);

    // A rerun creates nothing and reports the same bad rows.
    let again = run(&store, MESSY, &opts).await;
    assert_eq!((again.created, again.skipped, again.error_count), (0, 3, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanity_names_for_licensed_imports() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    let csv = "email\nsam.vimes@example.com\nsam.vimes@example.org\nbob@example.com\n";
    let opts = ImportOptions {
        license: License::Licensed,
        ..Default::default()
    };
    let r = run(&store, csv, &opts).await;
    assert_eq!(r.created, 3);
    let a = store
        .get_user("sam.vimes@example.com")
        .await
        .unwrap()
        .unwrap()
        .vanity
        .unwrap();
    let b = store
        .get_user("sam.vimes@example.org")
        .await
        .unwrap()
        .unwrap()
        .vanity
        .unwrap();
    let c = store
        .get_user("bob@example.com")
        .await
        .unwrap()
        .unwrap()
        .vanity
        .unwrap();
    assert_eq!(a, "sam.vimes");
    assert_ne!(b, a);
    assert!(samlgate::provisioning::valid_vanity(&b) && samlgate::provisioning::valid_vanity(&c));
    assert_ne!(c, "bob", "too short for a vanity name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_columns_refuse_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    let cfg = config("config.toml");
    let e = import(
        &store,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        "email,shoe size\na@example.com,9\n".as_bytes(),
        &ImportOptions::default(),
        now(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "csv_header");
    assert!(e.to_string().contains("shoe size"));
    let e = import(
        &store,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        "first_name\nA\n".as_bytes(),
        &ImportOptions::default(),
        now(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no email column"));
    let e = import(
        &store,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        "".as_bytes(),
        &ImportOptions::default(),
        now(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "csv_header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_existing_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap();
    run(
        &store,
        "email,first_name\na@example.com,Old\n",
        &ImportOptions::default(),
    )
    .await;
    let dry = ImportOptions {
        dry_run: true,
        ..Default::default()
    };
    let r = run(
        &store,
        "email,first_name\na@example.com,New\nb@example.com,B\n",
        &dry,
    )
    .await;
    assert_eq!((r.created, r.skipped), (1, 1));
    assert_eq!(
        store.get_user("b@example.com").await.unwrap(),
        None,
        "dry run writes nothing"
    );
    let upd = ImportOptions {
        update_existing: true,
        license: License::OnPrem,
        ..Default::default()
    };
    let r = run(&store, "email,first_name\na@example.com,New\n", &upd).await;
    assert_eq!((r.created, r.updated), (0, 1));
    let a = store.get_user("a@example.com").await.unwrap().unwrap();
    assert_eq!((a.first_name.as_str(), a.license), ("New", License::OnPrem));
}

fn big_csv(rows: usize) -> String {
    let mut s = String::from("email,first_name,last_name,department,user group\n");
    for i in 0..rows {
        if i % 997 == 0 {
            s.push_str("broken-row-without-at,x,y,,\n");
        } else {
            s.push_str(&format!("user{i}@example.com,First{i},Last{i},Dept,g\n"));
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_import_and_rerun() {
    let (url, _g) = standalone();
    let store = RedisStore::standalone(&url, &unique_prefix("csv"))
        .await
        .unwrap();
    let csv = big_csv(5000);
    let r = run(&store, &csv, &ImportOptions::default()).await;
    let bad = (0..5000).filter(|i| i % 997 == 0).count() as u64;
    assert_eq!(r.error_count, bad);
    assert_eq!(r.created, 5000 - bad);
    assert_eq!(r.errors[1].line, 997 + 2, "line numbers count the header");
    let again = run(&store, &csv, &ImportOptions::default()).await;
    assert_eq!((again.created, again.skipped), (0, 5000 - bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_mid_import_reports_what_was_written_and_a_rerun_completes() {
    let mut server = RedisServer::start();
    let store = Arc::new(
        RedisStore::standalone(&server.url(), "csv-outage")
            .await
            .unwrap(),
    );
    let csv = big_csv(20_000);
    let bad = (0..20_000).filter(|i| i % 997 == 0).count() as u64;
    let opts = ImportOptions {
        batch_size: 500,
        ..Default::default()
    };
    let mut cfg = config("config.toml");
    cfg.provisioning.outbox_dir = std::env::temp_dir().join("samlgate-test-outbox");
    // Kill redis after the third batch.
    let mut batches = 0;
    let mut srv = Some(&mut server);
    let r = import(
        store.as_ref(),
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        csv.as_bytes(),
        &opts,
        now(),
        &mut |_| {
            batches += 1;
            if batches == 3
                && let Some(s) = srv.take()
            {
                s.stop();
            }
        },
    )
    .await
    .unwrap();
    let i = r
        .interrupted
        .clone()
        .expect("the import must report the interruption");
    assert_eq!(i.code, "store_unavailable");
    assert!(r.created >= 1000 && r.created < 20_000, "{r:?}");
    assert!(i.written_before_line > 1000 && i.unknown_through_line >= i.written_before_line);
    server.restart();
    let mut store2 = None;
    for _ in 0..50 {
        if let Ok(s) = RedisStore::standalone(&server.url(), "csv-outage").await {
            store2 = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let store2 = store2.unwrap();
    // The restarted server is empty (no persistence in this test), so the
    // rerun must create every good row; with persistence it would skip the
    // written ones. Either way, no duplicates and nothing missing:
    let r2 = import(
        &store2,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        csv.as_bytes(),
        &opts,
        now(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(r2.interrupted.is_none());
    assert_eq!(r2.created + r2.skipped, 20_000 - bad);
    let again = import(
        &store2,
        &cfg,
        cfg.acct(),
        &samlgate::provisioning::NoOtherAccounts,
        csv.as_bytes(),
        &opts,
        now(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!((again.created, again.skipped), (0, 20_000 - bad));
}

#[test]
fn cli_import_json_and_users_get() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("c.toml");
    let fixtures = super::support::fixtures();
    std::fs::write(
        &cfg_path,
        format!(
            "[sp]\nentity_id = \"https://sp.example.com/saml/metadata\"\nacs_url = \"https://sp.example.com/saml/acs\"\n\
             [idp]\nmetadata_file = \"{}\"\n[provisioning]\nassociated_domains = [\"example.com\"]\noutbox_dir = \"{}\"\n[store]\npath = \"{}\"\n",
            fixtures.join("idp-metadata.xml").display(),
            dir.path().join("outbox").display(),
            dir.path().join("db/s.db").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("u.csv"), MESSY).unwrap();
    let bin = env!("CARGO_BIN_EXE_samlgate");
    let out = std::process::Command::new(bin)
        .args(["users", "import", "--config"])
        .arg(&cfg_path)
        .arg(dir.path().join("u.csv"))
        .args(["--license", "basic", "--sso", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["created"], 3);
    assert_eq!(j["errors"][0]["line"], 4);
    let get = |email: &str| {
        std::process::Command::new(bin)
            .args(["users", "get", "--config"])
            .arg(&cfg_path)
            .arg(email)
            .output()
            .unwrap()
    };
    let out = get("ALICE@example.com");
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["first_name"], "Alice");
    assert_eq!(get("nobody@example.com").status.code(), Some(1));
    let out = std::process::Command::new(bin)
        .args(["users", "delete", "--config"])
        .arg(&cfg_path)
        .arg("alice@example.com")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(get("alice@example.com").status.code(), Some(1));
    let out = std::process::Command::new(bin)
        .args(["users", "list", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licensed_rerun_claims_no_vanity_name_and_keeps_every_users_own() {
    for redis in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_guard, store): (Option<_>, Arc<dyn Store>) = if redis {
            let (url, g) = standalone();
            (
                Some(g),
                Arc::new(
                    RedisStore::standalone(&url, &unique_prefix("rerun"))
                        .await
                        .unwrap(),
                ),
            )
        } else {
            (
                None,
                Arc::new(
                    EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap(),
                ),
            )
        };
        let csv = "email,first_name\nalice.smith@example.com,Alice\nbob.jones@example.com,Bob\n";
        let opts = ImportOptions {
            license: License::Licensed,
            ..Default::default()
        };
        let first = run(store.as_ref(), csv, &opts).await;
        assert_eq!(first.created, 2);
        let again = run(store.as_ref(), csv, &opts).await;
        assert_eq!((again.created, again.skipped), (0, 2), "redis={redis}");
        for (email, name) in [
            ("alice.smith@example.com", "alice.smith"),
            ("bob.jones@example.com", "bob.jones"),
        ] {
            let u = store.get_user(email).await.unwrap().unwrap();
            assert_eq!(u.vanity.as_deref(), Some(name));
            // The claim still stands: nobody else can take the name.
            let won = store
                .claim_vanities(&[(name.to_owned(), "intruder@example.com".to_owned())])
                .await
                .unwrap();
            assert_eq!(
                won,
                [false],
                "redis={redis}: {name} was given back by the rerun"
            );
        }
    }
}
