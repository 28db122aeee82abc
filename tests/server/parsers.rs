//! Property tests for every parser of outside input: cache keys and flush patterns,
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

/// Strings of `alphabet` whose length in bytes lies around `limit` (from `limit - 8` to
/// `limit + 8`), sometimes with one character of `spoiler` put in: every rule of a name whose
/// valid alphabet and byte limit are known, at the edge where a slip would show.
fn near_limit(
    alphabet: &'static str,
    spoiler: &'static [char],
    limit: usize,
) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    (
        proptest::collection::vec(proptest::sample::select(chars), limit - 8..=limit + 8),
        proptest::option::weighted(0.3, (proptest::sample::select(spoiler), any::<usize>())),
    )
        .prop_map(|(mut name, spoil)| {
            if let Some((c, at)) = spoil {
                let at = at % name.len();
                name[at] = c;
            }
            name.into_iter().collect()
        })
}

/// A cache key: any text, the empty key, or a printable key around the 512-byte limit (ASCII, and with
/// multi-byte characters so that bytes and characters differ), sometimes with a control
/// character in it.
fn cache_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => text(600),
        1 => Just(String::new()),
        3 => near_limit("abcXYZ019:_-./*", &['\n', '\u{0}', '\u{7f}', '\u{85}'], MAX_KEY_BYTES),
        1 => near_limit("aé€😀", &['\r', '\u{1b}'], MAX_KEY_BYTES / 2),
    ]
}

/// A channel name or an event type: any text, or names of the channel alphabet around the
/// 128-byte channel limit and the 64-byte type limit, sometimes with a forbidden character
/// (`:` is allowed in channels only; a line break in neither).
fn name() -> impl Strategy<Value = String> {
    let spoilers: &'static [char] = &['\n', '\r', ' ', '/', '{', 'é'];
    prop_oneof![
        2 => text(150),
        2 => near_limit("abzAZ09_.-:", spoilers, 128),
        2 => near_limit("abzAZ09_.-", spoilers, 64),
        1 => near_limit("abzAZ09_.-:", spoilers, 64),
    ]
}

/// A `Last-Event-ID`: any text, or `<ms>-<seq>` made of digit runs of 1 to 22 digits (so that
/// values past `u64::MAX`, 20 digits, and runs longer than 20 digits come up), values around
/// `u64::MAX`, an empty part, or a part with a sign or a space.
fn last_event_id() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        3 => "[0-9]{1,22}",
        2 => (u64::MAX - 3..=u64::MAX).prop_map(|n| n.to_string()),
        1 => Just("18446744073709551616".to_owned()),
        1 => Just(String::new()),
        1 => "[+ -][0-9]{1,5}",
    ];
    prop_oneof![
        1 => text(50),
        4 => (part.clone(), part).prop_map(|(a, b)| format!("{a}-{b}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A cache key is accepted exactly when it has 1 to 512 bytes and no control character.
    #[test]
    fn cache_keys(key in cache_key()) {
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
    fn channels_and_event_types(name in name()) {
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
    fn last_event_ids(raw in last_event_id(), ms in any::<u64>(), seq in any::<u64>()) {
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

/// Draws `n` values of `strategy` (a fixed seed: the same draws every run).
fn sample<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    use proptest::{
        strategy::ValueTree,
        test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
    };
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// The generators reach every rule their property claims, at its edge: in 500 draws (as many as
/// a property runs), each class below comes up at least 5 times.
#[test]
fn generators_reach_every_rule() {
    let at_least = |what: &str, n: usize| assert!(n >= 5, "{what}: {n} of 500 draws");
    let keys = sample(cache_key(), 500);
    let clean = |k: &&String| !k.chars().any(char::is_control);
    at_least(
        "key of exactly 512 bytes",
        keys.iter().filter(|k| k.len() == 512).filter(clean).count(),
    );
    at_least(
        "key of 513 bytes",
        keys.iter().filter(|k| k.len() == 513).filter(clean).count(),
    );
    at_least(
        "key of 505-511 bytes",
        keys.iter()
            .filter(|k| (505..512).contains(&k.len()))
            .filter(clean)
            .count(),
    );
    at_least(
        "long key, more bytes than chars",
        keys.iter()
            .filter(|k| k.len() > 400 && k.chars().count() < k.len())
            .count(),
    );
    at_least(
        "key near the limit with a control char",
        keys.iter().filter(|k| k.len() > 500 && !clean(k)).count(),
    );
    at_least("empty key", keys.iter().filter(|k| k.is_empty()).count());

    let names = sample(name(), 500);
    for (what, len, valid) in [
        ("channel", 128, valid_channel as fn(&str) -> bool),
        ("event type", 64, valid_event_type as fn(&str) -> bool),
    ] {
        at_least(
            &format!("valid {what} of {len} bytes"),
            names.iter().filter(|n| n.len() == len && valid(n)).count(),
        );
        at_least(
            &format!("{what} of {} bytes, right alphabet", len + 1),
            names
                .iter()
                .filter(|n| {
                    n.len() == len + 1
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c))
                })
                .count(),
        );
        at_least(
            &format!("{what} near {len} with a line break"),
            names
                .iter()
                .filter(|n| n.len() > len - 9 && n.contains(['\n', '\r']))
                .count(),
        );
    }
    at_least(
        "a `:` in a name under 64 bytes",
        names
            .iter()
            .filter(|n| n.len() <= 64 && n.contains(':') && valid_channel(n))
            .count(),
    );

    let ids = sample(last_event_id(), 500);
    let parts = |id: &String| {
        id.split_once('-')
            .map(|(a, b)| [a.to_owned(), b.to_owned()])
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    at_least(
        "valid id",
        ids.iter().filter(|i| i.parse::<EventId>().is_ok()).count(),
    );
    at_least(
        "id with a part of 20 digits that parses",
        ids.iter()
            .filter_map(parts)
            .filter(|[a, b]| {
                [a, b]
                    .iter()
                    .any(|p| p.len() == 20 && p.parse::<u64>().is_ok())
            })
            .count(),
    );
    at_least(
        "id with a 20-digit part past u64::MAX",
        ids.iter()
            .filter_map(parts)
            .filter(|[a, b]| {
                [a, b]
                    .iter()
                    .any(|p| p.len() == 20 && digits(p) && p.parse::<u64>().is_err())
            })
            .count(),
    );
    at_least(
        "id with a part over 20 digits",
        ids.iter()
            .filter_map(parts)
            .filter(|[a, b]| [a, b].iter().any(|p| p.len() > 20 && digits(p)))
            .count(),
    );
    at_least(
        "id with an empty part",
        ids.iter()
            .filter_map(parts)
            .filter(|[a, b]| a.is_empty() || b.is_empty())
            .count(),
    );
}
