//! Where a login came from, as stored with its session.

use actix_web::HttpRequest;

use crate::client::{IpNet, client_addr};

/// Where a login came from, stored with its session.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Client address.
    pub ip: String,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl ClientInfo {
    /// The client address and user agent of `req`. The address is the one the rate limiter
    /// counts ([`client_addr`], read once per request): the TCP peer, or, when the peer is one of `trusted_proxies`, the
    /// address it forwarded (`X-Forwarded-For`, else `Forwarded: for=`). Pass the limiter's trusted
    /// proxies (`&[]`: no proxy is believed). Empty without a peer address (in-process tests).
    pub fn of(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Self {
        Self {
            ip: client_addr(req, trusted_proxies)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .chars()
                .take(256)
                .collect(),
        }
    }
}
