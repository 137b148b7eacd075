//! VoltRun's domain: what a function, an execution and a limit are, and the rules that make
//! them valid. Everything here is pure (no I/O), so the API, the store and the engine agree on
//! one definition and the rules can be unit-tested in isolation.

pub mod build;
pub mod cron;
pub mod egress;
pub mod execution;
pub mod function;
pub mod id;
pub mod layer;
pub mod policy;
pub mod quota;
pub mod runtime;
pub mod secret;
pub mod time;
pub mod version;

pub use build::{Build, BuildStatus, FunctionState, FunctionStates, UpdateStatus};
pub use execution::{ErrorKind, ExecError, Execution, ExecutionStatus, Outcome, RunOf, Trigger};
pub use function::{is_valid_name, is_valid_route, Function, FunctionPatch, FunctionSummary, NewFunction, PackageInfo, PackageKind, PackageRoot, ValidationError};
pub use layer::{Layer, LayerRef};
pub use policy::{ResourceLimits, RetryPolicy};
pub use quota::{Quotas, Retention};
pub use runtime::Runtime;
pub use version::{Alias, AliasPatch, NewAlias, Qualifier, Version};

/// Largest request or response body of an invocation (Lambda's synchronous payload limit).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest function source accepted.
pub const MAX_CODE_BYTES: usize = 1024 * 1024;
/// Logs kept per execution; the rest is dropped and `logs_truncated` set.
pub const MAX_LOG_BYTES: usize = 256 * 1024;
