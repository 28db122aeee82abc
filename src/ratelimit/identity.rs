//! Who a request is: the verified user, else the client address ([`crate::client`], the one
//! client-address rule, re-exported here).

use std::sync::Arc;

use actix_web::HttpRequest;

pub use crate::client::{DEFAULT_IPV6_PREFIX, client_group, client_ip};

/// Answers the verified user id of a request, or `None` (anonymous, or a token that does not
/// verify). Plugged in by the auth feature; it must never answer an unverified claim.
pub type UserResolver = Arc<dyn Fn(&HttpRequest) -> Option<String> + Send + Sync>;
