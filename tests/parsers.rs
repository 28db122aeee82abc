//! Property tests for every parser of outside input (issue 16): cache keys and flush patterns,
//! channel names, event types, `Last-Event-ID`, the rate-limit spec and IPv6 grouping. Each
//! answers exactly by its documented rule, for any input, and never panics. (The glob matcher
//! is checked against Redis' recursive code in `cache::glob`'s unit tests; bearer tokens and
//! cookies in `auth::extractor`'s.)

use std::{net::IpAddr, time::Duration};

use proptest::prelude::*;
use redkit::{
    cache::{MAX_KEY_BYTES, validate_key, validate_pattern},
    events::{EventId, valid_channel, valid_event_type},
    ratelimit::{RateLimitConfig, client_group},
};

/// Mostly printable text with some control characters and multi-byte characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::char::range('!', '~'),
            1 => proptest::char::range('\u{0}', '\u{1f}'),
            1 => proptest::char::range('\u{7f}', '\u{9f}'),
            1 => proptest::char::range('\u{a0}', '\u{10ffff}'),
        ],
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A cache key is accepted exactly when it has 1 to 512 bytes and no control character.
    #[test]
    fn cache_keys(key in text(600)) {
        let expected = !key.is_empty()
            && key.len() <= MAX_KEY_BYTES
            && !key.chars().any(char::is_control);
        prop_assert_eq!(validate_key(&key).is_ok(), expected);
    }

    /// A flush pattern is accepted exactly when it has 1 to 128 characters, none a control one.
    #[test]
    fn flush_patterns(pattern in text(160)) {
        let n = pattern.chars().count();
        let expected = (1..=128).contains(&n) && !pattern.chars().any(char::is_control);
        prop_assert_eq!(validate_pattern(&pattern).is_ok(), expected);
    }

    /// Channel names are 1 to 128 bytes of `A-Z a-z 0-9 : _ . -`; event types 1 to 64 bytes of
    /// `A-Z a-z 0-9 _ . -` (never a line break: nothing can inject an SSE field).
    #[test]
    fn channels_and_event_types(name in text(150)) {
        let channel_char = |c: char| c.is_ascii_alphanumeric() || ":_.-".contains(c);
        let type_char = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        prop_assert_eq!(
            valid_channel(&name),
            (1..=128).contains(&name.len()) && name.chars().all(channel_char)
        );
        prop_assert_eq!(
            valid_event_type(&name),
            (1..=64).contains(&name.len()) && name.chars().all(type_char)
        );
        if valid_event_type(&name) {
            prop_assert!(!name.contains('\n') && !name.contains('\r'));
        }
    }

    /// `Last-Event-ID` parses exactly `<ms>-<seq>` with two u64s of at most 20 digits, and an id
    /// prints back as what parses to it.
    #[test]
    fn last_event_ids(raw in text(50), ms in any::<u64>(), seq in any::<u64>()) {
        let parsed = raw.parse::<EventId>();
        let expected = raw.split_once('-').is_some_and(|(a, b)| {
            [a, b].iter().all(|part| {
                (1..=20).contains(&part.len())
                    && part.bytes().all(|c| c.is_ascii_digit())
                    && part.parse::<u64>().is_ok()
            })
        });
        prop_assert_eq!(parsed.is_ok(), expected, "{:?}", raw);
        let id: EventId = format!("{ms}-{seq}").parse().unwrap();
        prop_assert_eq!(id.to_string(), format!("{ms}-{seq}"));
    }

    /// Any text as a rate-limit spec either parses or is refused with one line, never a panic.
    #[test]
    fn rate_limit_specs_never_panic(spec in text(80)) {
        if let Err(err) = RateLimitConfig::parse(&[spec.as_str()], &[] as &[&str]) {
            prop_assert!(!err.0.contains('\n'), "{}", err);
        }
    }

    /// A well-formed route spec sets exactly that route's limit and window.
    #[test]
    fn rate_limit_specs_parse(
        method in proptest::sample::select(vec!["GET", "POST", "put", "Delete"]),
        path in "/[a-z0-9/_-]{0,20}",
        limit in 1u64..=1_000_000,
        (amount, unit, secs) in prop_oneof![
            (1u64..=604_800).prop_map(|n| (n, "s", n)),
            (1u64..=10_080).prop_map(|n| (n, "m", n * 60)),
            (1u64..=168).prop_map(|n| (n, "h", n * 3600)),
            (1u64..=7).prop_map(|n| (n, "d", n * 86_400)),
        ],
    ) {
        let spec = format!("{method} {path}={limit}/{amount}{unit}");
        let config = RateLimitConfig::parse(&[spec.as_str()], &[] as &[&str]).unwrap();
        let route = config
            .routes
            .iter()
            .find(|r| r.path == path && r.method.as_str() == method.to_ascii_uppercase())
            .unwrap();
        prop_assert_eq!(route.policy.limit, limit);
        prop_assert_eq!(route.policy.window, Duration::from_secs(secs));
    }

    /// IPv6 addresses group by their /64 (any two in one /64 agree, the group is inside it);
    /// IPv4 addresses stay themselves.
    #[test]
    fn ipv6_groups(high in any::<u64>(), low_a in any::<u64>(), low_b in any::<u64>(), v4 in any::<u32>()) {
        let a = IpAddr::from(std::net::Ipv6Addr::from((u128::from(high) << 64) | u128::from(low_a)));
        let b = IpAddr::from(std::net::Ipv6Addr::from((u128::from(high) << 64) | u128::from(low_b)));
        let group = client_group(a, 64);
        prop_assert_eq!(group, client_group(b, 64));
        prop_assert_eq!(group, IpAddr::from(std::net::Ipv6Addr::from(u128::from(high) << 64)));
        prop_assert_eq!(client_group(a, 128), a);
        let v4 = IpAddr::from(std::net::Ipv4Addr::from(v4));
        prop_assert_eq!(client_group(v4, 64), v4);
    }
}
