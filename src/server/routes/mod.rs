//! The HTTP routes of each capability: thin adapters that extract, call one or two handles and
//! map the answer. Mounted by [`Services::configure`](super::http::Services::configure).

pub(crate) mod auth;
pub(crate) mod cache;
pub(crate) mod events;
pub(crate) mod ratelimit;
