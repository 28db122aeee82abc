//! Unit tests of L1 and its per-thread front.

use super::{front::*, *};

fn l1() -> L1 {
    L1::new(1 << 20, Duration::from_secs(60), Arc::new(Stats::default()))
}

fn front_len() -> usize {
    FRONT.with(|front| front.borrow().entries.len())
}

fn value(text: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn changes_are_seen_through_the_front() {
    let l1 = l1();
    let ttl = Duration::from_secs(60);
    l1.insert("k", value("1"), ttl, None, None);
    assert_eq!(l1.get("k"), Some(value("1")));
    // Served from the front now.
    assert_eq!(l1.get("k"), Some(value("1")));
    assert!(FRONT.with(|f| f.borrow().entries.contains_key("k")));
    l1.insert("k", value("2"), ttl, None, None);
    assert_eq!(l1.get("k"), Some(value("2")));
    assert_eq!(l1.get("k"), Some(value("2")));
    l1.insert("k", None, ttl, None, None);
    assert_eq!(l1.get("k"), Some(None));
    assert!(l1.invalidate("k"));
    assert_eq!(l1.get("k"), None);
    l1.insert("k", value("3"), ttl, None, None);
    assert_eq!(l1.get("k"), Some(value("3")));
    assert_eq!(l1.get("k"), Some(value("3")));
    assert_eq!(l1.remove_matching("*"), 1);
    assert_eq!(l1.get("k"), None);
}

/// A fill whose ticket an invalidation (of its key, of its stripe, or a flush) overtook is
/// refused; one taken afterwards is kept.
#[test]
fn overtaken_fills_are_refused() {
    let l1 = l1();
    let ttl = Duration::from_secs(60);
    let ticket = l1.ticket("k");
    l1.invalidate("k");
    assert!(!l1.fill("k", value("old"), ttl, ticket));
    assert_eq!(l1.get("k"), None);
    let ticket = l1.ticket("k");
    l1.invalidate_all();
    assert!(!l1.fill("k", value("old"), ttl, ticket));
    assert_eq!(l1.get("k"), None);
    let ticket = l1.ticket("k");
    assert!(l1.fill("k", value("new"), ttl, ticket));
    assert_eq!(l1.get("k"), Some(value("new")));
    assert_eq!(l1.get("k"), Some(value("new")));
}

/// While bypassed, L1 answers nothing (fronts included) and keeps nothing; going live
/// flushes, and refuses fills whose ticket predates it.
#[test]
fn bypassed_l1_serves_and_keeps_nothing() {
    let l1 = l1();
    let ttl = Duration::from_secs(60);
    l1.fill("k", value("1"), ttl, l1.ticket("k"));
    assert_eq!(l1.get("k"), Some(value("1")));
    assert_eq!(l1.get("k"), Some(value("1")));
    l1.set_live(false);
    assert_eq!(l1.get("k"), None);
    let during = l1.ticket("k");
    assert!(!l1.fill("k", value("2"), ttl, during));
    l1.set_live(true);
    assert_eq!(l1.get("k"), None);
    assert!(!l1.fill("k", value("2"), ttl, during));
    assert!(l1.fill("k", value("3"), ttl, l1.ticket("k")));
    assert_eq!(l1.get("k"), Some(value("3")));
}

/// A writer waiting for its echo is woken by the key's invalidation, or by a flush.
#[test]
fn echoes_wake_their_writers() {
    let l1 = l1().fed();
    assert!(
        l1.echo("k").is_none(),
        "no echo comes while the feed is down"
    );
    l1.set_live(true);
    let mut echo = l1.echo("k").unwrap();
    let mut other = l1.echo("other").unwrap();
    l1.invalidate_reported("k");
    assert!(
        echo.try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
    );
    assert_eq!(other.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    l1.invalidate_all_reported();
    assert_eq!(other.try_recv(), Err(oneshot::error::TryRecvError::Closed));
    assert!(
        L1::new(1, Duration::from_secs(1), Arc::default())
            .echo("k")
            .is_none()
    );
}

/// Echoes that never come (failed writes, refused fills) do not pile up: once their
/// writers stop waiting, the entries are swept, and waiting writers keep theirs.
#[test]
fn abandoned_echo_waiters_are_swept() {
    let l1 = l1().fed();
    l1.set_live(true);
    let mut kept = l1.echo("kept").unwrap();
    for i in 0..5 * ECHO_SWEEP_AT {
        drop(l1.echo(&format!("k{i}")).unwrap());
    }
    let waiting = l1.with_echoes(|e| e.len()).unwrap();
    assert!(waiting <= ECHO_SWEEP_AT, "{waiting} entries");
    l1.invalidate_reported("kept");
    assert_eq!(kept.try_recv(), Err(oneshot::error::TryRecvError::Closed));
}

#[test]
fn another_threads_change_is_seen_at_once() {
    let l1 = l1();
    let ttl = Duration::from_secs(60);
    l1.insert("shared", value("old"), ttl, None, None);
    for _ in 0..3 {
        assert_eq!(l1.get("shared"), Some(value("old")));
    }
    let writer = l1.clone();
    std::thread::spawn(move || writer.insert("shared", value("new"), ttl, None, None))
        .join()
        .unwrap();
    assert_eq!(l1.get("shared"), Some(value("new")));
    let writer = l1.clone();
    std::thread::spawn(move || writer.invalidate("shared"))
        .join()
        .unwrap();
    assert_eq!(l1.get("shared"), None);
}

#[test]
fn instances_do_not_share_front_entries() {
    let (a, b) = (l1(), l1());
    let ttl = Duration::from_secs(60);
    a.insert("same", value("a"), ttl, None, None);
    b.insert("same", value("b"), ttl, None, None);
    for _ in 0..3 {
        assert_eq!(a.get("same"), Some(value("a")));
        assert_eq!(b.get("same"), Some(value("b")));
    }
}

#[test]
fn front_entries_expire_with_their_l1_entry() {
    let l1 = l1();
    l1.insert("brief", value("x"), Duration::from_millis(100), None, None);
    assert_eq!(l1.get("brief"), Some(value("x")));
    assert_eq!(l1.get("brief"), Some(value("x")));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(l1.get("brief"), None);
}

#[test]
fn front_is_bounded() {
    let l1 = l1();
    let ttl = Duration::from_secs(60);
    for i in 0..(FRONT_MAX_ENTRIES + 10) {
        let key = format!("key:{i}");
        l1.insert(&key, value("v"), ttl, None, None);
        assert_eq!(l1.get(&key), Some(value("v")));
        assert!(front_len() <= FRONT_MAX_ENTRIES);
    }
    // Full, it made room one entry at a time rather than emptying itself.
    assert_eq!(front_len(), FRONT_MAX_ENTRIES);
    // Replacing small values with large ones never takes the front past its byte cap.
    let large = Bytes::from(vec![b'2'; FRONT_MAX_VALUE]);
    for i in 0..(FRONT_MAX_ENTRIES - 10) {
        let key = format!("key:{}", i + 10);
        l1.insert(&key, Some(large.clone()), ttl, None, None);
        assert_eq!(l1.get(&key), Some(Some(large.clone())));
        assert!(FRONT.with(|f| f.borrow().bytes) <= FRONT_MAX_BYTES);
    }
    FRONT.with(|f| {
        let f = f.borrow();
        let held: usize = f
            .entries
            .values()
            .map(|e| e.value.as_ref().map_or(0, Bytes::len))
            .sum();
        assert_eq!(f.bytes, held);
    });
    let big = Bytes::from(vec![b'1'; FRONT_MAX_VALUE + 1]);
    l1.insert("big", Some(big.clone()), ttl, None, None);
    assert_eq!(l1.get("big"), Some(Some(big)));
    assert!(!FRONT.with(|f| f.borrow().entries.contains_key("big")));
    assert!(FRONT.with(|f| f.borrow().bytes) <= FRONT_MAX_BYTES);
}
