//! Auth: accounts and tokens, sessions, how a request presents its token, the login limit, and
//! revocation across a fleet.

#![cfg(feature = "server")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod credentials;
mod login_limit;
mod revocation;
mod sessions;
