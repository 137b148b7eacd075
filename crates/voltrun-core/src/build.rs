//! Dependency builds as the API serves them, and the states they give a function (SPEC §10):
//! `state` (pending → active | failed) for its first build, `last_update_status` for every
//! later change that needed one. Plain data: the store keeps them, the engine moves them.

use serde::{Deserialize, Serialize};

/// Attempts a build gets when the node running it dies (then it fails with a reason).
pub const BUILD_MAX_ATTEMPTS: i64 = 3;

/// Whether a function can be invoked (SPEC §10 `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FunctionState {
    /// Its first build is queued or running: not invocable yet.
    Pending,
    /// Invocable.
    Active,
    /// Its first build failed (`state_reason` says why): not invocable until an update builds.
    Failed,
}

/// How the latest change of a function went (SPEC §10 `last_update_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    /// Its build runs; the previous definition keeps serving.
    InProgress,
    /// Applied.
    Successful,
    /// Its build failed; nothing was applied (`last_update_status_reason` says why).
    Failed,
}

impl FunctionState {
    /// The stored and served spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionState::Pending => "pending",
            FunctionState::Active => "active",
            FunctionState::Failed => "failed",
        }
    }

    /// The stored spelling back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => FunctionState::Pending,
            "active" => FunctionState::Active,
            "failed" => FunctionState::Failed,
            _ => return None,
        })
    }
}

impl UpdateStatus {
    /// The stored and served spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::InProgress => "in_progress",
            UpdateStatus::Successful => "successful",
            UpdateStatus::Failed => "failed",
        }
    }

    /// The stored spelling back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in_progress" => UpdateStatus::InProgress,
            "successful" => UpdateStatus::Successful,
            "failed" => UpdateStatus::Failed,
            _ => return None,
        })
    }
}

/// The four state fields of a function (flattened into `Function` and `FunctionSummary`).
/// `Default`: what every function without a build is, active and successfully updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionStates {
    pub state: FunctionState,
    /// Why the state is `failed` (the build's reason); null otherwise.
    #[schema(required)]
    pub state_reason: Option<String>,
    pub last_update_status: UpdateStatus,
    /// Why the last update failed; null otherwise.
    #[schema(required)]
    pub last_update_status_reason: Option<String>,
}

impl Default for FunctionStates {
    fn default() -> Self {
        FunctionStates { state: FunctionState::Active, state_reason: None, last_update_status: UpdateStatus::Successful, last_update_status_reason: None }
    }
}

impl FunctionStates {
    /// A new function whose first build is queued.
    pub fn first_build() -> Self {
        FunctionStates { state: FunctionState::Pending, state_reason: None, last_update_status: UpdateStatus::InProgress, last_update_status_reason: None }
    }

    /// True while a build of this function is queued or running.
    pub fn building(&self) -> bool {
        self.state == FunctionState::Pending || self.last_update_status == UpdateStatus::InProgress
    }
}

/// A build's status as served: `building` covers a build still waiting for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Building,
    Success,
    Failed,
}

impl BuildStatus {
    /// True once the build is over.
    pub fn is_terminal(self) -> bool {
        self != BuildStatus::Building
    }
}

/// `GET /api/functions/{id}/build`: the latest build of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Build {
    /// `bd_…`.
    pub id: String,
    #[serde(skip)]
    pub function_id: String,
    #[serde(skip)]
    pub user_id: String,
    /// The function version this build is for (the version it becomes on success).
    pub function_version: i64,
    pub status: BuildStatus,
    /// Why it failed; null otherwise.
    #[schema(required)]
    pub reason: Option<String>,
    /// The build's output (pip or npm), capped at 256 KiB.
    pub logs: String,
    pub logs_truncated: bool,
    /// True when the dependency tree came from the cache (nothing was installed).
    pub cached: bool,
    /// When a node started it (its queueing time until then).
    pub started_at: String,
    #[schema(required)]
    pub finished_at: Option<String>,
    #[schema(required)]
    pub duration_ms: Option<f64>,
}
