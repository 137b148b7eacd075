//! The one error type of the client commands, and the exit code each kind means.

/// Success.
pub const EXIT_OK: i32 = 0;
/// The function ran and failed (HandlerError, Timeout, …), or its build failed.
pub const EXIT_RUN_FAILED: i32 = 1;
/// A usage or local error: bad arguments, an unreadable file, input that is not JSON.
pub const EXIT_USAGE: i32 = 2;
/// The server could not be reached, or answered with an error (401, 404, 409, 5xx, …).
pub const EXIT_SERVER: i32 = 3;

/// Everything a client command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or its input is wrong.
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. "reading handler.py".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No credentials for this server.
    #[error("not logged in{}: run `voltrun login --server URL`, or set VOLTRUN_API_KEY", .server.as_deref().map(|s| format!(" to {s}")).unwrap_or_default())]
    NotLoggedIn {
        /// The server the command would have talked to, when known.
        server: Option<String>,
    },
    /// The access token expired and the refresh token no longer works.
    #[error("your login to {server} has expired: run `voltrun login` again")]
    LoginExpired {
        /// The server.
        server: String,
    },
    /// The server refused the API key.
    #[error("the server at {server} rejected the API key ({message}): check VOLTRUN_API_KEY, or run `voltrun login` again")]
    KeyRejected {
        /// The server.
        server: String,
        /// The server's reason.
        message: String,
    },
    /// No connection to the server.
    #[error("cannot reach the VoltRun server at {server}: {detail}. Is it running? Check --server or VOLTRUN_SERVER")]
    Unreachable {
        /// The server.
        server: String,
        /// What went wrong, e.g. "connection refused".
        detail: String,
    },
    /// The server answered with an error.
    #[error("{message} (HTTP {status} {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code, e.g. `not_found`.
        code: String,
        /// The API's message, perhaps with what the command was looking for.
        message: String,
    },
    /// The server answered with something that is not the API's shape.
    #[error("unexpected response from {server}: {detail}")]
    BadResponse {
        /// The server.
        server: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The function's dependency build failed (its log was printed).
    #[error("the build failed: {reason}")]
    BuildFailed {
        /// The server's reason.
        reason: String,
    },
    /// The function ran and failed.
    #[error("{kind}: {message}")]
    RunFailed {
        /// The error type: HandlerError, RuntimeError, Timeout, OutOfMemory, Interrupted, Internal.
        kind: String,
        /// The error message.
        message: String,
        /// The stack trace, if any.
        stack: Option<String>,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::RunFailed { .. } | CliError::BuildFailed { .. } => EXIT_RUN_FAILED,
            CliError::Usage(_) | CliError::Io { .. } => EXIT_USAGE,
            CliError::NotLoggedIn { .. }
            | CliError::LoginExpired { .. }
            | CliError::KeyRejected { .. }
            | CliError::Unreachable { .. }
            | CliError::Api { .. }
            | CliError::BadResponse { .. } => EXIT_SERVER,
        }
    }

    /// A 404 from the server, reworded to name what was looked for.
    pub fn not_found_as(self, what: impl FnOnce() -> String) -> CliError {
        match self {
            CliError::Api { status: 404, code, .. } => CliError::Api { status: 404, code, message: what() },
            e => e,
        }
    }

    /// Shorthand for a usage error.
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }

    /// Shorthand for an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io { what: what.into(), source }
    }
}

/// Result of a client command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
