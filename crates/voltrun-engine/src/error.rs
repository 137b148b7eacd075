//! Why the engine did not run something ([`EngineError`]).

use voltrun_store::StoreError;

/// Why the engine did not run something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Too many invocations are waiting for this function; retry after the given seconds.
    #[error("too many concurrent invocations of this function; retry later")]
    Throttled { retry_after_s: u64 },
    /// The user has as many runs in flight on this node as their quota allows.
    #[error("this account already has {limit} runs in flight, the most its quota allows; retry when one ends")]
    UserBusy { limit: u64 },
    /// Too many test runs at once: the caller's own (`per_user`) or the node's.
    #[error("too many test runs at once {} (at most {limit}); retry when one finishes", if *per_user { "for this account" } else { "on this server" })]
    TestRunsThrottled { limit: usize, per_user: bool },
    /// The function is not `active` (its first build is pending, or failed): 409
    /// `function_not_active`.
    #[error("the function is not active (state {}){}; it can run once a build succeeds", state.as_str(), reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotActive { state: voltrun_core::FunctionState, reason: Option<String> },
    /// The qualifier names no version of the function: 404 `version_not_found`.
    #[error("the function has no such version")]
    VersionNotFound,
    /// The qualifier names no alias of the function: 404 `alias_not_found`.
    #[error("the function has no such alias")]
    AliasNotFound,
    /// The server is stopping: the run's task was cancelled before it ended.
    #[error("the server is shutting down")]
    Stopped,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
