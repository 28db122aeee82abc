//! What a multi-channel subscription starts from: its channel list, and on each channel the
//! live position and the replay a `Last-Event-ID` asks for.

use std::sync::Arc;

use super::{
    EventsError,
    cursor::{MAX_STREAM_CHANNELS, Resume},
    hub::Hub,
    read::Read,
    store::{EventStore, MAX_REPLAY_BYTES, Replay},
    stream::ChannelStart,
    wire::{EventId, valid_channel},
};

/// The channels of a multi-channel stream: each valid, repeats collapsed, sorted (the order
/// positions are written in), 1 to [`MAX_STREAM_CHANNELS`] of them.
///
/// # Errors
/// [`EventsError::InvalidChannel`] for a bad name, [`EventsError::ChannelCount`] for none or
/// too many.
pub(crate) fn channel_list<S: AsRef<str>>(names: &[S]) -> Result<Arc<[Arc<str>]>, EventsError> {
    // At most 64 names as sent (what the OpenAPI document says), repeats included: a hostile
    // list of a million repeats is refused unread.
    if names.is_empty() || names.len() > MAX_STREAM_CHANNELS {
        return Err(EventsError::ChannelCount(MAX_STREAM_CHANNELS));
    }
    let mut list: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.as_ref();
        if !valid_channel(name) {
            return Err(EventsError::InvalidChannel);
        }
        list.push(name);
    }
    list.sort_unstable();
    list.dedup();
    if list.len() > MAX_STREAM_CHANNELS {
        return Err(EventsError::ChannelCount(MAX_STREAM_CHANNELS));
    }
    Ok(list.into_iter().map(Arc::from).collect())
}

/// A `Last-Event-ID` to resume after: trimmed, `None` when empty.
pub(crate) fn resume_point(last_event_id: Option<&str>) -> Option<&str> {
    last_event_id.map(str::trim).filter(|s| !s.is_empty())
}

/// How the stream starts on each of `channels` (joined to the hub, and on Redis subscribed
/// live, before this is called): where live delivery stands, and what the resume replays. A
/// stream's replay holds at most [`MAX_REPLAY_BYTES`] in all (as a single channel's) and
/// `max_replay` events per channel; a channel beyond either gets `event: reset`.
pub(crate) async fn starts(
    hub: &Hub,
    history: &dyn EventStore,
    channels: &[Arc<str>],
    resume: Option<&Resume>,
    max_replay: usize,
) -> Vec<ChannelStart> {
    let mut budget = MAX_REPLAY_BYTES;
    let mut out = Vec::with_capacity(channels.len());
    for (i, channel) in channels.iter().enumerate() {
        // Memory: history's newest, read after the join (events after it are queued). Redis:
        // live delivery's last id, set by the subscription the join awaited.
        let live = history
            .newest_local(channel)
            .or_else(|| hub.last_id(channel));
        let resume = match resume {
            None => None,
            Some(Resume::OtherList) => Some((EventId::ZERO, Replay::Reset)),
            Some(Resume::At(positions)) => match positions[i] {
                None => None,
                Some(from) => {
                    let read = history
                        .replay(channel, from, (max_replay, budget), Read::Since)
                        .await;
                    let replay = read.unwrap_or_else(|err| {
                        tracing::warn!(error = %err, %channel, "history unavailable for a resume; sending reset");
                        Replay::Reset
                    });
                    if let Replay::Events(events, _) = &replay {
                        budget = budget.saturating_sub(events.bytes);
                    }
                    Some((from, replay))
                }
            },
        };
        out.push(ChannelStart { live, resume });
    }
    out
}
