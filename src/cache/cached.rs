//! The Rust form of a caching decorator: wrap a computation so its result is remembered under a
//! key derived from its arguments.

use std::{future::Future, time::Duration};

use serde::{Serialize, de::DeserializeOwned};

use super::{CacheError, CacheHandle};

/// A stable key for `args` under `namespace`: `namespace:` + the SHA-1 of the arguments' JSON.
///
/// Stable across processes, machines and releases (unlike `std`'s hasher), so every instance
/// sharing a Redis computes the same key.
///
/// # Errors
/// [`CacheError::Serde`] when `args` does not serialize.
pub fn key_for<A: Serialize + ?Sized>(namespace: &str, args: &A) -> Result<String, CacheError> {
    let json = serde_json::to_vec(args)?;
    Ok(format!(
        "{namespace}:{}",
        sha1_smol::Sha1::from(json).digest()
    ))
}

/// Runs `compute` through the cache: the first call stores its result for `ttl` under
/// [`key_for(namespace, args)`](key_for), later calls (from any instance) reuse it, and concurrent
/// cold calls compute once per process.
///
/// ```no_run
/// # async fn demo(cache: redkit::cache::CacheHandle) -> Result<(), redkit::cache::CacheError> {
/// use std::time::Duration;
///
/// async fn exchange_rate(from: &str, to: &str) -> Result<f64, redkit::cache::CacheError> {
///     Ok(1.08) // a slow remote call in real life
/// }
///
/// let rate: f64 = redkit::cache::cached(&cache, "fx", &("EUR", "USD"), Duration::from_secs(60), || {
///     exchange_rate("EUR", "USD")
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// `compute`'s error, or a [`CacheError`] converted into `E`.
pub async fn cached<A, T, E, F, Fut>(
    cache: &CacheHandle,
    namespace: &str,
    args: &A,
    ttl: Duration,
    compute: F,
) -> Result<T, E>
where
    A: Serialize + ?Sized,
    T: Serialize + DeserializeOwned,
    E: From<CacheError>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let key = key_for(namespace, args)?;
    cached_with_key(cache, &key, ttl, compute).await
}

/// As [`cached`], with a key the caller built (for readable keys that `flush_pattern` can target).
///
/// # Errors
/// As [`cached`].
pub async fn cached_with_key<T, E, F, Fut>(
    cache: &CacheHandle,
    key: &str,
    ttl: Duration,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: From<CacheError>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut compute = Some(compute);
    let mut loaded = None;
    let raw = cache
        .remember_json(key, ttl, || async {
            // unwrap: remember_json calls its loader at most once, and this is the only taker.
            let value = compute.take().expect("loader runs once")().await?;
            let json = serde_json::to_vec(&value).map_err(CacheError::from)?;
            loaded = Some(value);
            Ok::<_, E>(Some(bytes::Bytes::from(json)))
        })
        .await?;
    if let Some(value) = loaded {
        return Ok(value);
    }
    if let Some(value) = raw
        .value
        .and_then(|json| serde_json::from_slice(&json).ok())
    {
        return Ok(value);
    }
    // What the key holds is not a `T` (a value of another shape or another writer, or a negative
    // entry `remember` wrote): a miss. Recompute and overwrite, so the next caller hits; never
    // fail every caller of the key until its TTL runs out.
    tracing::warn!(
        key,
        "cached: the stored value does not decode; recomputing it"
    );
    // unwrap: the loader did not run: had it run, it would have set `loaded` (or its error
    // would have returned above).
    let compute = compute.take().expect("loader did not run");
    let value = compute().await?;
    if let Err(err) = cache.set(key, &value, ttl).await {
        tracing::warn!(key, error = %err, "cached: storing the recomputed value failed");
    }
    Ok(value)
}
