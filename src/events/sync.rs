//! Subscribing channels on the subscriber connection, with their baseline and their catch-up
//! from history: what [`EventsActor`](super::EventsActor) runs on a join and after a loss.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;

use super::{
    hub::Hub,
    read::{After, Read, newest_id, read_after},
    store::{MAX_REPLAY_BYTES, stream_key},
};
use crate::connection::{RedisError, RedisHandle, Subscriber};

/// Most events one page of a catch-up reads.
const CATCH_UP_PAGE: usize = 100;

/// How long a catch-up waits for its clients' queues to take the next page. Then the page is
/// fanned out: a client still without room is cut as a slow consumer (as live delivery cuts
/// one), so a client that stops reading neither resets its channel nor holds the others back
/// for more than this, once.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);

/// Channels resubscribed at once by one resync.
const SYNC_CONCURRENCY: usize = 32;

/// Subscribes `channels` and fans out what was published since each channel's last delivered id
/// (for a channel new to this process: since just before the subscription). Answers, for each
/// channel in order, how many events were replayed, or why it could not be subscribed: each
/// channel on its own, so that one whose slot is not served (a failover under way) holds no
/// other back. An error for all of them when Redis does not answer `TIME`.
///
/// `after_outage` (a resync after the connection was lost, or after a failed subscription):
/// checks the connection first, and a channel that has never been baselined starts from when
/// its first client joined rather than from the stream's newest event, since its clients have
/// been waiting through the outage and anything published since Redis returned is theirs.
pub(crate) async fn sync_channels(
    redis: RedisHandle,
    push: Subscriber,
    hub: Arc<Hub>,
    (prefix, timeout, catch_up): (String, Duration, usize),
    channels: Vec<String>,
    after_outage: bool,
) -> Result<Vec<Result<usize, RedisError>>, RedisError> {
    // After an outage the connection is checked first, with `TIME`: stream ids come from
    // Redis's clock, and join times from ours, so a late baseline needs the difference.
    let skew_ms = if after_outage {
        let (secs, micros): (i64, i64) = redis.query(&redis::cmd("TIME")).await?;
        let local = hub.clock().now_ms();
        Some(secs.saturating_mul(1000).saturating_add(micros / 1000) - local)
    } else {
        None
    };
    let (redis, push, hub, prefix) = (&redis, &push, &hub, prefix.as_str());
    Ok(futures_util::stream::iter(channels.iter())
        .map(|channel| async move {
            let synced = sync_channel(redis, push, hub, (prefix, catch_up), channel, skew_ms);
            // A few round trips, each bounded by the response timeout; this outer bound keeps a
            // stalled server from pausing the actor for long.
            match tokio::time::timeout(timeout * 4, synced).await {
                Ok(result) => result,
                Err(_) => Err(RedisError::Timeout(timeout * 4)),
            }
        })
        .buffered(SYNC_CONCURRENCY)
        .collect()
        .await)
}

/// [`sync_channels`] for one channel.
async fn sync_channel(
    redis: &RedisHandle,
    push: &Subscriber,
    hub: &Hub,
    (prefix, catch_up): (&str, usize),
    channel: &str,
    skew_ms: Option<i64>,
) -> Result<usize, RedisError> {
    // 1. Baseline: where live delivery starts for a channel that never had it.
    if hub.last_id(channel).is_none() {
        let last = newest_id(redis, prefix, channel).await?;
        hub.baseline(channel, last, skew_ms);
    }
    // 2. Subscribe: from here on, pushes carry every new event. A sharded channel, one command
    // each: on a cluster it goes to its slot's node, and channels of different slots are never
    // subscribed together (CROSSSLOT).
    push.subscribe_sharded(stream_key(prefix, channel).as_bytes())
        .await?;
    // 3. Catch up on what was published between the baseline and the subscription, in pages
    // of at most `CATCH_UP_PAGE` events (no more than a client's queue holds, `catch_up`) and
    // `MAX_REPLAY_BYTES` (Redis ships no more per round trip), each page fanned out once every
    // client's queue has room for it (waiting `CATCH_UP_PATIENCE` at most, then a client
    // without room is cut): a busy channel behind by thousands of events after a failover is replayed
    // in full while its clients keep reading. A channel whose history no longer reaches back
    // gets `event: reset` and goes on from the newest event.
    let Some(mut from) = hub.last_id(channel) else {
        return Ok(0);
    };
    let page = CATCH_UP_PAGE.min(catch_up).max(1);
    let mut replayed = 0;
    loop {
        let bounds = (page, MAX_REPLAY_BYTES);
        let newest = match read_after(redis, (prefix, channel), from, bounds, Read::Page).await? {
            After::Events(events) if events.is_empty() => break,
            After::Events(events) => {
                let patience = tokio::time::Instant::now() + CATCH_UP_PATIENCE;
                wait_for_room(hub, channel, events.len(), patience).await;
                for (id, bytes) in events {
                    from = id;
                    replayed += hub.fan_out(channel, id, &bytes, true).delivered.min(1);
                }
                continue;
            }
            After::Reset(newest) => newest,
        };
        let sent = hub.reset(channel, newest);
        tracing::warn!(
            channel,
            sent,
            "events missed beyond the catch-up bound or history; clients sent a reset"
        );
        break;
    }
    Ok(replayed)
}

/// Waits until every client of `channel` has room for `events` more, or `deadline` passes.
async fn wait_for_room(hub: &Hub, channel: &str, events: usize, deadline: tokio::time::Instant) {
    loop {
        if hub.room(channel) >= events || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
