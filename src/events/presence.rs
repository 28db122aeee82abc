//! Presence: how many subscribers a channel has across the fleet, and which authenticated users
//! joined or left it.
//!
//! Each instance keeps its own counts (the hub's) and writes them, batched, to one Redis hash of
//! its own, `<prefix>events-presence:{<instance>}` (field: channel, value: its local
//! subscribers), and lists itself in `<prefix>events-presence` (a sorted set scored by when its
//! entry lapses). Every [`FLUSH`] the channels whose count changed are written in one script
//! call; every [`HEARTBEAT`] the whole hash is rewritten and the entry renewed, both living
//! [`INSTANCE_TTL`]: an instance that dies stops being counted within that time. A fleet-wide
//! count is this instance's own plus the hash fields of every listed instance.
//!
//! Users: per channel, the authenticated users with a stream here. A user's first stream on a
//! channel (on this instance) is a `join`, its last a `leave`; both are sent at the next flush,
//! net (a stream opened and closed between two flushes sends nothing), one `SPUBLISH` per
//! channel that changed, on the channel's own sharded channel, to every instance's clients of
//! it that asked for presence. So what a caller can make Redis do is bounded by time, not by
//! requests: at most one count write and one message per changed channel every [`FLUSH`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, LazyLock, Mutex, Weak},
    time::Duration,
};

use super::{hub::Hub, store::stream_key};
use crate::connection::{RedisError, RedisHandle};

/// How often changed counts and presence are written out.
pub const FLUSH: Duration = Duration::from_millis(250);
/// How often an instance renews its whole entry.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an instance's counts live without renewal: a dead instance stops counting by then.
pub const INSTANCE_TTL: Duration = Duration::from_secs(15);

/// The prefix of presence messages on a channel's sharded pub/sub channel (an event's payload
/// starts with its stream id, never with this).
pub(crate) const MESSAGE_PREFIX: &[u8] = b"presence\n";

/// Writes changed counts: `HSET` of the positive ones, `HDEL` of the zeros, then the TTL.
/// `ARGV`: the TTL in ms, then channel/count pairs.
static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if ARGV[2] == 'all' then redis.call('DEL', KEYS[1]) end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '0' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
",
    )
});

/// Lists this instance in the registry until now + TTL, and forgets lapsed instances.
static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
",
    )
});

/// The instances whose entry has not lapsed.
static ALIVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
",
    )
});

/// Publishes a presence message on a channel's sharded channel (its stream key's slot).
static ANNOUNCE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new("return redis.call('SPUBLISH', KEYS[1], ARGV[1])"));

type Pair = (Arc<str>, Arc<str>);

#[derive(Default)]
struct State {
    /// Channels whose local count changed since the last flush.
    counts: HashSet<Arc<str>>,
    /// Local streams per (channel, user) of authenticated subscribers.
    users: HashMap<Pair, u32>,
    /// The pairs last announced present.
    announced: HashSet<Pair>,
    /// Pairs whose presence may have changed since the last flush.
    changed: HashSet<Pair>,
    /// When this instance last renewed its entry (`None`: it has none), on Redis.
    renewed: Option<tokio::time::Instant>,
}

/// Where counts and presence go.
enum Store {
    /// One instance: counts are the hub's, presence is fanned out here.
    Memory,
    Redis {
        redis: RedisHandle,
        prefix: String,
        instance: String,
    },
}

/// This instance's presence: see the module docs.
pub(crate) struct Presence {
    hub: Arc<Hub>,
    store: Store,
    state: Mutex<State>,
}

/// One flush's changes of users, by channel: (joined, left).
type Moves = HashMap<Arc<str>, (Vec<Arc<str>>, Vec<Arc<str>>)>;

impl Presence {
    /// Presence for `hub`, written to `redis` when given; starts its flush task, which ends with
    /// the last reference.
    pub(crate) fn start(hub: Arc<Hub>, redis: Option<(RedisHandle, String)>) -> Arc<Self> {
        let store = match redis {
            None => Store::Memory,
            Some((redis, prefix)) => {
                let mut raw = [0u8; 8];
                let _ = getrandom::fill(&mut raw);
                Store::Redis {
                    redis,
                    prefix,
                    instance: raw.iter().map(|b| format!("{b:02x}")).collect(),
                }
            }
        };
        let presence = Arc::new(Self {
            hub,
            store,
            state: Mutex::default(),
        });
        tokio::spawn(run(Arc::downgrade(&presence)));
        presence
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a single insert or remove: a poisoned lock still holds consistent data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A stream joined `channels`, as `user` if authenticated.
    pub(crate) fn joined(&self, channels: &[Arc<str>], user: Option<&Arc<str>>) {
        let mut state = self.lock();
        for channel in channels {
            state.counts.insert(channel.clone());
            if let Some(user) = user {
                let pair = (channel.clone(), user.clone());
                *state.users.entry(pair.clone()).or_default() += 1;
                state.changed.insert(pair);
            }
        }
    }

    /// A stream left `channels`.
    pub(crate) fn left(&self, channels: &[Arc<str>], user: Option<&str>) {
        let mut state = self.lock();
        for channel in channels {
            state.counts.insert(channel.clone());
            if let Some(user) = user {
                let pair: Pair = (channel.clone(), Arc::from(user));
                if let Some(n) = state.users.get_mut(&pair) {
                    *n = n.saturating_sub(1);
                }
                state.changed.insert(pair);
            }
        }
    }

    /// Subscribers of `channel` on every instance: this one's, plus what every other live
    /// instance last wrote.
    pub(crate) async fn count(&self, channel: &str) -> Result<usize, RedisError> {
        let local = self.hub.count(channel);
        let Store::Redis {
            redis,
            prefix,
            instance,
        } = &self.store
        else {
            return Ok(local);
        };
        let alive: Vec<String> = redis.invoke(&ALIVE.key(registry_key(prefix))).await?;
        let reads = alive
            .iter()
            .filter(|i| *i != instance)
            .map(|other| async move {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(instance_key(prefix, other)).arg(channel);
                redis.query::<Option<usize>>(&cmd).await
            });
        let mut total = local;
        for n in futures_util::future::join_all(reads).await {
            total += n?.unwrap_or(0);
        }
        Ok(total)
    }

    /// Takes what changed since the last flush: the changed channels' counts now, and the users
    /// who joined or left (net), marking them announced.
    fn take(&self) -> (Vec<(Arc<str>, usize)>, Moves) {
        let mut state = self.lock();
        let counts = std::mem::take(&mut state.counts)
            .into_iter()
            .map(|c| {
                let n = self.hub.count(&c);
                (c, n)
            })
            .collect();
        let mut moves = Moves::new();
        for pair in std::mem::take(&mut state.changed) {
            let present = state.users.get(&pair).is_some_and(|n| *n > 0);
            if !present {
                state.users.remove(&pair);
            }
            let (channel, user) = pair.clone();
            match (present, state.announced.contains(&pair)) {
                (true, false) => {
                    state.announced.insert(pair);
                    moves.entry(channel).or_default().0.push(user);
                }
                (false, true) => {
                    state.announced.remove(&pair);
                    moves.entry(channel).or_default().1.push(user);
                }
                _ => {}
            }
        }
        (counts, moves)
    }

    /// Gives back what a failed flush took, to be written at the next one.
    fn restore(&self, counts: Vec<(Arc<str>, usize)>, moves: &Moves) {
        let mut state = self.lock();
        state.counts.extend(counts.into_iter().map(|(c, _)| c));
        for (channel, (joined, left)) in moves {
            for user in joined {
                state.announced.remove(&(channel.clone(), user.clone()));
                state.changed.insert((channel.clone(), user.clone()));
            }
            for user in left {
                state.announced.insert((channel.clone(), user.clone()));
                state.changed.insert((channel.clone(), user.clone()));
            }
        }
    }

    /// Writes out what changed (and, with `renew`, the whole entry).
    async fn flush(&self, renew: bool) {
        let (counts, moves) = self.take();
        let Store::Redis {
            redis,
            prefix,
            instance,
        } = &self.store
        else {
            for (channel, (joined, left)) in &moves {
                for user in joined {
                    self.hub.presence(channel, "join", user);
                }
                for user in left {
                    self.hub.presence(channel, "leave", user);
                }
            }
            return;
        };
        // An instance without subscribers writes nothing (an idle fleet costs Redis nothing);
        // one with some renews its entry every `HEARTBEAT`, and before any write once lapsed.
        let renewed = self.lock().renewed;
        let now = tokio::time::Instant::now();
        let renew = renew || renewed.is_none_or(|at| now.duration_since(at) >= HEARTBEAT);
        let written = if renew {
            let all: Vec<(Arc<str>, usize)> = self
                .hub
                .counts()
                .into_iter()
                .map(|(c, n)| (Arc::from(c), n))
                .collect();
            if all.is_empty() {
                // Clear what an earlier entry holds, once; the registry entry lapses on its own.
                let cleared = match renewed {
                    Some(_) => write(redis, prefix, instance, &[], true).await,
                    None => Ok(()),
                };
                if cleared.is_ok() {
                    self.lock().renewed = None;
                }
                cleared
            } else {
                let mut register = REGISTER.key(registry_key(prefix));
                register.arg(millis(INSTANCE_TTL)).arg(instance);
                let written = match redis.invoke::<i64>(&register).await {
                    Ok(_) => write(redis, prefix, instance, &all, true).await,
                    Err(err) => Err(err),
                };
                if written.is_ok() {
                    self.lock().renewed = Some(now);
                }
                written
            }
        } else if counts.is_empty() {
            Ok(())
        } else {
            write(redis, prefix, instance, &counts, false).await
        };
        if let Err(err) = written {
            tracing::debug!(error = %err, "presence counts not written; retrying");
            self.restore(counts, &moves);
            return;
        }
        for (channel, change) in &moves {
            let payload = message(change);
            let mut announce = ANNOUNCE.key(stream_key(prefix, channel));
            announce.arg(payload);
            if let Err(err) = redis.invoke::<i64>(&announce).await {
                tracing::debug!(error = %err, %channel, "presence not announced; retrying");
                let mut one = Moves::new();
                one.insert(channel.clone(), change.clone());
                self.restore(Vec::new(), &one);
            }
        }
    }
}

/// The payload of a presence message: the prefix, then `{"join":[..],"leave":[..]}`.
fn message((joined, left): &(Vec<Arc<str>>, Vec<Arc<str>>)) -> Vec<u8> {
    let names = |users: &[Arc<str>]| users.iter().map(|u| u.to_string()).collect::<Vec<_>>();
    let body = serde_json::json!({ "join": names(joined), "leave": names(left) });
    let mut out = MESSAGE_PREFIX.to_vec();
    out.extend_from_slice(body.to_string().as_bytes());
    out
}

/// The users a presence message says joined and left, if it is one.
pub(crate) fn parse_message(payload: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    #[derive(serde::Deserialize)]
    struct Moved {
        join: Vec<String>,
        leave: Vec<String>,
    }
    let body = payload.strip_prefix(MESSAGE_PREFIX)?;
    let moved: Moved = serde_json::from_slice(body).ok()?;
    Some((moved.join, moved.leave))
}

async fn write(
    redis: &RedisHandle,
    prefix: &str,
    instance: &str,
    counts: &[(Arc<str>, usize)],
    all: bool,
) -> Result<(), RedisError> {
    let mut invocation = WRITE.key(instance_key(prefix, instance));
    invocation
        .arg(millis(INSTANCE_TTL))
        .arg(if all { "all" } else { "changed" });
    for (channel, n) in counts {
        invocation.arg(&**channel).arg(*n);
    }
    redis.invoke::<i64>(&invocation).await.map(|_| ())
}

fn registry_key(prefix: &str) -> String {
    format!("{prefix}events-presence")
}

/// An instance's counts: the hash tag is the instance, the identity they belong to.
fn instance_key(prefix: &str, instance: &str) -> String {
    format!("{prefix}events-presence:{{{instance}}}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The flush task: every [`FLUSH`], and a renewal every [`HEARTBEAT`]; ends with the presence.
async fn run(presence: Weak<Presence>) {
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = u32::try_from(HEARTBEAT.as_millis() / FLUSH.as_millis()).unwrap_or(20);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        // Each flush's commands are bounded by the response timeout.
        presence.flush(n.is_multiple_of(every)).await;
        n = n.wrapping_add(1);
    }
}
