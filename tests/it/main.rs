//! The one integration-test binary (one link instead of many). Topic files
//! below are modules; fixtures come from `tests/fixtures/gen.py`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod accounts;
mod admin_api;
mod attacks;
mod c14n_oracle;
mod cli;
mod config;
mod connections;
mod console;
mod corpus;
mod csv_import;
mod differential;
mod fast_path;
mod faults;
mod fuzz_replay;
mod gateway;
mod http_support;
mod metadata_url;
mod provisioning;
mod proxy_differential;
mod redis_support;
mod review;
mod scim;
mod shutdown;
mod slo;
mod smuggling;
mod store_conformance;
mod support;
mod wellformed;

/// The config file's account of a test config (every test config has one).
pub trait DefaultAccount {
    /// The default account.
    fn acct(&self) -> &samlgate::account::Account;
    /// The default account, to change before building a gateway.
    fn acct_mut(&mut self) -> &mut samlgate::account::Account;
}

impl DefaultAccount for samlgate::config::Config {
    fn acct(&self) -> &samlgate::account::Account {
        self.account
            .as_ref()
            .expect("the test config has a default account")
    }
    fn acct_mut(&mut self) -> &mut samlgate::account::Account {
        self.account
            .as_mut()
            .expect("the test config has a default account")
    }
}
