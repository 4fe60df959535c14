//! IdP metadata from a URL: fetched at start, refreshed, last good copy kept.

use crate::DefaultAccount;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use samlgate::config::Config;
use samlgate::server::{Handler, HandlerFuture, text};

use super::gateway::{gateway, idp, spawn};
use super::support::fixtures;

/// Serves whatever (status, body) it currently holds.
pub struct MetadataServer(pub Mutex<(u16, String)>);

impl Handler for MetadataServer {
    fn call(self: Arc<Self>, _req: Request<Incoming>, _peer: SocketAddr) -> HandlerFuture {
        Box::pin(async move {
            let (status, body) = self.0.lock().unwrap().clone();
            text(StatusCode::from_u16(status).unwrap(), body)
        })
    }
}

/// The fixture metadata reduced to one signing certificate.
fn metadata_with_only(cert: &str) -> String {
    let full = std::fs::read_to_string(fixtures().join("idp-metadata.xml")).unwrap();
    let b64: String = std::fs::read_to_string(fixtures().join("keys").join(format!("{cert}.crt")))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut out = String::new();
    for line in full.lines() {
        if line.contains("KeyDescriptor use=\"signing\"") && !line.contains(&b64) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn config_text(url: &str, file: Option<&str>) -> String {
    let file = file
        .map(|f| format!("metadata_file = \"{f}\"\n"))
        .unwrap_or_default();
    format!(
        "[sp]\nentity_id = \"https://sp.example.com/saml/metadata\"\nacs_url = \"https://sp.example.com/saml/acs\"\n\
[idp]\nmetadata_url = \"{url}\"\n{file}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_fetched_at_start_with_file_fallback() {
    let server = Arc::new(MetadataServer(Mutex::new((
        200,
        metadata_with_only("idp2"),
    ))));
    let (addr, _g) = spawn(server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(&format!("http://{addr}/md"), None)).unwrap();
    let c = Config::load_async(&path).await.unwrap();
    assert_eq!(c.acct().idp.metadata.signing_certs.len(), 1);
    assert_eq!(c.acct().idp.metadata_source, format!("http://{addr}/md"));
    // the server fails: with a file, the file is used; without, a clear error
    server.0.lock().unwrap().0 = 500;
    let e = Config::load_async(&path).await.unwrap_err().to_string();
    assert!(e.contains("idp.metadata_url") && e.contains("500"), "{e}");
    let file = fixtures().join("idp-metadata.xml");
    std::fs::write(
        &path,
        config_text(
            &format!("http://{addr}/md"),
            Some(&file.display().to_string()),
        ),
    )
    .unwrap();
    let c = Config::load_async(&path).await.unwrap();
    assert_eq!(
        c.acct().idp.metadata.signing_certs.len(),
        3,
        "fell back to the file"
    );
    // the sync loader says it did not fetch
    assert!(
        Config::load(&dir.path().join("c.toml")).is_ok(),
        "with a file the sync loader works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_picks_up_a_key_rollover_and_keeps_the_last_good_copy() {
    let server = Arc::new(MetadataServer(Mutex::new((200, metadata_with_only("idp")))));
    let (addr, _g) = spawn(server.clone()).await;
    let g = gateway(|c| {
        c.acct_mut().idp.metadata =
            samlgate::saml::metadata::IdpMetadata::parse(&metadata_with_only("idp"), None).unwrap();
    })
    .await;
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(samlgate::serve::refresh_metadata(
        Arc::clone(g.gateway.accounts()),
        "default".into(),
        format!("http://{addr}/md"),
        Duration::from_millis(200),
        false,
        stop_rx,
    ));
    let k = fixtures().join("keys");
    let idp2 = samlgate::devidp::DevIdp::new(
        "https://idp.example.org/saml/idp",
        &std::fs::read(k.join("idp2.key")).unwrap(),
        &std::fs::read(k.join("idp2.crt")).unwrap(),
    )
    .unwrap();
    // before the rollover: idp2's signature is refused
    let r = g
        .post_acs(
            &idp2
                .response_b64(&g.params("alice@example.com", None))
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    // the IdP rolls over to idp2; after a refresh its responses are accepted
    *server.0.lock().unwrap() = (200, metadata_with_only("idp2"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = g
        .post_acs(
            &idp2
                .response_b64(&g.params("alice@example.com", None))
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = g
        .post_acs(
            &idp()
                .response_b64(&g.params("alice@example.com", None))
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "the old key is gone");
    // a broken refresh keeps the last good copy
    *server.0.lock().unwrap() = (200, "<not-metadata/>".into());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = g
        .post_acs(
            &idp2
                .response_b64(&g.params("alice@example.com", None))
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(r.status, 303);
}
