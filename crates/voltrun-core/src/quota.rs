//! What one account may hold and run (quotas), and how long execution history is kept
//! (retention): plain data the API, the store and the engine read, so one tenant cannot take
//! a node's memory, disk or run slots from the others. `Default` is the documented default of
//! each figure (docs/SECURITY.md, "Hardening: quotas and retention"); 0 means unlimited.

/// Per-user limits; a create past one is refused (409 `quota_exceeded`), a run past the
/// concurrent-runs limit is throttled (429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Functions one user may have.
    pub functions: u64,
    /// Bytes of code summed over one user's functions.
    pub code_bytes: u64,
    /// Runs of one user in flight on one node at once (synchronous, HTTP-trigger and test
    /// runs are refused past it; async and scheduled runs in flight count towards it).
    pub concurrent_runs: u64,
    /// API keys one user may have.
    pub api_keys: u64,
    /// Secrets one user may have (issue 16).
    pub secrets: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { functions: 1000, code_bytes: 256 << 20, concurrent_runs: 100, api_keys: 100, secrets: 100 }
    }
}

impl Quotas {
    /// `limit` as a bound to compare with (0, unlimited, becomes the largest value).
    pub fn bound(limit: u64) -> i64 {
        if limit == 0 {
            i64::MAX
        } else {
            limit.min(i64::MAX as u64) as i64
        }
    }
}

/// How much finished execution history is kept. Runs past any of the bounds are deleted in
/// the background, oldest first; pending and running runs are never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days a finished run is kept after it was created.
    pub max_age_days: u64,
    /// Newest runs kept per function.
    pub per_function: u64,
    /// Newest runs kept per user (over all their functions).
    pub per_user: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_days: 30, per_function: 10_000, per_user: 100_000 }
    }
}

impl Retention {
    /// True when nothing is ever deleted.
    pub fn keeps_everything(&self) -> bool {
        self.max_age_days == 0 && self.per_function == 0 && self.per_user == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_unlimited() {
        assert_eq!(Quotas::bound(0), i64::MAX);
        assert_eq!(Quotas::bound(3), 3);
        assert!(Retention { max_age_days: 0, per_function: 0, per_user: 0 }.keeps_everything());
        assert!(!Retention::default().keeps_everything());
    }
}
