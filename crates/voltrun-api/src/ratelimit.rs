//! In-memory rate limits: fixed windows for login and registration attempts, token buckets
//! for invocations. Per node: behind a load balancer each node limits on its own.
//!
//! Every map is bounded by memory, not by what callers send: a key is stored as a 128-bit
//! keyed SipHash of the caller's string (so a 5 MB email costs 16 bytes, and nobody can
//! choose keys that collide), entries that can no longer limit anything are swept once per
//! window, and at [`MAX_ENTRIES`] the oldest tenth is evicted. One entry is under 64 bytes
//! with the table's overhead, so a limiter never holds more than about 8 MiB.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys one limiter tracks; past it the oldest tenth is evicted.
pub const MAX_ENTRIES: usize = 100_000;

/// A fixed-size, keyed digest of a limiter key.
type KeyHash = u128;

/// Two independently keyed SipHashes: 128 bits, random per process.
struct KeyHasher(RandomState, RandomState);

impl KeyHasher {
    fn new() -> Self {
        KeyHasher(RandomState::new(), RandomState::new())
    }

    fn hash(&self, key: &str) -> KeyHash {
        ((self.0.hash_one(key) as u128) << 64) | self.1.hash_one(key) as u128
    }
}

/// A map of limiter state by key hash with the sweep and the cap every limiter shares.
struct Bounded<V> {
    map: HashMap<KeyHash, V>,
    last_sweep: Instant,
    cap: usize,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Bounded { map: HashMap::new(), last_sweep: Instant::now(), cap: cap.max(10) }
    }

    /// Drops entries `live` says are spent (at most once per `every`), then, if still at the
    /// cap, the oldest tenth by `age`.
    fn make_room(&mut self, now: Instant, every: Duration, live: impl Fn(&V) -> bool, age: impl Fn(&V) -> Instant) {
        if now.duration_since(self.last_sweep) >= every || self.map.len() >= self.cap {
            self.map.retain(|_, v| live(v));
            self.last_sweep = now;
        }
        if self.map.len() >= self.cap {
            let mut starts: Vec<Instant> = self.map.values().map(&age).collect();
            let tenth = self.cap / 10;
            let (_, cut, _) = starts.select_nth_unstable(tenth);
            let cut = *cut;
            self.map.retain(|_, v| age(v) > cut);
        }
    }
}

/// Counts events per key in fixed windows.
pub struct WindowLimiter {
    max: u32,
    window: Duration,
    hasher: KeyHasher,
    /// (window start, events in it) by key hash.
    hits: Mutex<Bounded<(Instant, u32)>>,
}

impl WindowLimiter {
    /// At most `max` events per key per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self::with_capacity(max, window, MAX_ENTRIES)
    }

    /// As [`WindowLimiter::new`], tracking at most `cap` keys.
    pub fn with_capacity(max: u32, window: Duration, cap: usize) -> Self {
        WindowLimiter { max, window, hasher: KeyHasher::new(), hits: Mutex::new(Bounded::new(cap)) }
    }

    /// Counts an event; `Err(retry_after_seconds)` when over the limit (the event is then
    /// not counted).
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        self.check(key)?;
        self.record(key);
        Ok(())
    }

    /// `Err(retry_after_seconds)` when `key` has used up its window; counts nothing.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let h = self.hasher.hash(key);
        let now = Instant::now();
        let hits = self.hits.lock().expect("limiter lock");
        match hits.map.get(&h) {
            Some(&(start, n)) if n >= self.max && now.duration_since(start) < self.window => Err(self.window.saturating_sub(now.duration_since(start)).as_secs().max(1)),
            _ => Ok(()),
        }
    }

    /// Counts an event for `key`.
    pub fn record(&self, key: &str) {
        let h = self.hasher.hash(key);
        let now = Instant::now();
        let window = self.window;
        let mut hits = self.hits.lock().expect("limiter lock");
        if !hits.map.contains_key(&h) {
            hits.make_room(now, window, |(start, _)| now.duration_since(*start) < window, |(start, _)| *start);
        }
        let e = hits.map.entry(h).or_insert((now, 0));
        if now.duration_since(e.0) >= window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Keys tracked now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.hits.lock().expect("limiter lock").map.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A token bucket per key: `rate` per second, bursts of up to `rate`.
pub struct BucketLimiter {
    rate: f64,
    hasher: KeyHasher,
    /// (last refill, tokens) by key hash.
    buckets: Mutex<Bounded<(Instant, f64)>>,
}

impl BucketLimiter {
    /// `rate` events per second per key; 0 disables the limit.
    pub fn new(rate: f64) -> Self {
        BucketLimiter { rate, hasher: KeyHasher::new(), buckets: Mutex::new(Bounded::new(MAX_ENTRIES)) }
    }

    /// Takes a token; `Err(retry_after_seconds)` when the bucket is empty.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let h = self.hasher.hash(key);
        let now = Instant::now();
        let mut b = self.buckets.lock().expect("limiter lock");
        if !b.map.contains_key(&h) {
            // A bucket untouched for a second is full again: forgetting it changes nothing.
            let full_after = Duration::from_secs(1);
            b.make_room(now, Duration::from_secs(60), |(last, _)| now.duration_since(*last) < full_after, |(last, _)| *last);
        }
        let (last, tokens) = b.map.entry(h).or_insert((now, self.rate));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        if *tokens < 1.0 {
            return Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64);
        }
        *tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_over_max() {
        let l = WindowLimiter::new(2, Duration::from_secs(60));
        assert!(l.hit("a").is_ok() && l.hit("a").is_ok());
        assert!(l.hit("a").unwrap_err() >= 1);
        assert!(l.hit("b").is_ok());
    }

    #[test]
    fn check_counts_nothing_and_record_counts() {
        let l = WindowLimiter::new(1, Duration::from_secs(60));
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        l.record("a");
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok());
    }

    #[test]
    fn window_map_is_bounded_by_entries_whatever_the_key_size() {
        let l = WindowLimiter::with_capacity(5, Duration::from_secs(60), 1000);
        let big = "x".repeat(100_000);
        for i in 0..5000 {
            l.hit(&format!("{i}{big}")).unwrap();
        }
        assert!(l.len() <= 1000, "{}", l.len());
        // The newest keys are kept: a key just limited stays limited.
        for _ in 0..5 {
            let _ = l.hit("recent");
        }
        assert!(l.hit("recent").is_err());
    }

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let l = BucketLimiter::new(3.0);
        for _ in 0..3 {
            l.take("u").unwrap();
        }
        assert!(l.take("u").is_err());
        assert!(BucketLimiter::new(0.0).take("u").is_ok());
    }
}
