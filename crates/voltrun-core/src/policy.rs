//! Run policy as data and pure functions: which failures an async run is tried again after,
//! how long it waits before each retry, and what one instance of a function may use. The
//! engine only reads these (mechanism apart); the sandbox enforces the limits.

use std::time::Duration;

use crate::{ErrorKind, Runtime};

/// Whether an async run that failed with `kind` is tried again while it has attempts left.
/// A failure of the run itself (the handler threw, the run timed out or ran out of memory,
/// its node died) may pass on another try; a runtime error (the code does not load, the
/// handler is missing, the result is not JSON) or one of ours (`Internal`) would only repeat.
pub fn is_retryable(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::HandlerError | ErrorKind::Timeout | ErrorKind::OutOfMemory | ErrorKind::Interrupted => true,
        ErrorKind::RuntimeError | ErrorKind::Internal => false,
    }
}

/// When a failed async run is tried again: `first` after the first attempt, doubling with each
/// attempt after it, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub first: Duration,
    /// Longest wait before any retry.
    pub max: Duration,
}

impl RetryPolicy {
    /// Longest wait before a retry unless a policy says otherwise.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
    /// Doublings counted at most (2^8 times `first`), so the product cannot overflow.
    const MAX_DOUBLINGS: u32 = 8;

    /// The policy with `first` as its first wait and the usual cap.
    pub fn new(first: Duration) -> RetryPolicy {
        RetryPolicy { first, max: RetryPolicy::MAX_BACKOFF }
    }

    /// The wait before the run is tried again after its `attempt`-th attempt (1-based).
    pub fn backoff(&self, attempt: i64) -> Duration {
        let doublings = (attempt - 1).clamp(0, RetryPolicy::MAX_DOUBLINGS as i64) as u32;
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

impl Default for RetryPolicy {
    /// One second, doubling, at most five minutes.
    fn default() -> Self {
        RetryPolicy::new(Duration::from_secs(1))
    }
}

/// What one instance of a function may use. Derived from the function's memory (and its
/// runtime) by [`ResourceLimits::for_function`]; `Default` is the smallest memory a function
/// may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory of the whole instance.
    pub memory_bytes: u64,
    /// Also cap the address space (RLIMIT_AS): off for runtimes that reserve large virtual
    /// ranges up front (V8) and cap their heap themselves.
    pub limit_address_space: bool,
    /// Processes and threads.
    pub pids: u64,
    /// Open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file the instance may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Size of the private /tmp and /dev/shm together (RAM-backed, charged to the instance's
    /// memory; see [`ResourceLimits::shm_bytes`]).
    pub tmp_bytes: u64,
    /// CPU time per wall-clock second, in thousandths of a core (1000 = one core).
    pub cpu_millis: u64,
    /// Started ahead as a spare: the least CPU weight until it is given a function, so
    /// refilling the spare pool never takes the cores from runs (issue 19: bursts).
    pub background: bool,
}

impl ResourceLimits {
    /// Processes and threads of any instance.
    pub const PIDS: u64 = 128;
    /// Open files of any instance.
    pub const OPEN_FILES: u64 = 1024;
    /// Largest file any instance writes, and the most /tmp it gets.
    pub const FILE_SIZE_BYTES: u64 = 512 << 20;
    /// One core.
    pub const CPU_MILLIS: u64 = 1000;

    /// The limits of an instance of a `runtime` function with `memory_mb` of memory: /tmp
    /// gets half the memory (it is charged to it), at most 512 MiB; the rest is the same for
    /// every function.
    pub fn for_function(runtime: Runtime, memory_mb: u32) -> ResourceLimits {
        let memory_bytes = (memory_mb as u64) << 20;
        ResourceLimits {
            memory_bytes,
            limit_address_space: limits_address_space(runtime),
            pids: ResourceLimits::PIDS,
            open_files: ResourceLimits::OPEN_FILES,
            file_size_bytes: ResourceLimits::FILE_SIZE_BYTES,
            tmp_bytes: (memory_bytes / 2).min(ResourceLimits::FILE_SIZE_BYTES),
            cpu_millis: ResourceLimits::CPU_MILLIS,
            background: false,
        }
    }
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits::for_function(Runtime::Python311, *crate::function::MEMORY_RANGE.start())
    }
}

impl ResourceLimits {
    /// The size of `/dev/shm`, carved out of [`ResourceLimits::tmp_bytes`]: an eighth of it,
    /// between 1 and 8 MiB. POSIX semaphores (Python's `multiprocessing` locks, one page each)
    /// and small shared segments fit; a function that wants RAM-backed files has `/tmp`.
    pub fn shm_bytes(&self) -> u64 {
        (self.tmp_bytes / 8).clamp(1 << 20, 8 << 20)
    }

    /// The size of `/tmp`: the rest of the budget, so that `/tmp` and `/dev/shm` together
    /// hold no more than `tmp_bytes` (1 MiB at least).
    pub fn tmp_only_bytes(&self) -> u64 {
        self.tmp_bytes.saturating_sub(self.shm_bytes()).max(1 << 20)
    }
}

/// Whether an instance of `runtime` can run under an address-space cap: Node's V8 reserves
/// large virtual ranges at start and cannot (its heap is capped by a flag instead).
pub fn limits_address_space(runtime: Runtime) -> bool {
    match runtime {
        Runtime::Python311 => true,
        Runtime::Nodejs20 => false,
        // Any language: Go, Java and V8 reserve large ranges at start; the memory cgroup is
        // the limit.
        Runtime::Provided => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_run_itself_are_retried() {
        let retried: Vec<ErrorKind> = [ErrorKind::HandlerError, ErrorKind::RuntimeError, ErrorKind::Timeout, ErrorKind::OutOfMemory, ErrorKind::Interrupted, ErrorKind::Internal]
            .into_iter()
            .filter(|k| is_retryable(*k))
            .collect();
        assert_eq!(retried, [ErrorKind::HandlerError, ErrorKind::Timeout, ErrorKind::OutOfMemory, ErrorKind::Interrupted]);
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_its_cap() {
        let p = RetryPolicy::new(Duration::from_secs(1));
        let waits: Vec<u64> = (1..=6).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32]);
        assert_eq!(p.backoff(9), Duration::from_secs(256));
        assert_eq!(p.backoff(10), Duration::from_secs(256), "at most 2^8 times the first wait");
        assert_eq!(RetryPolicy::new(Duration::from_secs(2)).backoff(9), RetryPolicy::MAX_BACKOFF);
        assert_eq!(p.backoff(0), Duration::from_secs(1), "a count below one is the first attempt");
        let huge = RetryPolicy { first: Duration::MAX, max: Duration::MAX };
        assert_eq!(huge.backoff(5), Duration::MAX, "saturates instead of overflowing");
        assert_eq!(RetryPolicy::default(), p);
    }

    #[test]
    fn instance_limits_follow_the_memory() {
        let small = ResourceLimits::for_function(Runtime::Python311, 128);
        assert_eq!(small.memory_bytes, 128 << 20);
        assert_eq!(small.tmp_bytes, 64 << 20, "/tmp gets half the memory");
        assert!(small.limit_address_space);
        let big = ResourceLimits::for_function(Runtime::Nodejs20, 4096);
        assert_eq!(big.tmp_bytes, 512 << 20, "at most 512 MiB of /tmp");
        assert!(!big.limit_address_space, "V8 cannot start under an address-space cap");
        assert_eq!((big.pids, big.open_files, big.file_size_bytes, big.cpu_millis), (128, 1024, 512 << 20, 1000));
        assert_eq!(ResourceLimits::default().memory_bytes, 64 << 20, "the default is the smallest memory");
    }
}
