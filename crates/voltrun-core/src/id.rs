//! Opaque, time-ordered ids: `<prefix><12 hex ms><4 hex seq><8 hex random>`.
//!
//! Ordering ids as strings orders records by creation time, which is what lets lists use the
//! id alone as a keyset-pagination cursor. The sequence keeps ids from one process strictly
//! increasing within a millisecond; the random tail keeps ids from several nodes apart.

use std::sync::atomic::{AtomicU64, Ordering};

static LAST: AtomicU64 = AtomicU64::new(0);

/// A new id with the given prefix (`fn_`, `ex_`, `usr_`, `key_`).
pub fn new_id(prefix: &str) -> String {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let candidate = now_ms << 16;
    let mut prev = LAST.load(Ordering::Relaxed);
    let value = loop {
        let next = if candidate > prev { candidate } else { prev + 1 };
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(actual) => prev = actual,
        }
    };
    let tail: u32 = rand::random();
    format!("{prefix}{value:016x}{tail:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strictly_increasing_and_prefixed() {
        let ids: Vec<String> = (0..10_000).map(|_| new_id("ex_")).collect();
        for pair in ids.windows(2) {
            assert!(pair[0][..19] < pair[1][..19], "{} !< {}", pair[0], pair[1]);
        }
        assert!(ids[0].starts_with("ex_"));
        assert_eq!(ids[0].len(), 3 + 16 + 8);
    }
}
