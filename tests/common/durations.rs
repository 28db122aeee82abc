//! Durations that probe overflow: every edge a TTL or an interval meets, and random ones.

use std::time::Duration;

use proptest::strategy::{Strategy, ValueTree};

/// The 100-year bound redkit accepts (`settings::MAX_DURATION`).
const YEARS_100: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The edges (zero, just under and at a second, the 100-year bound and just past it, every way
/// of writing the largest duration) and `random` durations spread over every order of magnitude
/// up to `u64::MAX` seconds (deterministic: the same ones on every run).
pub fn durations(random: usize) -> Vec<Duration> {
    let mut all = vec![
        Duration::MAX,
        Duration::new(u64::MAX, 0),
        Duration::from_secs(u64::MAX / 1000),
        Duration::from_millis(u64::MAX),
        YEARS_100 + Duration::from_nanos(1),
        YEARS_100,
        Duration::from_secs(1),
        Duration::from_millis(999),
        Duration::ZERO,
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..random {
        let (secs, nanos) = (0u32..64, 0u32..1_000_000_000)
            .prop_flat_map(|(bits, nanos)| {
                (
                    0..=(u64::MAX >> (63 - bits)),
                    proptest::strategy::Just(nanos),
                )
            })
            .new_tree(&mut runner)
            .unwrap()
            .current();
        all.push(Duration::new(secs, nanos));
    }
    all
}
