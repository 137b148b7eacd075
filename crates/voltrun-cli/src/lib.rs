//! The `voltrun` client commands (`login`, `functions …`, `invoke`, `executions …`, `logs`,
//! `keys …`, `layers …`, `completions`) over the REST API.
//!
//! Shaped for the binary to stay thin: [`args`] holds the clap definitions that the binary
//! flattens into its command line, and [`run`] executes one command and returns the process
//! exit code. Below that, [`config`] owns the saved credentials, [`package`] zips a directory, [`client`] a blocking HTTP
//! client (no async runtime: a command is one request or one stream), [`output`] tables, JSON
//! and colours, and `cmd` one module per group of commands. Exit codes are in [`error`]:
//! 0 ok, 1 the run or the build failed, 2 usage or local error, 3 server or API error.

pub mod args;
pub mod client;
mod cmd;
pub mod config;
pub mod error;
pub mod output;
pub mod package;
mod sys;

pub use args::{ClientCommand, GlobalArgs};
pub use error::{CliError, EXIT_OK, EXIT_RUN_FAILED, EXIT_SERVER, EXIT_USAGE};

use crate::config::ConfigFile;
use crate::output::{Out, Style};

/// Runs a client command and returns the exit code. `command` builds the binary's whole
/// command line, for `completions`.
pub fn run(cmd: ClientCommand, global: GlobalArgs, command: impl FnOnce() -> clap::Command) -> i32 {
    sys::default_sigpipe();
    let out = Out::detect(global.json);
    if let ClientCommand::Completions(a) = &cmd {
        let mut c = command();
        let name = c.get_name().to_string();
        clap_complete::generate(a.shell, &mut c, name, &mut std::io::stdout());
        return EXIT_OK;
    }
    let result = ConfigFile::from_env().and_then(|config| cmd::dispatch(&cmd::Ctx { out, global, config }, cmd));
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            report(&out, &e);
            e.exit_code()
        }
    }
}

/// Prints an error on stderr: a failed run as `Type: message` (and its stack), anything else
/// as `error: …`.
fn report(out: &Out, e: &CliError) {
    match e {
        CliError::RunFailed { kind, message, stack } => {
            eprintln!("{}: {message}", out.paint_err(kind, Style::Red));
            if let Some(s) = stack {
                eprintln!("{}", out.paint_err(s.trim_end(), Style::Dim));
            }
        }
        e => eprintln!("{} {e}", out.paint_err("error:", Style::Red)),
    }
}
