//! The limiter's configuration, [`RateLimitConfig`]: its defaults and the `--rate-limit` spec
//! grammar (`default=100/60s`, `METHOD PATH=COUNT/WINDOW,algorithm=...`), and trusted proxies.

use std::{sync::Arc, time::Duration};

use actix_web::http::Method;

use super::{
    Algorithm, DEFAULT_EXPENSIVE_LIMIT, DEFAULT_EXPENSIVE_WINDOW_SECS, DEFAULT_GLOBAL_LIMIT,
    DEFAULT_GLOBAL_WINDOW_SECS, DEFAULT_LOGIN_LIMIT, DEFAULT_LOGIN_WINDOW_SECS,
    DEFAULT_REQUEST_ALGORITHM, FailMode, IpNet, MAX_LIMIT, MAX_WINDOW_SECS, Policy, RoutePolicy,
    policy::{DEFAULT_PUBLISH_LIMIT, DEFAULT_PUBLISH_WINDOW_SECS},
};
use crate::{
    clock::{Clock, SystemClock},
    settings::ConfigError,
};

/// Checked rate-limit configuration. With the `server` feature, `ipv6_prefix` is also a
/// command-line option (its doc line is its `--help`); the server reads the policies and the
/// trusted proxies from `--rate-limit` and `--trusted-proxies` through [`RateLimitConfig::parse`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "server", derive(clap::Args))]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// The global middleware policy, `None` when `default=off`.
    #[cfg_attr(feature = "server", arg(skip = RateLimitConfig::default().global))]
    pub global: Option<Policy>,
    /// Per-route policies, first match wins.
    #[cfg_attr(feature = "server", arg(skip = RateLimitConfig::default().routes))]
    pub routes: Vec<RoutePolicy>,
    /// The login-failure limiter (per username and client IP).
    #[cfg_attr(feature = "server", arg(skip = RateLimitConfig::default().login))]
    pub login: Policy,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` headers are believed.
    #[cfg_attr(feature = "server", arg(skip))]
    pub trusted_proxies: Vec<IpNet>,
    /// Prefix of every Redis key (the limiter adds `rl:`); the server's `--key-prefix` sets it
    /// for every feature at once.
    #[cfg_attr(feature = "server", arg(skip = crate::settings::DEFAULT_KEY_PREFIX.to_owned()))]
    pub key_prefix: String,
    /// IPv6 clients are rate-limited by their first this-many bits (0 to 128): one subscriber
    /// usually holds a whole /64.
    #[cfg_attr(feature = "server", arg(long, env = "IPV6_PREFIX", value_name = "BITS",
        default_value_t = super::identity::DEFAULT_IPV6_PREFIX))]
    pub ipv6_prefix: u8,
    /// Where time comes from; tests substitute a [`ManualClock`](crate::clock::ManualClock).
    #[cfg_attr(feature = "server", arg(skip = Arc::new(SystemClock) as Arc<dyn Clock>))]
    pub clock: Arc<dyn Clock>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            global: Some(
                Policy::new(
                    "default",
                    DEFAULT_GLOBAL_LIMIT,
                    Duration::from_secs(DEFAULT_GLOBAL_WINDOW_SECS),
                )
                .with_algorithm(DEFAULT_REQUEST_ALGORITHM),
            ),
            routes: vec![
                RoutePolicy::new(
                    Method::POST,
                    "/expensive-operation",
                    Policy::new(
                        "POST /expensive-operation",
                        DEFAULT_EXPENSIVE_LIMIT,
                        Duration::from_secs(DEFAULT_EXPENSIVE_WINDOW_SECS),
                    )
                    .with_algorithm(DEFAULT_REQUEST_ALGORITHM),
                ),
                RoutePolicy::new(
                    Method::POST,
                    "/events/{channel}",
                    Policy::new(
                        "POST /events/{channel}",
                        DEFAULT_PUBLISH_LIMIT,
                        Duration::from_secs(DEFAULT_PUBLISH_WINDOW_SECS),
                    )
                    .with_algorithm(DEFAULT_REQUEST_ALGORITHM),
                ),
            ],
            login: Policy::new(
                "login",
                DEFAULT_LOGIN_LIMIT,
                Duration::from_secs(DEFAULT_LOGIN_WINDOW_SECS),
            ),
            trusted_proxies: Vec::new(),
            key_prefix: crate::settings::DEFAULT_KEY_PREFIX.to_owned(),
            ipv6_prefix: super::identity::DEFAULT_IPV6_PREFIX,
            clock: Arc::new(SystemClock),
        }
    }
}

impl RateLimitConfig {
    /// The defaults with `specs` applied in order (later specs override earlier ones for the
    /// same route) and `trusted_proxies` parsed.
    ///
    /// # Errors
    /// The first bad spec or CIDR, described in one line.
    pub fn parse<S: AsRef<str>, T: AsRef<str>>(
        specs: &[S],
        trusted_proxies: &[T],
    ) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.apply_specs(specs, trusted_proxies)?;
        Ok(config)
    }

    /// Applies `specs` in order onto these policies (later specs override earlier ones for the
    /// same route) and adds the `trusted_proxies`.
    ///
    /// # Errors
    /// The first bad spec or CIDR, described in one line.
    pub fn apply_specs<S: AsRef<str>, T: AsRef<str>>(
        &mut self,
        specs: &[S],
        trusted_proxies: &[T],
    ) -> Result<(), ConfigError> {
        for spec in specs {
            let spec = spec.as_ref().trim();
            if spec.is_empty() {
                continue;
            }
            self.apply_spec(spec).map_err(|e| {
                ConfigError(format!(
                    "invalid --rate-limit/RATE_LIMITS spec {spec:?}: {e}"
                ))
            })?;
        }
        for cidr in trusted_proxies {
            let cidr = cidr.as_ref().trim();
            if cidr.is_empty() {
                continue;
            }
            let net = crate::client::parse_net(cidr).map_err(|e| {
                ConfigError(format!("invalid --trusted-proxies/TRUSTED_PROXIES: {e}"))
            })?;
            self.trusted_proxies.push(net);
        }
        Ok(())
    }

    /// Applies one spec: `default=100/60s`, `default=off` or `METHOD PATH=COUNT/WINDOW`, each
    /// with optional `,algorithm=log|counter|gcra`, `,shadow`, `,fail_closed`, `,fail_open`.
    fn apply_spec(&mut self, spec: &str) -> Result<(), String> {
        let (target, rule) = spec
            .split_once('=')
            .ok_or("expected TARGET=COUNT/WINDOW, e.g. default=100/60s or \"POST /x=10/60s\"")?;
        let target = target.trim();
        let route = if target.eq_ignore_ascii_case("default") {
            None
        } else {
            let (method, path) = target
                .split_once(char::is_whitespace)
                .ok_or("expected `default` or `METHOD PATH` before `=`")?;
            let method = Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("invalid method {method:?}"))?;
            let path = path.trim();
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err(format!(
                    "path {path:?} must start with `/` and have no spaces"
                ));
            }
            Some((method, path.to_owned()))
        };
        let mut parts = rule.split(',').map(str::trim);
        let amount = parts.next().unwrap_or_default();
        let name = match &route {
            None => "default".to_owned(),
            Some((method, path)) => format!("{method} {path}"),
        };
        if amount.eq_ignore_ascii_case("off") {
            if parts.next().is_some() {
                return Err("`off` takes no options".into());
            }
            match route {
                None => self.global = None,
                Some((method, path)) => self
                    .routes
                    .retain(|r| !(r.method == method && r.path == path)),
            }
            return Ok(());
        }
        let (count, window) = amount
            .split_once('/')
            .ok_or("expected COUNT/WINDOW such as 100/60s, or off")?;
        let limit: u64 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("count {count:?} must be an integer in 1..={MAX_LIMIT}"))?;
        let window = parse_window(window.trim())?;
        let mut policy = Policy::new(name, limit, window).with_algorithm(DEFAULT_REQUEST_ALGORITHM);
        for option in parts {
            match option.split_once('=') {
                Some(("algorithm", value)) => {
                    policy.algorithm = match value.trim() {
                        "log" => Algorithm::SlidingLog,
                        "counter" => Algorithm::SlidingCounter,
                        "gcra" => Algorithm::Gcra,
                        other => {
                            return Err(format!(
                                "unknown algorithm {other:?} (expected log, counter or gcra)"
                            ));
                        }
                    }
                }
                None if option == "shadow" => policy.shadow = true,
                None if option == "fail_closed" => policy.fail_mode = FailMode::Closed,
                None if option == "fail_open" => policy.fail_mode = FailMode::Open,
                _ => {
                    return Err(format!(
                        "unknown option {option:?} (expected algorithm=..., shadow, fail_open or fail_closed)"
                    ));
                }
            }
        }
        match route {
            None => self.global = Some(policy),
            Some((method, path)) => {
                self.routes
                    .retain(|r| !(r.method == method && r.path == path));
                self.routes.push(RoutePolicy::new(method, path, policy));
            }
        }
        Ok(())
    }

    /// The index in `routes` of the route policy for a request, if any. `pattern` is asked only
    /// when a policy uses one.
    pub(crate) fn route_for(
        &self,
        method: &Method,
        path: &str,
        pattern: impl FnOnce() -> Option<String>,
    ) -> Option<usize> {
        let mut pattern = Some(pattern);
        let mut matched: Option<Option<String>> = None;
        for (i, route) in self.routes.iter().enumerate() {
            if route.method != *method {
                continue;
            }
            if route.path == path {
                return Some(i);
            }
            if route.is_pattern() {
                let m = matched.get_or_insert_with(|| pattern.take().and_then(|f| f()));
                if m.as_deref() == Some(route.path.as_str()) {
                    return Some(i);
                }
            }
        }
        None
    }
}

/// `60s`, `15m`, `1h`, `1d` or bare seconds; whole seconds, 1 s to one week.
fn parse_window(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("window {text:?} must be a number with s, m, h or d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "window {text:?} has an unknown unit (use s, m, h or d)"
            ));
        }
    };
    let secs = n.saturating_mul(scale);
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(format!(
            "window {text:?} must be between 1s and {MAX_WINDOW_SECS}s"
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Good specs parse into the expected policies; `off` removes them.
    #[test]
    fn specs_parse() {
        let config = RateLimitConfig::parse(
            &[
                "default=50/30s,algorithm=gcra",
                "get /items/{id}=5/1m,algorithm=counter,shadow,fail_closed",
                "POST /expensive-operation=off",
            ],
            &["10.0.0.0/8", "::1"],
        )
        .unwrap();
        let global = config.global.unwrap();
        assert_eq!((global.limit, global.window.as_secs()), (50, 30));
        assert_eq!(global.algorithm, Algorithm::Gcra);
        // The built-in publish policy stays; the expensive one is off.
        assert_eq!(config.routes.len(), 2);
        assert!(
            !config
                .routes
                .iter()
                .any(|r| r.path == "/expensive-operation")
        );
        let route = config
            .routes
            .iter()
            .find(|r| r.path == "/items/{id}")
            .unwrap();
        assert_eq!(route.method, Method::GET);
        assert_eq!(route.path, "/items/{id}");
        assert_eq!(route.policy.window.as_secs(), 60);
        assert_eq!(route.policy.algorithm, Algorithm::SlidingCounter);
        assert!(route.policy.shadow);
        assert_eq!(route.policy.fail_mode, FailMode::Closed);
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        assert!(config.trusted_proxies[0].contains(&ip("10.1.2.3")));
        assert!(!config.trusted_proxies[0].contains(&ip("11.1.2.3")));
        assert!(config.trusted_proxies[1].contains(&ip("::1")));
        let off = RateLimitConfig::parse(&["default=off"], &[] as &[&str]).unwrap();
        assert!(off.global.is_none());
    }

    /// Request policies default to GCRA (the shipped ones and specs without `algorithm=`); the
    /// login limiter stays a sliding log, and `Policy::new` too.
    #[test]
    fn request_policies_default_to_gcra() {
        let config = RateLimitConfig::default();
        assert_eq!(config.global.unwrap().algorithm, Algorithm::Gcra);
        assert_eq!(config.routes[0].policy.algorithm, Algorithm::Gcra);
        // The built-in publish policy too.
        assert_eq!(config.routes[1].policy.name, "POST /events/{channel}");
        assert_eq!(config.routes[1].policy.algorithm, Algorithm::Gcra);
        assert_eq!(config.login.algorithm, Algorithm::SlidingLog);
        let parsed = RateLimitConfig::parse(&["default=5/1m", "GET /x=1/1s"], &[] as &[&str]);
        let parsed = parsed.unwrap();
        assert_eq!(parsed.global.unwrap().algorithm, Algorithm::Gcra);
        assert_eq!(parsed.routes[1].policy.algorithm, Algorithm::Gcra);
        let policy = Policy::new("p", 1, Duration::from_secs(1));
        assert_eq!(policy.algorithm, Algorithm::SlidingLog);
    }

    /// Bad specs and CIDRs are rejected with one line naming the option.
    #[test]
    fn bad_specs_rejected() {
        for spec in [
            "default",
            "default=0/60s",
            "default=10/0s",
            "default=10/60x",
            "default=ten/60s",
            "default=10/60s,algorithm=leaky",
            "default=10/60s,loud",
            "FETCH/x=1/1s",
            "GET x=1/1s",
            "default=off,shadow",
        ] {
            let err = RateLimitConfig::parse(&[spec], &[] as &[&str])
                .unwrap_err()
                .0;
            assert!(err.contains("--rate-limit"), "{err}");
            assert!(!err.contains('\n'));
        }
        let err = RateLimitConfig::parse(&[] as &[&str], &["10.0.0.0/33"])
            .unwrap_err()
            .0;
        assert!(err.contains("--trusted-proxies"), "{err}");
    }
}
