//! samlgate: a SAML 2.0 single-sign-on gateway.
//!
//! The library holds everything; `src/main.rs` is a thin command line.
//! See `docs/` and the README for how the pieces fit.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod activity;
pub mod admin;
pub mod check;
pub mod clock;
pub mod config;
pub mod console;
pub mod devidp;
pub mod email;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod mail;
pub mod mapping;
pub mod metrics;
pub mod provisioning;
pub mod saml;
pub mod scim;
pub mod serve;
pub mod server;
pub mod store;
#[cfg(test)]
mod testutil;
