//! Config: unknown keys refused, every error names its key, all reported at once.

use crate::DefaultAccount;
use std::path::Path;

use samlgate::config::{Config, ConfigError};

use super::support::fixtures;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, &fixtures(), &|_| None)
}

const MIN: &str = r#"
[sp]
entity_id = "https://sp.example.com/saml/metadata"
acs_url = "https://sp.example.com/saml/acs"
[idp]
metadata_file = "idp-metadata.xml"
"#;

#[test]
fn minimal_config_loads_with_safe_defaults() {
    let c = load(MIN).unwrap();
    assert_eq!(c.security.clock_skew_secs, 180);
    assert!(!c.security.insecure_allow_sha1);
    assert!(c.acct().idp.allow_idp_initiated);
    assert_eq!(c.acct().idp.metadata.signing_certs.len(), 3);
    assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9090");
}

#[test]
fn unknown_key_is_refused_with_its_name() {
    let err = load(&format!("{MIN}\n[security]\nclock_skew = 5\n")).unwrap_err();
    assert_eq!(err.code(), "config_syntax");
    assert!(err.to_string().contains("clock_skew"), "{err}");
}

#[test]
fn all_problems_are_reported_together_with_key_paths() {
    let text = r#"
[sp]
acs_url = "ftp://x"
[idp]
metadata_file = "missing.xml"
[provisioning]
mode = "sometimes"
[[mapping.rules]]
name = "bad"
attribute = "memberOf"
regex = "("
license = "licensed"
"#;
    let ConfigError::Invalid { problems, .. } = load(text).unwrap_err() else {
        panic!("expected Invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "sp.entity_id",
        "sp.acs_url",
        "idp.metadata_file",
        "provisioning.mode",
        "mapping.rules[0].regex",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn metadata_without_signing_certificate_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let md = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.org">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.org/sso"/>
  </md:IDPSSODescriptor></md:EntityDescriptor>"#;
    std::fs::write(dir.path().join("md.xml"), md).unwrap();
    let text = MIN.replace("idp-metadata.xml", "md.xml");
    let err = Config::from_toml(&text, dir.path(), &|_| None).unwrap_err();
    assert!(err.to_string().contains("no signing certificate"), "{err}");
    assert!(err.to_string().contains("idp.metadata_file"), "{err}");
}

#[test]
fn metadata_with_doctype_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(fixtures().join("idp-metadata.xml")).unwrap();
    let bad = good.replacen(
        "<?xml version=\"1.0\"?>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"x\">]>",
        1,
    );
    std::fs::write(dir.path().join("md.xml"), bad).unwrap();
    let err = Config::from_toml(
        &MIN.replace("idp-metadata.xml", "md.xml"),
        dir.path(),
        &|_| None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("DOCTYPE"), "{err}");
}

#[test]
fn admin_tokens_come_from_the_environment_too() {
    let c = Config::from_toml(MIN, &fixtures(), &|k| {
        (k == "SAMLGATE_ADMIN_TOKENS")
            .then(|| "0123456789abcdef0123, fedcba9876543210fedc".to_string())
    })
    .unwrap();
    assert_eq!(c.admin_tokens.len(), 2);
    let err = Config::from_toml(MIN, &fixtures(), &|k| {
        (k == "SAMLGATE_ADMIN_TOKENS").then(|| "short".to_string())
    })
    .unwrap_err();
    assert!(err.to_string().contains("admin.tokens[0]"), "{err}");
}

#[test]
fn mapping_config_errors_name_the_rule() {
    let text = format!(
        "{MIN}\n[mapping.email]\nfrom = []\ntransforms = [\"shout\"]\n[[mapping.rules]]\nattribute = \"x\"\nequals = \"a\"\ncontains = \"b\"\nlicense = \"gold\"\n"
    );
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("mapping.email.from"), "{err}");
    assert!(err.contains("mapping.email.transforms[0]"), "{err}");
    assert!(err.contains("mapping.rules[0]"), "{err}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    // Loading through a path in another folder than the working directory.
    let c = Config::load(Path::new(&fixtures().join("config.toml"))).unwrap();
    assert!(c.acct().sp.key.is_some());
}

#[test]
fn upstream_url_gives_host_and_base_path_or_is_refused() {
    for (url, authority, base) in [
        ("http://127.0.0.1:3000", "127.0.0.1:3000", ""),
        ("http://127.0.0.1:3000/", "127.0.0.1:3000", ""),
        ("http://meet.internal", "meet.internal", ""),
        (
            "http://meet.internal:8080/app/",
            "meet.internal:8080",
            "/app",
        ),
        ("http://[::1]:8080/a/b", "[::1]:8080", "/a/b"),
    ] {
        let c = load(&format!("{MIN}\n[upstream]\nurl = \"{url}\"\n")).unwrap();
        assert_eq!(c.upstream.target(), (authority, base), "{url}");
    }
    for url in [
        "https://meet.internal",
        "http://",
        "http://meet.internal/?q=1",
        "meet.internal:80",
        "http://user@meet.internal",
        "http://user:secret@meet.internal:8080/app",
        "http://meet.internal/app#frag",
    ] {
        let err = load(&format!("{MIN}\n[upstream]\nurl = \"{url}\"\n")).unwrap_err();
        assert!(err.to_string().contains("upstream.url"), "{url}: {err}");
    }
}
