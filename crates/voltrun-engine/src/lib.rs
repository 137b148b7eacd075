//! Invocations: everything between "run this function with this event" and a finished
//! execution record.
//!
//! The engine keeps warm [`instance::Instance`]s per function version (module state survives
//! between runs, as in Lambda), runs one invocation at a time per instance, allows up to a
//! per-function concurrency limit of instances, queues beyond it and refuses (429) once the
//! queue is full. Idle instances are reaped after a TTL. Async runs are rows in the store
//! (status `pending`) before they are acknowledged; a dispatcher claims and runs them, and on
//! start the engine resumes the queue and settles runs a crash left `running`.
//!
//! Every run is a task of its own, so no caller going away can cut one short, and what a run
//! holds (permits, slots, gauges, its live-log entry) is released by guards on every path. The
//! dispatcher claims only runs that can start and shares its slots between users; followers
//! of an execution are woken by the engine rather than polling the store.
//!
//! One module per concern (docs/ARCHITECTURE.md has the map and the walk of one run):
//!
//! | module | owns |
//! |---|---|
//! | `engine` | the [`Engine`] value, its start and shutdown |
//! | `config`, `error` | [`EngineConfig`], [`EngineError`] |
//! | `invocation` | sync runs: execute, the row, waiting, test runs, one invocation on an instance |
//! | `queue` | enqueue, the dispatcher, claimed runs, retries |
//! | `fairness` | what a claim passes over (functions at their limit, users at their share) |
//! | `scheduler` | cron ticks as queued runs |
//! | `leases` | lease heartbeat, reaper, recovery at start |
//! | `build_queue` | builds as durable work: the build queue's dispatcher, leased build tasks, the `active` gate |
//! | `pool` | warm instances per function, the per-function slots and queue |
//! | `spares` | pre-started instances per runtime |
//! | `launch` | starting an instance: code dir, environment, limits, spawn, init |
//! | `layers` | the unpacked trees of a function's layers, for the launch |
//! | [`instance`] | one instance: its protocol frames, its log task, its process |
//! | `follow` | live logs, execution watches, log-stream places |
//! | `quota`, `counts` | runs in flight per user; counts by key held by guards |
//! | [`metrics`] | the figures, and the gauge units that keep them right |
//! | [`runtimes`] | the interpreters found on this host |
//! | [`runtime_api`] | the Lambda Runtime API helper a `provided` instance runs (SPEC §15) |
//! | [`build`], `build_cache` | dependency builds in the sandbox, the content-addressed tree cache |

pub mod build;
mod build_cache;
mod build_queue;
mod config;
mod counts;
mod engine;
mod error;
mod fairness;
mod follow;
pub mod instance;
mod invocation;
mod launch;
mod layers;
mod leases;
pub mod metrics;
mod pool;
mod queue;
mod quota;
pub mod runtime_api;
pub mod runtimes;
mod scheduler;
mod spares;
mod sys;
mod tree_share;

pub use build::{BuildConfig, BuildFailure, BuildRequest, BuiltTree, LogSink};
pub use build_cache::TreeUse;
pub use build_queue::LiveBuildLog;
pub use config::{default_build_concurrency, default_builds_per_user, EngineConfig, DEFAULT_SPARES_MAX};
pub use engine::Engine;
pub use error::EngineError;
pub use follow::{ExecutionWatch, LogStreamSlot};
pub use metrics::Metrics;
pub use runtimes::Runtimes;
