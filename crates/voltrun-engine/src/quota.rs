//! The concurrent-runs quota (voltrun_core::Quotas::concurrent_runs): a count per user of the
//! runs in flight on this node, so one tenant cannot take every instance and sandbox slot of a
//! node. Synchronous, HTTP-trigger and test runs take a place or are refused
//! ([`crate::EngineError::UserBusy`], 429); async and scheduled runs, already accepted and
//! queued, take a place without being refused (the dispatcher's own slots bound them), so
//! they count towards the limit the user's synchronous calls meet.

use crate::counts::{CountUnit, Counts};

/// Runs in flight per user; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct UserRuns {
    /// 0: unlimited (nothing is counted).
    limit: u64,
    counts: Counts,
}

/// A place taken by one run; given back on drop.
pub(crate) type RunPlace = CountUnit;

impl UserRuns {
    pub(crate) fn new(limit: u64) -> UserRuns {
        UserRuns { limit, counts: Counts::default() }
    }

    /// A place for a new run of `user`, or None when they have `limit` in flight; Some(None)
    /// when nothing is counted (no limit).
    pub(crate) fn try_enter(&self, user: &str) -> Option<Option<RunPlace>> {
        if self.limit == 0 {
            return Some(None);
        }
        self.counts.take(user, usize::try_from(self.limit).unwrap_or(usize::MAX)).map(Some)
    }

    /// A place for an accepted run of `user`, even past the limit.
    pub(crate) fn enter(&self, user: &str) -> Option<RunPlace> {
        (self.limit > 0).then(|| self.counts.add(user))
    }

    /// The limit (for messages).
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_at_the_limit_is_refused_until_a_run_ends_and_others_are_not() {
        let runs = UserRuns::new(2);
        let a1 = runs.try_enter("a").unwrap();
        let _a2 = runs.try_enter("a").unwrap();
        assert!(runs.try_enter("a").is_none());
        let _b = runs.try_enter("b").unwrap();
        // Accepted async runs count without being refused.
        let queued = runs.enter("a");
        assert!(queued.is_some());
        drop(a1);
        assert!(runs.try_enter("a").is_none(), "two still in flight (one async)");
        drop(queued);
        assert!(runs.try_enter("a").is_some());
        assert!(UserRuns::new(0).try_enter("a").unwrap().is_none(), "unlimited counts nothing");
    }

    #[test]
    fn the_map_forgets_users_with_nothing_in_flight() {
        let runs = UserRuns::new(5);
        drop(runs.try_enter("a"));
        assert!(runs.counts.0.lock().unwrap().is_empty());
    }
}
