//! In-memory rate limits: fixed windows for login attempts, token buckets for invocations.
//! Per node: behind a load balancer each node limits on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts events per key in fixed windows.
pub struct WindowLimiter {
    max: u32,
    window: Duration,
    hits: Mutex<HashMap<String, (Instant, u32)>>,
}

impl WindowLimiter {
    /// At most `max` events per key per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        WindowLimiter { max, window, hits: Mutex::new(HashMap::new()) }
    }

    /// Counts an event; `Err(retry_after_seconds)` when over the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut hits = self.hits.lock().expect("limiter lock");
        if hits.len() > 100_000 {
            hits.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let e = hits.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        if e.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(e.0));
            return Err(left.as_secs().max(1));
        }
        e.1 += 1;
        Ok(())
    }
}

/// A token bucket per key: `rate` per second, bursts of up to `rate`.
pub struct BucketLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, (Instant, f64)>>,
}

impl BucketLimiter {
    /// `rate` events per second per key; 0 disables the limit.
    pub fn new(rate: f64) -> Self {
        BucketLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token; `Err(retry_after_seconds)` when the bucket is empty.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut b = self.buckets.lock().expect("limiter lock");
        let (last, tokens) = b.entry(key.to_string()).or_insert((now, self.rate));
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
    fn bucket_allows_burst_then_refuses() {
        let l = BucketLimiter::new(3.0);
        for _ in 0..3 {
            l.take("u").unwrap();
        }
        assert!(l.take("u").is_err());
        assert!(BucketLimiter::new(0.0).take("u").is_ok());
    }
}
