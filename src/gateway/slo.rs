//! Single Logout (SAML 2.0 Core §3.7, Profiles §4.4), both directions, per
//! account. An account takes part when it has an SP key (`sp.key_file`,
//! `sp.cert_file`): its SP metadata then advertises `SingleLogoutService`
//! at `/saml/slo` (HTTP-Redirect and HTTP-POST), and every message samlgate
//! sends is signed (RSA-SHA256).
//!
//! * **SP-initiated**: `/saml/logout` ends the local session, then, when the
//!   IdP's metadata has a SingleLogoutService, sends a signed LogoutRequest
//!   (the NameID as received at login, the SessionIndex) and remembers its
//!   id; the IdP's LogoutResponse at `/saml/slo` is verified and answered
//!   with a "signed out" page (or a same-origin RelayState).
//! * **IdP-initiated**: a signed LogoutRequest at `/saml/slo` ends every
//!   session of its NameID on this account (only the SessionIndex's, when
//!   given), on every replica, then a signed LogoutResponse goes back.
//!
//! Each decision is one audit event (`slo_*`).

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::pages::{esc, html, refusal, refusal_page};
use super::{Gateway, form_pairs, redirect, safe_return_path, tracking_id};
use crate::account::Account;
use crate::config::Config;
use crate::devidp::random_id;
use crate::saml::logout::{self, Binding, Kind};
use crate::saml::metadata::BINDING_REDIRECT;
use crate::saml::{NameId, SamlError};
use crate::server::Body;
use crate::store::Ephemeral;

/// Largest POSTed logout message body.
const MAX_POST: usize = 512 * 1024;
/// How long a LogoutRequest samlgate sent stays answerable.
const LOGOUT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// `/saml/slo` of `acct` (the ACS's origin, the gateway's path prefix).
pub fn slo_url(cfg: &Config, acct: &Account) -> String {
    format!(
        "{}{}/slo",
        crate::provisioning::origin_of(&acct.sp.acs_url),
        cfg.path_prefix
    )
}

/// Whether `acct` takes part in Single Logout (it has an SP key to sign
/// with).
pub fn enabled(acct: &Account) -> bool {
    acct.sp.key.is_some()
}

/// The key outstanding SP-initiated logouts are stored under.
fn outstanding(acct: &Account, id: &str) -> String {
    acct.scoped(&format!("logout:{id}")).into_owned()
}

/// Sends `xml` as `param` to the IdP's SLO endpoint: a signed redirect on
/// HTTP-Redirect, an auto-submitting form with a signed message on
/// HTTP-POST.
fn send(
    acct: &Account,
    endpoint: &crate::saml::metadata::Endpoint,
    to: &str,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
) -> Result<Response<Body>, String> {
    let key = acct.sp.key.as_ref().ok_or("no SP key")?;
    if endpoint.binding == BINDING_REDIRECT {
        let url = logout::redirect_url(to, param, xml, relay_state, key)?;
        Ok(redirect(StatusCode::FOUND, &url))
    } else {
        let signed = logout::sign_enveloped(xml, key)?;
        let mut r = html(StatusCode::OK, "Signing out", "");
        *r.body_mut() = crate::server::full(logout::post_form(to, param, &signed, relay_state));
        if let Ok(csp) = HeaderValue::from_str(&logout::post_form_csp()) {
            r.headers_mut().insert("content-security-policy", csp);
        }
        Ok(r)
    }
}

/// A logout message refused: what happened, the code and a tracking id.
fn logout_refusal(
    status: StatusCode,
    code: &str,
    tracking_id: &str,
    login_path: &str,
) -> Response<Body> {
    refusal_page(
        status,
        (
            "Sign-out message refused",
            "A sign-out message from your identity provider could not be accepted, so nothing was signed out by it. Close the browser to be sure you are signed out.",
            "Sign in",
        ),
        code,
        tracking_id,
        login_path,
    )
}

fn signed_out_page(cfg: &Config, note: &str) -> Response<Body> {
    html(
        StatusCode::OK,
        "Signed out",
        &format!(
            "<p>You are signed out of meetings.{note}</p><p><a href=\"{}/login\">Sign in again</a></p>",
            esc(&cfg.path_prefix)
        ),
    )
}

impl Gateway {
    /// `/saml/logout`: ends the local session; then, when the account and
    /// its IdP do Single Logout and the session knows its NameID, starts
    /// SP-initiated SLO.
    pub(super) async fn logout(
        &self,
        cfg: &Config,
        acct: &Account,
        req: &Request<Incoming>,
    ) -> Response<Body> {
        let name = self.cookie_name(cfg);
        let ended = match self.session_cookie(req, &name) {
            Some(id) => match self.sessions.end_on(self.store.as_ref(), acct, id).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot delete the session at logout");
                    None
                }
            },
            None => None,
        };
        let q = form_pairs(req.uri().query().unwrap_or("").as_bytes());
        let target = q
            .iter()
            .find(|(k, _)| k == "return_to")
            .and_then(|(_, v)| safe_return_path(v));
        let slo = match (&ended, acct.idp.metadata.slo_endpoint()) {
            (Some(d), Some(ep)) if enabled(acct) && d.name_id.is_some() => Some((d, ep)),
            _ => None,
        };
        let Some((data, ep)) = slo else {
            tracing::info!(target: "audit", event = "logout", account = %acct.id, email = ?ended.as_ref().map(|d| &d.email), slo = false);
            let mut r = match target {
                Some(t) => redirect(StatusCode::SEE_OTHER, &t),
                None => signed_out_page(cfg, " Your identity provider may still remember you."),
            };
            self.set_cookie(&mut r, cfg, "", 0);
            return r;
        };
        let id = random_id();
        let after = target.unwrap_or_default();
        if let Err(e) = self
            .store
            .put_ephemeral(
                Ephemeral::RequestId,
                &outstanding(acct, &id),
                after.as_bytes(),
                LOGOUT_TTL,
            )
            .await
        {
            // The local session is gone already; the IdP's is not ended.
            tracing::error!(error = %e, "cannot store the LogoutRequest id; single logout not started");
            let mut r = signed_out_page(
                cfg,
                " Your identity provider could not be signed out (the store is unavailable).",
            );
            self.set_cookie(&mut r, cfg, "", 0);
            return r;
        }
        let name_id = NameId {
            value: data.name_id.clone().unwrap_or_default(),
            format: data.name_id_format.clone(),
            name_qualifier: data.name_qualifier.clone(),
            sp_name_qualifier: data.sp_name_qualifier.clone(),
        };
        let xml = logout::build_request(
            &id,
            self.clock.now(),
            &ep.location,
            &acct.sp.entity_id,
            &name_id,
            data.session_index.as_deref(),
        );
        match send(acct, ep, &ep.location, "SAMLRequest", &xml, None) {
            Ok(mut r) => {
                tracing::info!(target: "audit", event = "logout", account = %acct.id, email = %data.email, slo = true, request_id = %id);
                self.set_cookie(&mut r, cfg, "", 0);
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the LogoutRequest");
                let mut r = signed_out_page(
                    cfg,
                    " Your identity provider could not be signed out (signing failed).",
                );
                self.set_cookie(&mut r, cfg, "", 0);
                r
            }
        }
    }

    /// `/saml/slo`: a LogoutRequest from the IdP, or its LogoutResponse to
    /// ours, on HTTP-Redirect (GET) or HTTP-POST.
    pub(super) async fn slo(
        &self,
        cfg: &Config,
        acct: &Account,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let login_path = format!("{}/login", cfg.path_prefix);
        let tracking = tracking_id();
        let store_down = |e: &crate::store::StoreError| {
            self.metrics.store_error();
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                &tracking,
                &login_path,
            )
        };
        let refuse = |status: StatusCode, e: &SamlError| {
            tracing::info!(target: "audit", event = "slo_refused", account = %acct.id, code = e.code(), reason = %e, tracking_id = %tracking);
            logout_refusal(status, e.code(), &tracking, &login_path)
        };
        if !enabled(acct) {
            return html(
                StatusCode::NOT_FOUND,
                "Single logout is not set up",
                "<p>This account does not take part in single logout.</p>",
            );
        }
        let certs = &acct.idp.metadata.signing_certs;
        let received = if req.method() == http::Method::POST {
            let body = match crate::server::read_body(req.into_body(), MAX_POST).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            logout::from_post(&form_pairs(&body), &cfg.security)
        } else {
            let q = req.uri().query().unwrap_or("").to_owned();
            logout::from_redirect(&q, certs, &cfg.security)
        };
        let received = match received {
            Ok(r) => r,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
        };
        let now = self.clock.now();
        let me = slo_url(cfg, acct);
        let idp = &acct.idp.metadata.entity_id;
        match received.kind {
            Kind::Response => {
                let resp =
                    match logout::read_response(&received, idp, certs, &me, now, &cfg.security) {
                        Ok(r) => r,
                        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
                    };
                let taken = self
                    .store
                    .take_ephemeral(
                        Ephemeral::RequestId,
                        &outstanding(acct, &resp.in_response_to),
                    )
                    .await;
                let target = match taken {
                    Ok(Some(t)) => t,
                    Ok(None) => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            &SamlError::InResponseToMismatch(format!(
                                "the LogoutResponse answers {:?}, which is no outstanding logout of this account",
                                resp.in_response_to
                            )),
                        );
                    }
                    Err(e) => return store_down(&e),
                };
                let success = resp.status == logout::STATUS_SUCCESS
                    && resp.sub_status.as_deref() != Some(logout::STATUS_PARTIAL);
                tracing::info!(target: "audit", event = "slo_completed", account = %acct.id, request_id = %resp.in_response_to, status = %resp.status, sub_status = ?resp.sub_status, success);
                if !success {
                    return signed_out_page(
                        cfg,
                        &format!(
                            " Your identity provider reported that not every application could sign you out (status <code>{}</code>): close the browser to be sure.",
                            esc(resp.sub_status.as_deref().unwrap_or(&resp.status))
                        ),
                    );
                }
                match String::from_utf8(target)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .and_then(|t| safe_return_path(&t))
                {
                    Some(t) => redirect(StatusCode::SEE_OTHER, &t),
                    None => {
                        signed_out_page(cfg, " You are signed out of your identity provider too.")
                    }
                }
            }
            Kind::Request => {
                let lr = match logout::read_request(&received, idp, certs, &me, now, &cfg.security)
                {
                    Ok(r) => r,
                    Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
                };
                // Accepted once.
                let ttl = std::time::Duration::from_secs(
                    u64::try_from(
                        cfg.security.max_issue_delay_secs + 2 * cfg.security.clock_skew_secs,
                    )
                    .unwrap_or(600)
                    .max(60),
                );
                match self
                    .store
                    .insert_ephemeral(
                        Ephemeral::Replay,
                        &acct.scoped(&format!("logout:{}", lr.id)),
                        b"",
                        ttl,
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return refuse(StatusCode::BAD_REQUEST, &SamlError::Replayed(lr.id));
                    }
                    Err(e) => return store_down(&e),
                }
                let ended = self.end_name_id(acct, &lr).await;
                let (status, sub) = match &ended {
                    Ok(_) => (logout::STATUS_SUCCESS, None),
                    Err(_) => (logout::STATUS_RESPONDER, None),
                };
                tracing::info!(target: "audit", event = "slo_idp_initiated", account = %acct.id, request_id = %lr.id, name_id_hash = %crate::provisioning::token_hash(&lr.name_id.value), sessions_ended = ?ended.as_ref().ok(), session_indexes = lr.session_indexes.len(), ok = ended.is_ok());
                let Some(ep) = acct.idp.metadata.slo_endpoint() else {
                    // Nowhere to answer: the sessions are ended all the same.
                    let mut r = signed_out_page(cfg, "");
                    self.set_cookie(&mut r, cfg, "", 0);
                    return r;
                };
                let to = ep.response_location.as_deref().unwrap_or(&ep.location);
                let xml = logout::build_response(
                    &random_id(),
                    now,
                    to,
                    &acct.sp.entity_id,
                    &lr.id,
                    status,
                    sub,
                );
                match send(
                    acct,
                    ep,
                    to,
                    "SAMLResponse",
                    &xml,
                    received.relay_state.as_deref(),
                ) {
                    Ok(mut r) => {
                        // This browser's own cookie goes too.
                        self.set_cookie(&mut r, cfg, "", 0);
                        if received.binding == Binding::Post {
                            r.headers_mut().insert(
                                header::CACHE_CONTROL,
                                HeaderValue::from_static("no-store"),
                            );
                        }
                        r
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot sign the LogoutResponse");
                        signed_out_page(cfg, "")
                    }
                }
            }
        }
    }

    /// Ends every session of the LogoutRequest's NameID on `acct` (only its
    /// SessionIndexes', when it names any), on every replica; how many.
    async fn end_name_id(
        &self,
        acct: &Account,
        lr: &logout::LogoutRequest,
    ) -> Result<usize, crate::store::StoreError> {
        let store = self.store.as_ref();
        let keys = self
            .sessions
            .of_name_id(store, acct, &lr.name_id.value, &lr.session_indexes)
            .await?;
        self.sessions.end_stored(store, &keys).await?;
        let set = super::session::slo_key(&acct.id, &lr.name_id.value);
        for k in &keys {
            store.remove_from_set(Ephemeral::SloIndex, &set, k).await?;
        }
        Ok(keys.len())
    }
}
