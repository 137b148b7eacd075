//! Counts by key (a user's runs in flight or test runs, a function's claimed runs) whose
//! units are given back when dropped, so every path, cancellation and panics included, keeps
//! them right; a key whose count reaches zero leaves the map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Units held per key; cheap to clone.
#[derive(Default, Clone, Debug)]
pub(crate) struct Counts(pub(crate) Arc<Mutex<HashMap<String, usize>>>);

impl Counts {
    /// One unit for `key` if it holds fewer than `limit`.
    pub(crate) fn take(&self, key: &str, limit: usize) -> Option<CountUnit> {
        let mut m = self.0.lock().expect("counts lock");
        let n = m.entry(key.to_string()).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                m.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(CountUnit { counts: self.clone(), key: key.to_string() })
    }

    /// One unit for `key`, whatever it holds.
    pub(crate) fn add(&self, key: &str) -> CountUnit {
        *self.0.lock().expect("counts lock").entry(key.to_string()).or_insert(0) += 1;
        CountUnit { counts: self.clone(), key: key.to_string() }
    }
}

/// One unit of a [`Counts`] key; given back on drop.
#[derive(Debug)]
pub(crate) struct CountUnit {
    counts: Counts,
    key: String,
}

impl Drop for CountUnit {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().expect("counts lock");
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}
