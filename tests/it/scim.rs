//! SCIM 2.0 over real HTTP on an account's host: every operation, the
//! connectors' quirks (Okta, Entra ID), the account's provisioning rules,
//! groups feeding the mapping, and deprovisioning that ends live sessions
//! at once, on the embedded store, on Redis, and with two replicas on one
//! Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use super::accounts::{ADMIN, Fleet, TestIdp, bare_config, doc, fleet, fleet_on, new_idp};
use super::gateway::{TestClock, cookie_of};
use super::http_support::{Reply, request};

const HOST: &str = "acme.test";
const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const OURS: &str = "urn:samlgate:params:scim:schemas:extension:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Runs `$body(fleet)` as two tests, `$name::embedded` and `$name::redis`.
macro_rules! on_both_stores {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let (f, _d) = super::fleet(super::bare_config()).await;
                super::$body(f).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let (url, _g) = super::super::redis_support::standalone();
                let prefix = super::super::redis_support::unique_prefix(stringify!($name));
                let f = super::redis_fleet(&url, &prefix).await;
                super::$body(f).await;
            }
        }
    };
}

/// A SCIM request to `host` with bearer `token` (none when empty).
async fn scim_on(f: &Fleet, host: &str, m: Method, path: &str, token: &str, body: Value) -> Reply {
    scim_with(f, host, m, path, token, body, &[]).await
}

async fn scim_with(
    f: &Fleet,
    host: &str,
    m: Method,
    path: &str,
    token: &str,
    body: Value,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut h = vec![("host", host), ("content-type", "application/scim+json")];
    if !token.is_empty() {
        h.push(("authorization", auth.as_str()));
    }
    h.extend_from_slice(extra);
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    request(m, &format!("{}/scim/v2{path}", f.public), &h, body).await
}

async fn scim(f: &Fleet, m: Method, path: &str, token: &str, body: Value) -> Reply {
    scim_on(f, HOST, m, path, token, body).await
}

/// A new token of `scope` for `account`.
async fn token(f: &Fleet, account: &str, scope: &str) -> String {
    let r = f
        .api(
            Method::POST,
            &format!("/api/v2/accounts/{account}/tokens"),
            ADMIN,
            json!({"scope": scope, "name": "provisioning"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

/// Account `acme` (and `globex`) on `f`; returns acme's IdP and SCIM token.
async fn setup(f: &Fleet) -> (TestIdp, String) {
    let a = new_idp("https://idp.acme.example/saml");
    let b = new_idp("https://idp.globex.example/saml");
    assert_eq!(f.put("acme", &doc("acme", HOST, &a)).await.status, 201);
    assert_eq!(
        f.put("globex", &doc("globex", "globex.test", &b))
            .await
            .status,
        201
    );
    let t = token(f, "acme", "scim").await;
    (a, t)
}

fn new_user(email: &str) -> Value {
    json!({
        "schemas": [CORE],
        "userName": email,
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "externalId": format!("ext-{email}"),
        "active": true,
    })
}

async fn create(f: &Fleet, t: &str, email: &str) -> Value {
    let r = scim(f, Method::POST, "/Users", t, new_user(email)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn err_type(r: &Reply) -> String {
    let v = r.json();
    assert_eq!(
        v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{v}"
    );
    assert_eq!(v["status"], r.status.to_string());
    v["scimType"].as_str().unwrap_or("").to_owned()
}

// One store only: the failure limiter is process-wide, keyed by address and
// account, and a second run of this test would be limited by the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_needs_a_scim_token_of_that_account() {
    let (f, _d) = fleet(bare_config()).await;
    let (_a, t) = setup(&f).await;
    let globex = token(&f, "globex", "scim").await;
    let users = token(&f, "acme", "users").await;
    let r = scim(&f, Method::GET, "/Users", "", Value::Null).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(err_type(&r), "");
    assert_eq!(
        scim(&f, Method::GET, "/Users", "not-a-token", Value::Null)
            .await
            .status,
        401
    );
    // Another account's SCIM token: 403 (and it works on its own host).
    assert_eq!(
        scim(&f, Method::GET, "/Users", &globex, Value::Null)
            .await
            .status,
        403
    );
    assert_eq!(
        scim_on(
            &f,
            "globex.test",
            Method::GET,
            "/Users",
            &globex,
            Value::Null
        )
        .await
        .status,
        200
    );
    // A users token of this account is not a SCIM token.
    assert_eq!(
        scim(&f, Method::GET, "/Users", &users, Value::Null)
            .await
            .status,
        403
    );
    // An admin token is not one either.
    assert_eq!(
        scim(&f, Method::GET, "/Users", ADMIN, Value::Null)
            .await
            .status,
        401
    );
    assert_eq!(
        scim(&f, Method::GET, "/Users", &t, Value::Null)
            .await
            .status,
        200
    );
    // Guessing is rate-limited per client address and account.
    let mut limited = false;
    for _ in 0..30 {
        let r = scim_on(
            &f,
            "globex.test",
            Method::GET,
            "/Users",
            "guess",
            Value::Null,
        )
        .await;
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("60"));
            limited = true;
            break;
        }
        assert_eq!(r.status, 401);
    }
    assert!(limited, "30 failed attempts were never limited");
    // ... even with the right token, for that minute, on that account only.
    assert_eq!(
        scim_on(
            &f,
            "globex.test",
            Method::GET,
            "/Users",
            &globex,
            Value::Null
        )
        .await
        .status,
        429
    );
    assert_eq!(
        scim(&f, Method::GET, "/Users", &t, Value::Null)
            .await
            .status,
        200
    );
}

async fn lifecycle(f: &Fleet) {
    let (_a, t) = setup(f).await;
    // Okta's probe before a create: nothing yet.
    let r = scim(
        f,
        Method::GET,
        "/Users?filter=userName%20eq%20%22ann%40acme.example%22&startIndex=1&count=100",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/scim+json; charset=utf-8")
    );
    let v = r.json();
    assert_eq!(v["totalResults"], 0);
    assert_eq!(
        v["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
    // Create.
    let r = scim(f, Method::POST, "/Users", &t, new_user("Ann@Acme.example")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let u = r.json();
    let id = u["id"].as_str().unwrap().to_owned();
    assert_eq!(u["userName"], "ann@acme.example");
    assert_eq!(u["active"], true);
    assert_eq!(u["externalId"], "ext-Ann@Acme.example");
    assert_eq!(u[OURS]["status"], "active");
    assert_eq!(u[OURS]["source"], "scim");
    assert_eq!(u["meta"]["resourceType"], "User");
    let location = format!("http://{HOST}/scim/v2/Users/{id}");
    assert_eq!(u["meta"]["location"], location);
    assert_eq!(r.header("location"), Some(location.as_str()));
    let etag = r.header("etag").unwrap().to_owned();
    assert_eq!(u["meta"]["version"], etag);
    // The platform user exists with source scim.
    let stored = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    assert_eq!(stored.account, "acme");
    assert_eq!(serde_json::to_value(stored.source).unwrap(), "scim");
    // The probe now finds it; so does GET by id.
    let r = scim(
        f,
        Method::GET,
        "/Users?filter=userName+eq+%22ANN%40acme.example%22",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["totalResults"], 1);
    assert_eq!(r.json()["Resources"][0]["id"], id.as_str());
    let r = scim(f, Method::GET, &format!("/Users/{id}"), &t, Value::Null).await;
    assert_eq!(
        (r.status, r.json()["userName"].clone()),
        (200, json!("ann@acme.example"))
    );
    // A second create of the userName: 409 uniqueness.
    let r = scim(f, Method::POST, "/Users", &t, new_user("ann@acme.example")).await;
    assert_eq!((r.status, err_type(&r).as_str()), (409, "uniqueness"));
    // Okta updates with PUT of the whole user.
    let mut whole = new_user("ann@acme.example");
    whole["name"] = json!({"givenName": "Anna", "familyName": "Lee-Smith"});
    whole["id"] = json!(id);
    whole[ENTERPRISE] = json!({"department": "Sales"});
    let r = scim(f, Method::PUT, &format!("/Users/{id}"), &t, whole.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"]["givenName"], "Anna");
    assert_eq!(r.json()[ENTERPRISE]["department"], "Sales");
    let stored = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    assert_eq!(
        (stored.first_name.as_str(), stored.last_name.as_str()),
        ("Anna", "Lee-Smith")
    );
    assert_eq!(stored.department, "Sales");
    // If-Match: a stale version is 412 and changes nothing; the current one works.
    let r = scim_with(
        f,
        HOST,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "X"}]}),
        &[("if-match", etag.as_str())],
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.text());
    let current = scim(f, Method::GET, &format!("/Users/{id}"), &t, Value::Null)
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let r = scim_with(
        f,
        HOST,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Anna L."}]}),
        &[("if-match", current.as_str())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["displayName"], "Anna L.");
    assert_ne!(r.header("etag").unwrap(), current);
    // A PUT may not change the id.
    whole["id"] = json!("another-id");
    let r = scim(f, Method::PUT, &format!("/Users/{id}"), &t, whole).await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "mutability"));
    // A rename moves the user and keeps its id.
    let r = scim(
        f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "anna@acme.example"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert!(
        f.store
            .get_user("ann@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .get_user("anna@acme.example")
            .await
            .unwrap()
            .is_some()
    );
    let r = scim(f, Method::GET, &format!("/Users/{id}"), &t, Value::Null).await;
    assert_eq!(r.json()["userName"], "anna@acme.example");
    // Delete.
    let r = scim(f, Method::DELETE, &format!("/Users/{id}"), &t, Value::Null).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        f.store
            .get_user("anna@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    let r = scim(f, Method::GET, &format!("/Users/{id}"), &t, Value::Null).await;
    assert_eq!(r.status, 404);
    assert_eq!(err_type(&r), "");
    let r = scim(f, Method::DELETE, &format!("/Users/{id}"), &t, Value::Null).await;
    assert_eq!(r.status, 404);
}

on_both_stores!(scim_user_lifecycle, lifecycle_on);
async fn lifecycle_on(f: Fleet) {
    lifecycle(&f).await;
}

async fn redis_fleet(url: &str, prefix: &str) -> Fleet {
    let store = samlgate::store::redis::RedisStore::standalone(url, prefix)
        .await
        .unwrap();
    fleet_on(Arc::new(store), TestClock::new(), bare_config()).await
}

on_both_stores!(
    scim_filters_paging_and_attribute_projection,
    scim_filters_paging_and_attribute_projection_on
);
async fn scim_filters_paging_and_attribute_projection_on(f: Fleet) {
    let (_a, t) = setup(&f).await;
    for (i, name) in ["amy", "bob", "cat", "dan", "eve"].iter().enumerate() {
        let mut u = new_user(&format!("{name}@acme.example"));
        u["displayName"] = json!(format!("{} Person", name.to_uppercase()));
        u["active"] = json!(i % 2 == 0);
        let r = scim(&f, Method::POST, "/Users", &t, u).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let names = |r: &Reply| -> Vec<String> {
        r.json()["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                u["userName"]
                    .as_str()
                    .unwrap()
                    .split('@')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let q = |filter: &str| format!("/Users?filter={}", samlgate::gateway::url_encode(filter));
    for (filter, want) in [
        (r#"userName sw "b""#, vec!["bob"]),
        (
            r#"displayName co "person""#,
            vec!["amy", "bob", "cat", "dan", "eve"],
        ),
        (r#"active eq false"#, vec!["bob", "dan"]),
        (
            r#"active eq true and userName ew "acme.example""#,
            vec!["amy", "cat", "eve"],
        ),
        (
            r#"userName eq "amy@acme.example" or displayName eq "EVE Person""#,
            vec!["amy", "eve"],
        ),
        (r#"emails.value eq "cat@acme.example""#, vec!["cat"]),
        (r#"emails[type eq "work" and value sw "d"]"#, vec!["dan"]),
        (r#"externalId eq "ext-eve@acme.example""#, vec!["eve"]),
        (r#"externalId eq "EXT-eve@acme.example""#, vec![]),
        (r#"title pr"#, vec![]),
        (r#"not (active eq true)"#, vec!["bob", "dan"]),
    ] {
        let r = scim(&f, Method::GET, &q(filter), &t, Value::Null).await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text());
        assert_eq!(names(&r), want, "{filter}");
        assert_eq!(r.json()["totalResults"], want.len(), "{filter}");
    }
    // Paging: 1-based startIndex, count, totalResults of the whole set.
    let r = scim(
        &f,
        Method::GET,
        "/Users?startIndex=2&count=2",
        &t,
        Value::Null,
    )
    .await;
    let v = r.json();
    assert_eq!(
        (
            v["totalResults"].clone(),
            v["startIndex"].clone(),
            v["itemsPerPage"].clone()
        ),
        (json!(5), json!(2), json!(2))
    );
    assert_eq!(names(&r), ["bob", "cat"]);
    let r = scim(
        &f,
        Method::GET,
        "/Users?startIndex=5&count=10",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(names(&r), ["eve"]);
    let r = scim(&f, Method::GET, "/Users?count=0", &t, Value::Null).await;
    assert_eq!(
        (r.json()["totalResults"].clone(), names(&r).len()),
        (json!(5), 0)
    );
    let r = scim(
        &f,
        Method::GET,
        "/Users?startIndex=0&count=-3",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["startIndex"], 1);
    // attributes / excludedAttributes
    let r = scim(
        &f,
        Method::GET,
        "/Users?attributes=userName&count=1",
        &t,
        Value::Null,
    )
    .await;
    let u = &r.json()["Resources"][0];
    let mut keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "schemas", "userName"]);
    let r = scim(
        &f,
        Method::GET,
        "/Users?excludedAttributes=emails,meta&count=1",
        &t,
        Value::Null,
    )
    .await;
    let u = &r.json()["Resources"][0];
    assert!(u.get("emails").is_none() && u.get("meta").is_none() && u.get("userName").is_some());
    // POST .search
    let r = scim(
        &f,
        Method::POST,
        "/Users/.search",
        &t,
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName sw \"c\"", "attributes": ["userName"]}),
    )
    .await;
    assert_eq!(names(&r), ["cat"]);
    // Bad filters: 400 invalidFilter.
    for bad in [
        r#"userName zz "x""#,
        r#"userName eq"#,
        r#"(userName eq "x""#,
    ] {
        let r = scim(&f, Method::GET, &q(bad), &t, Value::Null).await;
        assert_eq!(
            (r.status, err_type(&r).as_str()),
            (400, "invalidFilter"),
            "{bad}"
        );
    }
    let r = scim(&f, Method::GET, "/Users?count=abc", &t, Value::Null).await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidValue"));
}

on_both_stores!(scim_entra_id_quirks, scim_entra_id_quirks_on);
async fn scim_entra_id_quirks_on(f: Fleet) {
    let (_a, t) = setup(&f).await;
    // Entra ID filters on userName before each create.
    let r = scim(
        &f,
        Method::GET,
        "/Users?filter=userName+eq+%22erin%40acme.example%22",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["totalResults"], 0);
    // Creates with booleans as strings.
    let mut u = new_user("erin@acme.example");
    u["active"] = json!("True");
    let r = scim(&f, Method::POST, "/Users", &t, u).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["active"], true);
    // PATCH with capitalised ops, without a path and with dotted keys, and
    // "False" as a string.
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [
            {"op": "Replace", "value": {"name.givenName": "Erin", "name.familyName": "Ng", "displayName": "Erin Ng"}},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Finance"},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "erin@acme.example"},
            {"op": "Replace", "path": "active", "value": "False"}
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"]["givenName"], "Erin");
    assert_eq!(v["name"]["familyName"], "Ng");
    assert_eq!(v[ENTERPRISE]["department"], "Finance");
    assert_eq!(v["active"], false);
    let stored = f
        .store
        .get_user("erin@acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, samlgate::store::UserStatus::Deactivated);
    assert_eq!(stored.department, "Finance");
    // Reactivated with "True".
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "True"}]}),
    )
    .await;
    assert_eq!(r.json()["active"], true);
    // An unknown op is refused, and changes nothing.
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": false}, {"op": "Merge", "value": {}}]}),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidSyntax"));
    let stored = f
        .store
        .get_user("erin@acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, samlgate::store::UserStatus::Active);
}

on_both_stores!(scim_okta_quirks, scim_okta_quirks_on);
async fn scim_okta_quirks_on(f: Fleet) {
    let (_a, t) = setup(&f).await;
    let u = create(&f, &t, "otto@acme.example").await;
    let id = u["id"].as_str().unwrap().to_owned();
    // Okta deactivates with PATCH {"active": false} (no path).
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], false);
    // Okta's PUT of the whole user (without our extension) keeps the
    // license and reactivates.
    let mut whole = u.clone();
    whole.as_object_mut().unwrap().remove(OURS);
    whole["active"] = json!(true);
    whole["name"]["givenName"] = json!("Otto");
    let r = scim(&f, Method::PUT, &format!("/Users/{id}"), &t, whole).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], true);
    assert_eq!(r.json()["name"]["givenName"], "Otto");
    assert_eq!(r.json()[OURS]["license"], "basic");
    // Okta's paged probe.
    let r = scim(
        &f,
        Method::GET,
        "/Users?filter=userName%20eq%20%22otto%40acme.example%22&startIndex=1&count=100",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["totalResults"], 1);
    assert_eq!(r.json()["itemsPerPage"], 1);
}

on_both_stores!(
    scim_creates_follow_the_accounts_rules,
    scim_creates_follow_the_accounts_rules_on
);
async fn scim_creates_follow_the_accounts_rules_on(f: Fleet) {
    let (_a, t) = setup(&f).await;
    // Outside the associated domains: pending verification, active stays true.
    let r = scim(
        &f,
        Method::POST,
        "/Users",
        &t,
        new_user("pat@gmail.example"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["active"], true);
    assert_eq!(r.json()[OURS]["status"], "pending_verification");
    // Deactivating and reactivating keeps it pending.
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for active in [false, true] {
        let r = scim(
            &f,
            Method::PATCH,
            &format!("/Users/{id}"),
            &t,
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": active}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let stored = f
        .store
        .get_user("pat@gmail.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        samlgate::store::UserStatus::PendingVerification
    );
    // Licensed through our extension: a vanity name.
    let mut u = new_user("lena.licensed@acme.example");
    u["schemas"] = json!([CORE, OURS]);
    u[OURS] = json!({"license": "licensed", "features": ["recording"]});
    let r = scim(&f, Method::POST, "/Users", &t, u).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()[OURS]["license"], "licensed");
    assert_eq!(r.json()[OURS]["vanityName"], "lena.licensed");
    assert_eq!(r.json()[OURS]["features"], json!(["recording"]));
    // A bad license: invalidValue.
    let mut u = new_user("x@acme.example");
    u[OURS] = json!({"license": "platinum"});
    let r = scim(&f, Method::POST, "/Users", &t, u).await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidValue"));
    // Another account's user, or its associated domain: 409 uniqueness.
    let g = token(&f, "globex", "scim").await;
    let r = scim_on(
        &f,
        "globex.test",
        Method::POST,
        "/Users",
        &g,
        new_user("gus@globex.example"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = scim(
        &f,
        Method::POST,
        "/Users",
        &t,
        new_user("gus@globex.example"),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (409, "uniqueness"));
    let r = scim(
        &f,
        Method::POST,
        "/Users",
        &t,
        new_user("new@globex.example"),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (409, "uniqueness"));
    // ... and it is not visible here.
    let r = scim(
        &f,
        Method::GET,
        "/Users?filter=userName+eq+%22gus%40globex.example%22",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["totalResults"], 0);
    // Missing userName, a bad email, bad JSON, a body too large.
    let r = scim(&f, Method::POST, "/Users", &t, json!({"schemas": [CORE]})).await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidValue"));
    let r = scim(&f, Method::POST, "/Users", &t, new_user("not an email")).await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidValue"));
    let r = request(
        Method::POST,
        &format!("{}/scim/v2/Users", f.public),
        &[("host", HOST), ("authorization", &format!("Bearer {t}"))],
        "{not json",
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidSyntax"));
    let mut big = new_user("big@acme.example");
    big["displayName"] = json!("x".repeat(300 * 1024));
    let r = scim(&f, Method::POST, "/Users", &t, big).await;
    assert_eq!(r.status, 413);
    assert!(
        f.store
            .get_user("big@acme.example")
            .await
            .unwrap()
            .is_none()
    );
}

on_both_stores!(
    scim_two_concurrent_creates_of_one_user_name_one_wins,
    scim_two_concurrent_creates_of_one_user_name_one_wins_on
);
async fn scim_two_concurrent_creates_of_one_user_name_one_wins_on(f: Fleet) {
    let (_a, t) = setup(&f).await;
    for round in 0..5 {
        let email = format!("race{round}@acme.example");
        let (a, b) = tokio::join!(
            scim(&f, Method::POST, "/Users", &t, new_user(&email)),
            scim(&f, Method::POST, "/Users", &t, new_user(&email)),
        );
        let mut s = [a.status, b.status];
        s.sort_unstable();
        assert_eq!(s, [201, 409], "{} / {}", a.text(), b.text());
        // The winner's id finds the user.
        let winner = if a.status == 201 { a } else { b };
        let id = winner.json()["id"].as_str().unwrap().to_owned();
        let r = scim(&f, Method::GET, &format!("/Users/{id}"), &t, Value::Null).await;
        assert_eq!(r.status, 200);
    }
}

/// Signs `email` in on acme and checks the cookie works (and is cached).
async fn signed_in(f: &Fleet, a: &TestIdp, email: &str) -> String {
    let r = f.login(HOST, a, email).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    for _ in 0..3 {
        let r = f
            .on(
                HOST,
                "/x",
                &[("cookie", &cookie), ("accept", "application/json")],
            )
            .await;
        assert_eq!(r.status, 200);
    }
    cookie
}

async fn proxied(f: &Fleet, cookie: &str) -> u16 {
    f.on(
        HOST,
        "/x",
        &[("cookie", cookie), ("accept", "application/json")],
    )
    .await
    .status
}

on_both_stores!(
    scim_deactivation_and_delete_end_live_sessions_before_the_answer,
    scim_deactivation_and_delete_end_live_sessions_before_the_answer_on
);
async fn scim_deactivation_and_delete_end_live_sessions_before_the_answer_on(f: Fleet) {
    let (a, t) = setup(&f).await;
    let u = create(&f, &t, "dee@acme.example").await;
    let id = u["id"].as_str().unwrap().to_owned();
    let cookie = signed_in(&f, &a, "dee@acme.example").await;
    let started = Instant::now();
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Right after the answer (well within recheck_secs): gone.
    assert_eq!(proxied(&f, &cookie).await, 401);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The next login is refused; reactivation lets them in again.
    let r = f.login(HOST, &a, "dee@acme.example").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": true}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let cookie = signed_in(&f, &a, "dee@acme.example").await;
    // DELETE ends it too.
    let r = scim(&f, Method::DELETE, &format!("/Users/{id}"), &t, Value::Null).await;
    assert_eq!(r.status, 204);
    assert_eq!(proxied(&f, &cookie).await, 401);
    // Other users' sessions are untouched.
    let other = signed_in(&f, &a, "olga@acme.example").await;
    let o = scim(
        &f,
        Method::GET,
        "/Users?filter=userName+eq+%22olga%40acme.example%22",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(o.json()["totalResults"], 1, "a JIT user is visible to SCIM");
    let u2 = create(&f, &t, "zed@acme.example").await;
    let zed = signed_in(&f, &a, "zed@acme.example").await;
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{}", u2["id"].as_str().unwrap()),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(proxied(&f, &zed).await, 401);
    assert_eq!(proxied(&f, &other).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_deprovisioning_on_one_replica_ends_the_session_held_on_another() {
    let (url, _g) = super::redis_support::standalone();
    let prefix = super::redis_support::unique_prefix("scim2");
    let r1 = redis_fleet(&url, &prefix).await;
    let r2 = redis_fleet(&url, &prefix).await;
    let (a, t) = setup(&r1).await;
    // The second replica learns of the account.
    let deadline = Instant::now() + Duration::from_secs(10);
    while scim(&r2, Method::GET, "/Users", &t, Value::Null)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "replica 2 never served acme");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, how) in ["deactivate", "delete", "admin-api"].iter().enumerate() {
        let email = format!("roam{i}@acme.example");
        let u = create(&r2, &t, &email).await;
        let id = u["id"].as_str().unwrap().to_owned();
        // Signed in and cached on replica 1.
        let cookie = signed_in(&r1, &a, &email).await;
        let r = match *how {
            "deactivate" => {
                scim(
                    &r2,
                    Method::PATCH,
                    &format!("/Users/{id}"),
                    &t,
                    json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
                )
                .await
            }
            "delete" => scim(&r2, Method::DELETE, &format!("/Users/{id}"), &t, Value::Null).await,
            _ => {
                r2.api(
                    Method::PATCH,
                    &format!("/api/v2/accounts/acme/users/{email}"),
                    ADMIN,
                    json!({"status": "deactivated"}),
                )
                .await
            }
        };
        assert!(r.status == 200 || r.status == 204, "{how}: {}", r.text());
        // At once on the other replica.
        assert_eq!(proxied(&r1, &cookie).await, 401, "{how}");
    }
}

on_both_stores!(
    scim_groups_feed_the_mapping_rules,
    scim_groups_feed_the_mapping_rules_on
);
async fn scim_groups_feed_the_mapping_rules_on(f: Fleet) {
    let (a, t) = setup(&f).await;
    let u = create(&f, &t, "gil@acme.example").await;
    let uid = u["id"].as_str().unwrap().to_owned();
    let v = create(&f, &t, "hal@acme.example").await;
    let vid = v["id"].as_str().unwrap().to_owned();
    assert_eq!(u[OURS]["license"], "basic");
    // A group the account's rule licenses (`groups contains Meetings-Licensed`).
    let r = scim(
        &f,
        Method::POST,
        "/Groups",
        &t,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Meetings-Licensed", "members": [{"value": uid}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gid = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["members"][0]["display"], "gil@acme.example");
    let stored = f.store.get_user("gil@acme.example").await.unwrap().unwrap();
    assert_eq!(stored.license, samlgate::mapping::License::Licensed);
    assert!(stored.vanity.is_some());
    assert!(stored.groups.contains(&"Meetings-Licensed".to_owned()));
    let r = scim(&f, Method::GET, &format!("/Users/{uid}"), &t, Value::Null).await;
    assert_eq!(r.json()["groups"][0]["value"], gid.as_str());
    assert_eq!(r.json()["groups"][0]["display"], "Meetings-Licensed");
    // Duplicate displayName: 409.
    let r = scim(
        &f,
        Method::POST,
        "/Groups",
        &t,
        json!({"displayName": "meetings-licensed"}),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (409, "uniqueness"));
    // Over the member cap: 400, before any member is looked up.
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"value": format!("u{i}")}))
        .collect();
    let r = scim(
        &f,
        Method::POST,
        "/Groups",
        &t,
        json!({"displayName": "Huge", "members": many}),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidValue"));
    // A member that is no user of the account: 400.
    let r = scim(
        &f,
        Method::POST,
        "/Groups",
        &t,
        json!({"displayName": "X", "members": [{"value": "nope"}]}),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "invalidValue"));
    // Entra ID adds members with PATCH "Add" path "members".
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": vid}]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 2);
    assert_eq!(
        f.store
            .get_user("hal@acme.example")
            .await
            .unwrap()
            .unwrap()
            .license,
        samlgate::mapping::License::Licensed
    );
    // Entra ID removes with `path: members` and the members as the value;
    // Okta renames with the unchanged id beside the new name.
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": vid}]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["members"][0]["value"], uid.as_str());
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "value": {"id": gid, "displayName": "Meetings-Licensed-2"}},
            {"op": "replace", "value": {"id": gid, "displayName": "Meetings-Licensed"}},
            {"op": "add", "path": "members", "value": [{"value": vid}]}
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["displayName"], "Meetings-Licensed");
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"id": "another"}}]}),
    )
    .await;
    assert_eq!((r.status, err_type(&r).as_str()), (400, "mutability"));
    // Filters on groups and users by group.
    let r = scim(
        &f,
        Method::GET,
        "/Groups?filter=displayName+eq+%22Meetings-Licensed%22",
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["totalResults"], 1);
    let r = scim(
        &f,
        Method::GET,
        &format!(
            "/Users?filter={}",
            samlgate::gateway::url_encode(&format!("groups.value eq \"{gid}\""))
        ),
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["totalResults"], 2, "{}", r.text());
    // Removing a member with a value filter takes the license back.
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": format!("members[value eq \"{uid}\"]")}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = f.store.get_user("gil@acme.example").await.unwrap().unwrap();
    assert_eq!(stored.license, samlgate::mapping::License::Basic);
    assert!(!stored.groups.contains(&"Meetings-Licensed".to_owned()));
    // A group's members feed the rules at login too: with the license
    // updated at every login, hal signs in with an assertion that names no
    // group and stays licensed.
    let r = f
        .patch(
            "acme",
            json!({"provisioning": {"update_on_login": ["first_name", "groups", "license"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut params = f.params(HOST, "hal@acme.example", None);
    params.attributes.retain(|(n, _)| n != "groups");
    let b64 = a.idp.response_b64(&params).unwrap();
    let r = f.post_acs(HOST, &b64).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    let r = f
        .on(
            HOST,
            "/x",
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await;
    assert_eq!(r.json()["headers"]["x-samlgate-license"], "licensed");
    assert!(
        r.json()["headers"]["x-samlgate-groups"]
            .as_str()
            .unwrap()
            .contains("Meetings-Licensed"),
        "{}",
        r.text()
    );
    // gil, no longer in the group, signs in the same way: basic.
    let mut params = f.params(HOST, "gil@acme.example", None);
    params.attributes.retain(|(n, _)| n != "groups");
    let r = f
        .post_acs(HOST, &a.idp.response_b64(&params).unwrap())
        .await;
    let cookie = cookie_of(&r);
    let r = f
        .on(
            HOST,
            "/x",
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await;
    assert_eq!(r.json()["headers"]["x-samlgate-license"], "basic");
    // PUT replaces the members; DELETE of the group takes hal's license back.
    let r = scim(
        &f,
        Method::PUT,
        &format!("/Groups/{gid}"),
        &t,
        json!({"displayName": "Meetings-Licensed", "members": [{"value": vid}, {"value": uid}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = scim(
        &f,
        Method::DELETE,
        &format!("/Groups/{gid}"),
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);
    for e in ["gil@acme.example", "hal@acme.example"] {
        let u = f.store.get_user(e).await.unwrap().unwrap();
        assert_eq!(u.license, samlgate::mapping::License::Basic, "{e}");
    }
    assert_eq!(
        scim(&f, Method::GET, &format!("/Groups/{gid}"), &t, Value::Null)
            .await
            .status,
        404
    );
}

on_both_stores!(
    scim_discovery_says_what_is_supported,
    scim_discovery_says_what_is_supported_on
);
async fn scim_discovery_says_what_is_supported_on(f: Fleet) {
    let (_a, t) = setup(&f).await;
    let r = scim(&f, Method::GET, "/ServiceProviderConfig", &t, Value::Null).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["patch"]["supported"], true);
    assert_eq!(v["bulk"]["supported"], false);
    assert_eq!(v["filter"]["supported"], true);
    assert_eq!(v["sort"]["supported"], false);
    assert_eq!(v["etag"]["supported"], true);
    assert_eq!(v["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let r = scim(&f, Method::GET, "/ResourceTypes", &t, Value::Null).await;
    let v = r.json();
    let ids: Vec<&str> = v["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["User", "Group"]);
    let r = scim(&f, Method::GET, "/ResourceTypes/User", &t, Value::Null).await;
    assert_eq!(r.json()["schemaExtensions"][1]["schema"], OURS);
    let r = scim(&f, Method::GET, "/Schemas", &t, Value::Null).await;
    assert_eq!(r.json()["totalResults"], 4);
    let r = scim(
        &f,
        Method::GET,
        &format!("/Schemas/{OURS}"),
        &t,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    let names: Vec<String> = r.json()["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"license".to_owned()) && names.contains(&"features".to_owned()));
    assert_eq!(
        scim(&f, Method::GET, "/Schemas/urn:nope", &t, Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        scim(&f, Method::POST, "/Bulk", &t, json!({})).await.status,
        501
    );
    assert_eq!(
        scim(
            &f,
            Method::DELETE,
            "/ServiceProviderConfig",
            &t,
            Value::Null
        )
        .await
        .status,
        405
    );
    // Discovery is served without a token (it says only what is
    // supported); the resources are not.
    for d in ["/ServiceProviderConfig", "/Schemas", "/ResourceTypes/User"] {
        assert_eq!(
            scim(&f, Method::GET, d, "", Value::Null).await.status,
            200,
            "{d}"
        );
    }
    assert_eq!(
        scim(&f, Method::GET, "/Users", "", Value::Null)
            .await
            .status,
        401
    );
    assert_eq!(
        scim(&f, Method::GET, "/Groups", "", Value::Null)
            .await
            .status,
        401
    );
    assert_eq!(
        scim(&f, Method::DELETE, "/Schemas", "", Value::Null)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_on_a_store_outage_is_503_and_writes_nothing() {
    let redis = super::redis_support::RedisServer::start();
    let f = redis_fleet(&redis.url(), "scim-outage").await;
    let (_a, t) = setup(&f).await;
    let u = create(&f, &t, "out@acme.example").await;
    let id = u["id"].as_str().unwrap().to_owned();
    // A store that stalls: every SCIM call answers 503 in the SCIM error
    // schema within the store's timeouts.
    redis.pause();
    let started = Instant::now();
    let r = scim(&f, Method::POST, "/Users", &t, new_user("new@acme.example")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(err_type(&r), "");
    let r = scim(
        &f,
        Method::PATCH,
        &format!("/Users/{id}"),
        &t,
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]}),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    redis.resume();
    // Nothing half-written: the user is as it was; the create never happened.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = scim(&f, Method::GET, &format!("/Users/{id}"), &t, Value::Null).await;
        if r.status == 200 {
            assert_eq!(r.json()["active"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store never came back: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        f.store
            .get_user("new@acme.example")
            .await
            .unwrap()
            .is_none()
    );
}

on_both_stores!(
    scim_groups_forget_users_deleted_elsewhere_and_die_with_their_account,
    scim_groups_forget_users_deleted_elsewhere_and_die_with_their_account_on
);
async fn scim_groups_forget_users_deleted_elsewhere_and_die_with_their_account_on(f: Fleet) {
    let (a, t) = setup(&f).await;
    let u = create(&f, &t, "kim@acme.example").await;
    let v = create(&f, &t, "lou@acme.example").await;
    let r = scim(
        &f,
        Method::POST,
        "/Groups",
        &t,
        json!({"displayName": "Staff", "members": [{"value": u["id"]}, {"value": v["id"]}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gid = r.json()["id"].as_str().unwrap().to_owned();
    // Deleted through the admin API: no longer listed as a member.
    let r = f
        .api(
            Method::DELETE,
            "/api/v2/accounts/acme/users/kim@acme.example",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = scim(&f, Method::GET, &format!("/Groups/{gid}"), &t, Value::Null).await;
    let members = r.json()["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["value"], v["id"]);
    // The account deleted with its users and made again: no group is left.
    let r = f
        .api(
            Method::DELETE,
            "/api/v2/accounts/acme?purge=true",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(f.put("acme", &doc("acme", HOST, &a)).await.status, 201);
    let t = token(&f, "acme", "scim").await;
    let r = scim(&f, Method::GET, "/Groups", &t, Value::Null).await;
    assert_eq!(r.json()["totalResults"], 0, "{}", r.text());
    let r = scim(&f, Method::GET, "/Users", &t, Value::Null).await;
    assert_eq!(r.json()["totalResults"], 0, "{}", r.text());
    assert!(
        f.store
            .get_doc(
                samlgate::store::DocSpace::ScimUser,
                v["id"].as_str().unwrap()
            )
            .await
            .unwrap()
            .is_none()
    );
}
