//! The user operations behind the user API and the console: create
//! (`ssoCreate`), update, delete and list, with typed outcomes. The JSON
//! API and the console's forms render the same results, and every change
//! is one audit event naming who made it.

use http::StatusCode;

use super::Admin;
use super::body::{self, BodyError};
use crate::account::{Account, ProvisioningMode};
use crate::mapping::License;
use crate::provisioning::{assign_vanities, new_record, send_verification};
use crate::store::{StoreError, UserRecord, UserSource, UserStatus};

/// Why a user operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserOpError {
    /// The body or form is invalid (names the field).
    #[error(transparent)]
    Invalid(#[from] BodyError),
    /// `ssoCreate` in an account whose users are created at login.
    #[error(
        "ssoCreate exists only while provisioning.mode = \"prior_to_sign_in\"; in jit mode users are created at login"
    )]
    CreateDisabled,
    /// The email is this account's user already.
    #[error("a user with this email exists")]
    Exists,
    /// The email is another account's user.
    #[error("this email belongs to another account of this gateway")]
    OtherAccountsUser,
    /// The email's domain is another account's associated domain.
    #[error("the email's domain is an associated domain of another account of this gateway")]
    OtherAccountsDomain,
    /// No such user in this account.
    #[error("no such user")]
    NotFound,
    /// The store failed.
    #[error("the user store is unavailable")]
    Store(#[from] StoreError),
}

impl UserOpError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code,
            Self::CreateDisabled => "sso_create_disabled",
            Self::Exists => "user_exists",
            Self::OtherAccountsUser | Self::OtherAccountsDomain => "user_in_other_account",
            Self::NotFound => "user_not_found",
            Self::Store(e) => e.code(),
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::CreateDisabled
            | Self::Exists
            | Self::OtherAccountsUser
            | Self::OtherAccountsDomain => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The request field it is about, if one (`user_info.email` for the
    /// create conflicts, as the API has always said).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid(e) => Some(e.field),
            Self::CreateDisabled => Some("provisioning.mode"),
            Self::Exists | Self::OtherAccountsUser | Self::OtherAccountsDomain => {
                Some("user_info.email")
            }
            Self::NotFound | Self::Store(_) => None,
        }
    }
}

/// A page of an account's users.
#[derive(Debug, Default)]
pub struct UserPage {
    /// The users, by email.
    pub users: Vec<UserRecord>,
    /// Where the next page starts (none: this was the last).
    pub next_cursor: Option<String>,
}

impl Admin {
    /// The user `email` of `acct` (another account's user is not found
    /// here).
    pub(crate) async fn find_user(
        &self,
        acct: &Account,
        email: &str,
    ) -> Result<UserRecord, UserOpError> {
        match self.store.get_user(email).await? {
            Some(u) if u.account == acct.id => Ok(u),
            _ => Err(UserOpError::NotFound),
        }
    }

    /// `ssoCreate`: a user created ahead of their first sign-in, by `by`.
    pub(crate) async fn create_user(
        &self,
        acct: &Account,
        req: body::CreateRequest,
        by: &str,
    ) -> Result<UserRecord, UserOpError> {
        if acct.provisioning.mode != ProvisioningMode::PriorToSignIn {
            return Err(UserOpError::CreateDisabled);
        }
        let body::NewUser {
            email,
            license,
            first_name,
            last_name,
        } = body::new_user(req, self.config.security.allow_international_email)?;
        let mut user = new_record(&email, UserSource::Api, license, acct, self.clock.now());
        user.first_name = first_name;
        user.last_name = last_name;
        user.sso_only = true;
        if let Some(u) = self.store.get_user(&email).await? {
            return Err(exists(acct, &u));
        }
        if crate::provisioning::domain_of_other_account(
            self.accounts.snapshot().as_ref(),
            acct,
            &email,
        ) {
            return Err(UserOpError::OtherAccountsDomain);
        }
        assign_vanities(self.store.as_ref(), std::slice::from_mut(&mut user)).await?;
        let inserted = self.store.insert_users(std::slice::from_ref(&user)).await?;
        if inserted.first() != Some(&true) {
            // Lost a race: say whose the winner is.
            let winner = self.store.get_user(&email).await?;
            if let Some(name) = &user.vanity {
                let _ = crate::provisioning::give_back_vanity(
                    self.store.as_ref(),
                    name,
                    &email,
                    winner.as_ref(),
                )
                .await;
            }
            return Err(exists(acct, winner.as_ref().unwrap_or(&user)));
        }
        if user.status == UserStatus::PendingVerification {
            send_verification(self.store.as_ref(), &self.config, acct, &email).await?;
        }
        tracing::info!(target: "audit", event = "user_created", source = "api", by = %by, account = %acct.id, email = %email, status = ?user.status);
        Ok(user)
    }

    /// Changes user `email` of `acct` as `p` says, by `by`; a user no
    /// longer active has their live sessions ended (on every replica)
    /// before this returns.
    pub(crate) async fn update_user(
        &self,
        acct: &Account,
        email: &str,
        p: body::PatchRequest,
        by: &str,
    ) -> Result<UserRecord, UserOpError> {
        let mut user = self.find_user(acct, email).await?;
        let was = user.status;
        body::apply_patch(p, &mut user)?;
        user.updated_at = self.clock.now().to_rfc3339();
        if user.license == License::Licensed && user.vanity.is_none() {
            assign_vanities(self.store.as_ref(), std::slice::from_mut(&mut user)).await?;
        }
        self.store.put_users(std::slice::from_ref(&user)).await?;
        if was == UserStatus::Active && user.status != UserStatus::Active {
            self.sessions
                .revoke(self.store.as_ref(), &[email.to_owned()])
                .await?;
        }
        tracing::info!(target: "audit", event = "user_updated", by = %by, account = %acct.id, email = %email, status = ?user.status);
        Ok(user)
    }

    /// Deletes user `email` of `acct`, by `by`, ending their live sessions.
    pub(crate) async fn delete_user(
        &self,
        acct: &Account,
        email: &str,
        by: &str,
    ) -> Result<(), UserOpError> {
        let user = self.find_user(acct, email).await?;
        crate::activity::forget_user(self.store.as_ref(), &acct.id, email).await?;
        if !self.store.delete_user(email).await? {
            return Err(UserOpError::NotFound);
        }
        self.sessions
            .revoke(self.store.as_ref(), &[email.to_owned()])
            .await?;
        crate::scim::forget_id(self.store.as_ref(), &user).await;
        tracing::info!(target: "audit", event = "user_deleted", by = %by, account = %acct.id, email = %email);
        Ok(())
    }

    /// Up to `limit` of `acct`'s users from `cursor` on (emails after it),
    /// those with `status` only when given; at most 20 store pages read per
    /// call (the cursor continues where this call stopped).
    pub(crate) async fn list_users(
        &self,
        acct: &Account,
        mut cursor: Option<String>,
        limit: usize,
        status: Option<UserStatus>,
    ) -> Result<UserPage, StoreError> {
        let mut users = Vec::new();
        let mut more = true;
        'pages: for _ in 0..20 {
            let (page, next) = self
                .store
                .list_account_users(&acct.id, cursor.as_deref(), limit)
                .await?;
            for u in page {
                if users.len() == limit {
                    break 'pages;
                }
                cursor = Some(u.email.clone());
                if status.is_none_or(|s| s == u.status) {
                    users.push(u);
                }
            }
            match next {
                None => {
                    more = false;
                    break;
                }
                Some(n) => cursor = Some(n),
            }
            if users.len() == limit {
                break;
            }
        }
        Ok(UserPage {
            users,
            next_cursor: if more { cursor } else { None },
        })
    }
}

/// The conflict for an email that exists: this account's or another's
/// (which says nothing more about it).
fn exists(acct: &Account, existing: &UserRecord) -> UserOpError {
    if existing.account == acct.id {
        UserOpError::Exists
    } else {
        UserOpError::OtherAccountsUser
    }
}
