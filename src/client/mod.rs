//! The client-address rule: who a request comes from, as the rate limiter counts it, the events
//! routes cap connections by, and a session records. Shared vocabulary (bottom layer), so that
//! `auth`, `events` and `ratelimit` each use the one rule without importing each other; the
//! limiter re-exports it (`redkit::ratelimit::client_ip` keeps working).
//!
//! Each is worked out once per request: [`client_addr`] and [`bearer`] keep their answer in the
//! request's extensions, and every later reader of the same request (the limiter's identity, the
//! login limit, the events routes' per-address caps, the session record, the auth extractors)
//! reads that answer.

use std::{
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use actix_web::{HttpMessage, HttpRequest, http::header};
pub use ipnet::IpNet;

/// Parses a network in CIDR notation (`10.0.0.0/8`, `::1/128`) or a bare address (that host
/// alone), as `--trusted-proxies` takes them.
///
/// # Errors
/// A one-line description of what is wrong.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR with a valid prefix length"))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as plain IPv4, so that one rule covers both.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// IPv6 clients are grouped by this many leading bits unless configured otherwise.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The token of `Authorization: Bearer <token>` in `headers` (RFC 6750 §2.1: the scheme in any
/// case), trimmed; `None` without the header, with another scheme, or with an empty token. The
/// one rule every route that takes a bearer token reads it by.
pub fn bearer_token(headers: &header::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A request's client address, once [`client_addr`] has worked it out.
#[derive(Debug, Clone, Copy)]
struct ClientAddr(Option<IpAddr>);

/// A request's bearer token, once [`bearer`] has read it.
#[derive(Debug, Clone)]
struct Bearer(Option<Rc<str>>);

/// The client address of `req` by [`client_ip`], worked out by the first reader of the request
/// and kept in its extensions for every later one. The first reader's `trusted` list decides:
/// the server passes the limiter's trusted proxies everywhere, and its limiter middleware reads
/// first.
pub fn client_addr(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    if let Some(ClientAddr(ip)) = req.extensions().get::<ClientAddr>() {
        return *ip;
    }
    let ip = client_ip(req, trusted);
    req.extensions_mut().insert(ClientAddr(ip));
    ip
}

/// The request's bearer token by [`bearer_token`], read by the first reader of the request (the
/// limiter's identity, an auth extractor, an events route) and kept in its extensions for every
/// later one: a middleware that rewrites `Authorization` must run before the first reader.
pub fn bearer(req: &HttpRequest) -> Option<Rc<str>> {
    if let Some(Bearer(token)) = req.extensions().get::<Bearer>() {
        return token.clone();
    }
    let token: Option<Rc<str>> = bearer_token(req.headers()).map(Rc::from);
    req.extensions_mut().insert(Bearer(token.clone()));
    token
}

/// The client address of `req`, worked out afresh (see [`client_addr`] for the once-per-request
/// reading every route uses).
///
/// The TCP peer, unless the peer is a trusted proxy: then `X-Forwarded-For` (or, without it,
/// `Forwarded: for=`) is walked from right to left past trusted hops, and the first untrusted
/// address is the client. When every hop is trusted the leftmost one is used; an unparsable
/// entry stops the walk at the last address that parsed. Without a peer address (in-process
/// tests) the answer is `None`.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(req.peer_addr()?.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return Some(peer);
    }
    let headers = req.headers();
    let mut hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if hops.is_empty() {
        hops = headers
            .get_all(header::FORWARDED)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| value.trim())
                })
            })
            .collect();
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// The address a client is limited (and counted) as: IPv4 addresses as they are, IPv6 ones by
/// their first `v6_prefix` bits (a /64 by default: one subscriber usually holds a whole /64, so
/// per-address limits on single IPv6 addresses are escaped by rotating inside it).
pub fn client_group(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => ipnet::Ipv6Net::new_assert(v6, v6_prefix.min(128))
            .trunc()
            .addr()
            .into(),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[::1]:80"`, `::1`, as in XFF and `Forwarded: for=`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let inner = hop.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    /// The client address and the bearer token are worked out by a request's first reader and
    /// read back by every later one: a later reader with another trusted list gets the same
    /// address.
    #[test]
    fn worked_out_once_per_request() {
        let proxy: IpNet = "10.0.0.1/32".parse().unwrap();
        let req = TestRequest::default()
            .peer_addr("10.0.0.1:9000".parse().unwrap())
            .insert_header(("x-forwarded-for", "203.0.113.7"))
            .insert_header(("authorization", "BEARER abc"))
            .to_http_request();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(client_addr(&req, &[proxy]), Some(client));
        assert_eq!(client_addr(&req, &[]), Some(client));
        let first = bearer(&req).unwrap();
        assert_eq!(&*first, "abc");
        assert!(Rc::ptr_eq(&first, &bearer(&req).unwrap()));
        let fresh = TestRequest::default()
            .peer_addr("10.0.0.1:9000".parse().unwrap())
            .to_http_request();
        assert_eq!(client_addr(&fresh, &[]), "10.0.0.1".parse().ok());
        assert_eq!(bearer(&fresh), None);
    }
}
