//! Tags: names an entry is written with, so that one call drops every entry written with a
//! name before it, at a Redis cost that does not depend on how many entries carry it.
//!
//! Each tag has a *token* in Redis (`<prefix>cachetag:<tag>`, a random string). An entry written
//! with tags records, in its envelope (see `envelope.rs`), the token each tag had then; a read
//! checks them against the current ones (one more round trip, tagged entries only) and takes an
//! entry whose token changed as absent. Dropping a tag is one `SET` of a new token (`XX
//! KEEPTTL`): one command whatever the tag's size. The token keys are tracked by the
//! invalidation feed, so the change reaches every instance's L1, which drops its entries of that
//! tag (a scan of this process's L1, no Redis).
//!
//! A token key lives at least as long as any entry written under it (each tagged write extends
//! it to twice the entry's life when it has less): a token never comes back after it expired
//! while entries still named it. Each extension is reported by the feed too, and drops the
//! tag's entries from every L1 (they are read again from L2): at most about once per entry life.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use super::CacheError;

/// Tokens kept by [`TokenCache`] before it starts over.
const TOKEN_CACHE_MAX: usize = 4096;

/// This process's copy of tag tokens, kept while the invalidation feed reports their changes:
/// an L2 read of a tagged entry then checks its tags without a second round trip. Every
/// reported change of a tag key (and a flush, and the feed going down or up) bumps the
/// generation and forgets; a token read from Redis is kept only if no change was reported
/// since the read began.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<String, String>>,
    generation: AtomicU64,
}

impl TokenCache {
    /// The generation to hand back to [`keep`](Self::keep); take it before reading Redis.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The known token of `tag`.
    pub(crate) fn get(&self, tag: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(tag).cloned()
    }

    /// Keeps tokens read from Redis since `generation`, unless a change was reported since.
    pub(crate) fn keep(&self, generation: u64, read: impl IntoIterator<Item = (String, String)>) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.clear();
        }
        tokens.extend(read);
    }

    /// Forgets `tag` (all of them: `None`): a change was reported.
    pub(crate) fn forget(&self, tag: Option<&str>) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::SeqCst);
        match tag {
            Some(tag) => {
                tokens.remove(tag);
            }
            None => tokens.clear(),
        }
    }
}

/// Most tags one entry may carry.
pub const MAX_TAGS: usize = 8;
/// Longest tag of the library, in characters (the HTTP API's are 64, stored under its own
/// prefix).
pub const MAX_TAG_CHARS: usize = 128;

/// Checks tags: at most [`MAX_TAGS`], each 1 to [`MAX_TAG_CHARS`] characters, none a control
/// character (the key charset, so that a tag can name its own Redis key).
///
/// # Errors
/// [`CacheError::InvalidTag`] saying which rule a tag breaks.
pub fn validate_tags<S: AsRef<str>>(tags: &[S]) -> Result<(), CacheError> {
    if tags.len() > MAX_TAGS {
        return Err(CacheError::InvalidTag("more than 8 tags"));
    }
    tags.iter().try_for_each(|tag| validate_tag(tag.as_ref()))
}

/// Checks one tag (see [`validate_tags`]).
///
/// # Errors
/// [`CacheError::InvalidTag`].
pub fn validate_tag(tag: &str) -> Result<(), CacheError> {
    if tag.is_empty() {
        return Err(CacheError::InvalidTag("a tag is empty"));
    }
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(CacheError::InvalidTag("a tag is too long"));
    }
    if tag.chars().any(char::is_control) {
        return Err(CacheError::InvalidTag("a tag holds a control character"));
    }
    Ok(())
}
