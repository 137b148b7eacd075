//! Fairness of the dispatcher: which claimed async runs hold its slots, by user and by
//! function ([`DispatchLoad`]), and what its next claim therefore passes over (functions at
//! their concurrency limit, users at their share of the slots).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::Notify;
use voltrun_core::Execution;
use voltrun_store::ClaimSkip;

use crate::counts::{CountUnit, Counts};
use crate::pool::Pools;

/// The async runs this node's dispatcher has claimed and not finished, by user and by
/// function.
#[derive(Default)]
pub(crate) struct DispatchLoad {
    users: Counts,
    functions: Counts,
    /// A claim passed over some runs: wake the dispatcher (`freed`) when a run ends.
    pub(crate) held_back: std::sync::atomic::AtomicBool,
    /// Wakes the dispatcher: a run ended while claims were passing over runs.
    pub(crate) freed: Notify,
}

/// A claimed run's place in the [`DispatchLoad`].
pub(crate) struct Held {
    load: Arc<DispatchLoad>,
    _units: (CountUnit, CountUnit),
}

impl Held {
    /// Gives the run's place back, and wakes the dispatcher if a claim passed over runs
    /// meanwhile (one of them may start now).
    pub(crate) fn release(self) {
        let load = self.load.clone();
        drop(self);
        if load.held_back.swap(false, Relaxed) {
            load.freed.notify_one();
        }
    }
}

impl DispatchLoad {
    pub(crate) fn hold(load: &Arc<DispatchLoad>, e: &Execution) -> Held {
        Held { load: load.clone(), _units: (load.users.add(&e.user_id), load.functions.add(&e.function_id)) }
    }

    /// What a claim passes over: (at the fair share, at the per-user cap). Both skip the
    /// functions that cannot start another run: at the node's per-function limit counting
    /// the runs claimed here, or with no free pool slot (synchronous runs hold them).
    pub(crate) fn skips(&self, pools: &Pools, per_function: usize, total: usize, cap: usize) -> (ClaimSkip, ClaimSkip) {
        let mut functions = pools.saturated();
        {
            let claimed = self.functions.0.lock().expect("counts lock");
            let at_limit: Vec<String> = claimed.iter().filter(|(id, n)| **n >= per_function && !functions.contains(id)).map(|(id, _)| id.clone()).collect();
            functions.extend(at_limit);
        }
        let users = self.users.0.lock().expect("counts lock");
        let fair = (total / (users.len() + 1)).clamp(1, cap);
        let over = |limit: usize| users.iter().filter(|(_, n)| **n >= limit).map(|(u, _)| u.clone()).collect::<Vec<_>>();
        let capped = ClaimSkip { functions: functions.clone(), users: over(cap) };
        (ClaimSkip { functions, users: over(fair) }, capped)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use voltrun_core::{time, ExecutionStatus, Function, Trigger};

    use super::*;
    use crate::invocation::new_execution;

    fn claimed(user: &str, function: &str) -> Execution {
        let mut e = new_execution(&test_function(), Trigger::Async, Value::Null, ExecutionStatus::Running);
        e.user_id = user.into();
        e.function_id = function.into();
        e
    }

    fn test_function() -> Function {
        voltrun_core::NewFunction {
            name: "f".into(),
            description: None,
            runtime: "python".into(),
            code: Some("def handler(e, c):\n    return 1\n".into()),
            ..Default::default()
        }
        .into_function("fn_x".into(), "u".into(), time::now())
        .unwrap()
    }

    /// The skips follow the dispatcher's load: a function at its limit is skipped in both
    /// phases; a lone user is held back at the fair share first, then only at the cap; a
    /// second user running lowers the fair share; giving runs back lifts the skips.
    #[test]
    fn claims_skip_functions_at_their_limit_and_users_at_their_share() {
        let load = Arc::new(DispatchLoad::default());
        let pools = Pools::new(2, 10, Default::default());
        let (total, cap) = (8, 7);
        let mut held = vec![DispatchLoad::hold(&load, &claimed("a", "f1")), DispatchLoad::hold(&load, &claimed("a", "f1"))];
        let (fair, capped) = load.skips(&pools, 2, total, cap);
        assert_eq!((fair.functions.clone(), capped.functions.clone()), (vec!["f1".to_string()], vec!["f1".to_string()]));
        assert!(fair.users.is_empty() && capped.users.is_empty());
        for f in ["f2", "f3"] {
            held.push(DispatchLoad::hold(&load, &claimed("a", f)));
        }
        // Alone, `a` holds 4 of 8: its fair share (8 / 2), not yet its cap.
        let (fair, capped) = load.skips(&pools, 2, total, cap);
        assert_eq!((fair.users, capped.users), (vec!["a".to_string()], vec![]));
        held.push(DispatchLoad::hold(&load, &claimed("b", "g1")));
        // Two users running: the fair share is 8 / 3 = 2; `b` (1) is below it.
        let (fair, _) = load.skips(&pools, 2, total, cap);
        assert_eq!(fair.users, vec!["a".to_string()]);
        for _ in 0..3 {
            held.push(DispatchLoad::hold(&load, &claimed("a", "f4")));
        }
        let (_, capped) = load.skips(&pools, 2, total, cap);
        assert_eq!(capped.users, vec!["a".to_string()], "7 of 8 is the cap");
        held.clear();
        let (fair, capped) = load.skips(&pools, 2, total, cap);
        assert!(fair.users.is_empty() && fair.functions.is_empty() && capped.users.is_empty());
        assert!(load.users.0.lock().unwrap().is_empty() && load.functions.0.lock().unwrap().is_empty(), "nothing left behind");
    }
}
