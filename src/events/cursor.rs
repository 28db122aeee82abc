//! The position of a multi-channel stream on each of its channels: the `id:` of its frames, and
//! so the `Last-Event-ID` a browser sends back on its own when it reconnects.
//!
//! Format: `m<list>:<base>:<p1>,<p2>,…`, one position per channel in the stream's channel list
//! (sorted, repeats collapsed), all numbers in base 36 (`0-9a-z`):
//! - `<list>`: a 32-bit hash of the channel list, so that an id sent to another list is known
//!   as such (its channels are reset instead of resumed from positions of other channels);
//! - `<base>`: milliseconds that every position counts from (the smallest at the stream's start);
//! - a position: empty (not known: the stream started while Redis was unreachable; resumed live,
//!   without replay), `*` (before the channel's first event), or `<ms>[.<seq>]` for the stream id
//!   `base + ms`-`seq` (`~<ms>` when before `base`: a cluster's nodes have their own clocks).
//!
//! 64 channels take at most 64 × 28 characters plus the head: never more than
//! [`MAX_CURSOR_LEN`], which a resume may not exceed either.

use std::sync::Arc;

use super::wire::EventId;

/// Most distinct channels one stream follows.
pub const MAX_STREAM_CHANNELS: usize = 64;
/// Longest `Last-Event-ID` a multi-channel stream accepts (longer: 400).
pub const MAX_CURSOR_LEN: usize = 2048;

/// Where a multi-channel stream stands on each channel (`None`: not known), and its encoding.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    list: u32,
    base: u64,
    positions: Vec<Option<EventId>>,
    /// Each position as encoded: an event re-encodes only its own channel's.
    parts: Vec<String>,
}

/// What a `Last-Event-ID` says about a stream's channels.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// A position per channel of the list, in its order.
    At(Vec<Option<EventId>>),
    /// A well-formed id of another channel list: nothing is known of this one's positions.
    OtherList,
}

/// Why a `Last-Event-ID` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Longer than [`MAX_CURSOR_LEN`].
    TooLong,
    /// Not in the format, or not one position per channel.
    Syntax,
}

/// FNV-1a of the channel list, one name per line.
fn list_hash(channels: &[Arc<str>]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for (i, channel) in channels.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ u32::from(b'\n')).wrapping_mul(0x0100_0193);
        }
        for b in channel.bytes() {
            hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    hash
}

fn base36(mut n: u64, out: &mut String) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or("0"));
}

fn parse36(text: &str) -> Result<u64, Malformed> {
    if text.is_empty()
        || text.len() > 13
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Err(Malformed::Syntax);
    }
    u64::from_str_radix(text, 36).map_err(|_| Malformed::Syntax)
}

impl Cursor {
    /// A cursor at `positions` (one per channel of `channels`, in its order).
    pub(crate) fn new(channels: &[Arc<str>], positions: Vec<Option<EventId>>) -> Self {
        let base = positions
            .iter()
            .flatten()
            .filter(|id| **id != EventId::ZERO)
            .map(|id| id.ms)
            .min()
            .unwrap_or(0);
        let mut cursor = Self {
            list: list_hash(channels),
            base,
            parts: vec![String::new(); positions.len()],
            positions,
        };
        for i in 0..cursor.positions.len() {
            cursor.encode_part(i);
        }
        cursor
    }

    fn encode_part(&mut self, i: usize) {
        let part = &mut self.parts[i];
        part.clear();
        match self.positions[i] {
            None => {}
            Some(EventId::ZERO) => part.push('*'),
            Some(id) => {
                if id.ms < self.base {
                    part.push('~');
                }
                base36(id.ms.abs_diff(self.base), part);
                if id.seq > 0 {
                    part.push('.');
                    base36(id.seq, part);
                }
            }
        }
    }

    /// The position on channel `i`.
    pub(crate) fn get(&self, i: usize) -> Option<EventId> {
        self.positions[i]
    }

    /// Moves channel `i` on to `id`.
    pub(crate) fn set(&mut self, i: usize, id: EventId) {
        self.positions[i] = Some(id);
        self.encode_part(i);
    }

    /// The id to send: every position, as in the module docs.
    pub(crate) fn encode(&self) -> String {
        let mut out =
            String::with_capacity(24 + self.parts.iter().map(|p| p.len() + 1).sum::<usize>());
        out.push('m');
        base36(u64::from(self.list), &mut out);
        out.push(':');
        base36(self.base, &mut out);
        out.push(':');
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(part);
        }
        out
    }
}

/// Reads a `Last-Event-ID` sent to a stream of `channels`.
pub(crate) fn parse(text: &str, channels: &[Arc<str>]) -> Result<Resume, Malformed> {
    if text.len() > MAX_CURSOR_LEN {
        return Err(Malformed::TooLong);
    }
    let rest = text.strip_prefix('m').ok_or(Malformed::Syntax)?;
    let mut head = rest.splitn(3, ':');
    let (Some(list), Some(base), Some(positions)) = (head.next(), head.next(), head.next()) else {
        return Err(Malformed::Syntax);
    };
    let list = u32::try_from(parse36(list)?).map_err(|_| Malformed::Syntax)?;
    let base = parse36(base)?;
    let positions = positions
        .split(',')
        .map(|part| parse_position(part, base))
        .collect::<Result<Vec<_>, _>>()?;
    if positions.len() > MAX_STREAM_CHANNELS {
        return Err(Malformed::Syntax);
    }
    if list != list_hash(channels) {
        return Ok(Resume::OtherList);
    }
    if positions.len() != channels.len() {
        return Err(Malformed::Syntax);
    }
    Ok(Resume::At(positions))
}

fn parse_position(part: &str, base: u64) -> Result<Option<EventId>, Malformed> {
    match part {
        "" => return Ok(None),
        "*" => return Ok(Some(EventId::ZERO)),
        _ => {}
    }
    let (before, part) = match part.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, part),
    };
    let (ms, seq) = match part.split_once('.') {
        Some((ms, seq)) => (parse36(ms)?, parse36(seq)?),
        None => (parse36(part)?, 0),
    };
    // Out of range only in an id this server did not write: it resumes from the nearest end.
    let ms = if before {
        base.saturating_sub(ms)
    } else {
        base.saturating_add(ms)
    };
    Ok(Some(EventId { ms, seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    /// Every kind of position round-trips, and moving one re-encodes it.
    #[test]
    fn positions_round_trip() {
        let channels = list(&["a", "b", "c", "d"]);
        let id = |ms, seq| Some(EventId { ms, seq });
        let start = vec![
            id(1_700_000_000_000, 3),
            None,
            Some(EventId::ZERO),
            id(1_699_999_999_000, 0),
        ];
        let mut cursor = Cursor::new(&channels, start.clone());
        assert_eq!(parse(&cursor.encode(), &channels), Ok(Resume::At(start)));
        cursor.set(
            1,
            EventId {
                ms: 1_700_000_000_500,
                seq: 0,
            },
        );
        cursor.set(
            3,
            EventId {
                ms: u64::MAX,
                seq: u64::MAX,
            },
        );
        let encoded = cursor.encode();
        assert!(encoded.len() <= MAX_CURSOR_LEN);
        let Ok(Resume::At(back)) = parse(&encoded, &channels) else {
            panic!("{encoded}");
        };
        assert_eq!(back[1], id(1_700_000_000_500, 0));
        assert_eq!(back[3], id(u64::MAX, u64::MAX));
    }

    /// 64 channels at their longest positions stay within the bound.
    #[test]
    fn longest_cursor_is_bounded() {
        let channels: Vec<Arc<str>> = (0..64).map(|i| Arc::from(format!("c{i}"))).collect();
        let mut positions = vec![
            Some(EventId {
                ms: u64::MAX,
                seq: u64::MAX
            });
            64
        ];
        positions[0] = Some(EventId { ms: 1, seq: 0 });
        let encoded = Cursor::new(&channels, positions).encode();
        assert!(encoded.len() <= MAX_CURSOR_LEN, "{}", encoded.len());
    }

    /// Another list's id is recognised; garbage, overflow and a wrong count are refused; a
    /// position before time's start resumes from it.
    #[test]
    fn hostile_ids_are_refused() {
        let channels = list(&["a", "b"]);
        let other = Cursor::new(&list(&["a", "c"]), vec![None, None]).encode();
        assert_eq!(parse(&other, &channels), Ok(Resume::OtherList));
        let mine = Cursor::new(&channels, vec![None, None]).encode();
        let head = mine.rsplit_once(':').unwrap().0;
        for bad in [
            "1700000000000-0".to_owned(),
            "m".to_owned(),
            format!("{head}:,,"),
            format!("{head}:zzzzzzzzzzzzzz,"),
            format!("{head}:A,"),
            format!("{head}:1.,"),
        ] {
            assert_eq!(parse(&bad, &channels), Err(Malformed::Syntax), "{bad}");
        }
        assert_eq!(
            parse(&format!("{head}:~zzzzzzzzzzzz,"), &channels),
            Ok(Resume::At(vec![Some(EventId::ZERO), None]))
        );
        assert_eq!(
            parse(&"m".repeat(MAX_CURSOR_LEN + 1), &channels),
            Err(Malformed::TooLong)
        );
    }
}
