//! The bound each algorithm promises (see the [module docs](super)), checked over random arrival
//! schedules on the in-process store, with random limits, windows and costs.

use proptest::prelude::*;

use super::{
    Algorithm,
    algo::{Ask, MemoryCounters, Mode},
};

/// Checks `algorithm`'s bound, exactly in integers, on `units` admitted at the sorted `times`
/// (one entry per admitted unit).
fn check(algorithm: Algorithm, limit: u64, window: u64, times: &[u64]) -> Result<(), String> {
    let n = times.len();
    let lasts: Vec<usize> = (0..n)
        .filter(|&j| j + 1 == n || times[j] != times[j + 1])
        .collect();
    match algorithm {
        Algorithm::SlidingLog => {
            for &j in &lasts {
                let from = times.partition_point(|&x| x + window <= times[j]);
                if (j + 1 - from) as u64 > limit {
                    return Err(format!(
                        "{} in the window ending at {}",
                        j + 1 - from,
                        times[j]
                    ));
                }
            }
        }
        Algorithm::Gcra => {
            let firsts = (0..n).filter(|&i| i == 0 || times[i] != times[i - 1]);
            for i in firsts {
                for &j in lasts.iter().filter(|&&j| j >= i) {
                    let span = u128::from(times[j] - times[i]);
                    let bound = u128::from(limit) + span * u128::from(limit) / u128::from(window);
                    if (j + 1 - i) as u128 > bound {
                        return Err(format!("{} in [{}, {}]", j + 1 - i, times[i], times[j]));
                    }
                }
            }
        }
        _ => {
            for &j in &lasts {
                let idx = times[j] / window;
                let count = |k: u64| times[..=j].iter().filter(|&&x| x / window == k).count();
                let previous = if idx == 0 { 0 } else { count(idx - 1) } as u128;
                let current = count(idx) as u128;
                let (w, elapsed) = (u128::from(window), u128::from(times[j] % window));
                if previous * (w - elapsed) + current * w > u128::from(limit) * w {
                    return Err(format!(
                        "previous {previous}, current {current} at {}",
                        times[j]
                    ));
                }
            }
        }
    }
    Ok(())
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::SlidingLog),
        Just(Algorithm::SlidingCounter),
        Just(Algorithm::Gcra),
    ]
}

/// How far the clock moves before a request.
#[derive(Debug, Clone, Copy)]
enum Advance {
    /// A share of the window, in millionths (often nothing, often a sliver).
    Share(u64),
    /// Whole multiples of the window over the limit rounded down: the spans at which an
    /// interval rounded down would let GCRA refill faster than `limit` per `window`.
    Intervals(u64),
}

/// A schedule's steps: how far the clock moves, and the cost of the request then.
fn steps() -> impl Strategy<Value = Vec<(Advance, u64)>> {
    let advance = prop_oneof![
        Just(Advance::Share(0)),
        (0..2_000_u64).prop_map(Advance::Share),
        (0..100_000_u64).prop_map(Advance::Share),
        (0..1_000_000_u64).prop_map(Advance::Share),
        Just(Advance::Share(1_000_000)),
        (1..4_u64).prop_map(Advance::Intervals),
    ];
    let cost = prop_oneof![4 => Just(1_u64), 1 => 1..5_u64];
    prop::collection::vec((advance, cost), 1..400)
}

proptest! {
    /// Every algorithm keeps its bound over any schedule, limit (1 to 300) and window (1 s to a
    /// day, in whole microseconds that the limit need not divide).
    #[test]
    fn every_algorithm_keeps_its_bound(
        algorithm in algorithm(),
        limit in prop_oneof![1..20_u64, 20..300_u64],
        window_ms in prop_oneof![1_000..120_000_u64, Just(86_400_000_u64)],
        odd_us in 0..1_000_u64,
        steps in steps(),
    ) {
        let window = window_ms * 1_000 + odd_us;
        let store = MemoryCounters::new();
        let mut now = 1_700_000_000_000_000_u64;
        let mut times = Vec::new();
        for (advance, cost) in steps {
            now += match advance {
                Advance::Share(share) => {
                    u64::try_from(u128::from(window) * u128::from(share) / 1_000_000).unwrap()
                }
                Advance::Intervals(k) => k * (window / limit),
            };
            let ask = Ask {
                key: "k".to_owned(), algorithm, window, limit, cost, shadow: false,
                mode: Mode::Consume, lease: 1,
            };
            if store.decide(&ask, now, Mode::Consume).allowed {
                times.extend(std::iter::repeat_n(now, cost as usize));
            }
        }
        prop_assert_eq!(check(algorithm, limit, window, &times), Ok(()));
    }
}
