//! The client commands' arguments (clap derive, flattened into the binary's command line) and
//! the pure helpers that read them: `--env K=V`, `--data JSON|@file|-`, runtimes from file
//! extensions.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use clap_complete::Shell;

use crate::error::{CliError, Result};

/// Flags every client command takes (global: they may come before or after the subcommand).
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Server URL for client commands [default: the one you logged in to].
    #[arg(long, global = true, env = "VOLTRUN_SERVER", value_name = "URL", display_order = 900)]
    pub server: Option<String>,
    /// Client commands: print machine-readable JSON on stdout.
    #[arg(long, global = true, display_order = 901)]
    pub json: bool,
}

/// The client commands.
// One value per process, parsed once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Log in to a server and save the credentials (mode 0600).
    Login(LoginArgs),
    /// Forget the saved credentials.
    Logout,
    /// Show who you are logged in as, and where.
    Whoami,
    /// Create, deploy, list, show, update and delete functions.
    #[command(subcommand, visible_alias = "fn")]
    Functions(FunctionsCommand),
    /// Run a function and print its output.
    Invoke(InvokeArgs),
    /// List and inspect executions.
    #[command(subcommand, visible_alias = "ex")]
    Executions(ExecutionsCommand),
    /// Print an execution's logs, or follow them while it runs.
    Logs(LogsArgs),
    /// Create, list and delete API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Publish, list and delete layers: zips mounted under /opt of the functions that list them.
    #[command(subcommand)]
    Layers(LayersCommand),
    /// Set, list and delete secrets (values are write-only).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Create, list, show, update and delete a function's aliases: names that point at a
    /// version (with an optional canary weight), for `invoke NAME:ALIAS` and routes.
    #[command(subcommand)]
    Aliases(AliasesCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `voltrun login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Your account's email [default: the last one used; prompted on a terminal].
    #[arg(long)]
    pub email: Option<String>,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long, conflicts_with = "api_key")]
    pub password_stdin: bool,
    /// Log in with an API key instead of a password (`-` reads it from stdin).
    #[arg(long, value_name = "KEY", conflicts_with = "email")]
    pub api_key: Option<String>,
}

/// Fields of a function, shared by `create`, `deploy` and `update`. Left out means "default"
/// on create and "unchanged" on update.
#[derive(Args, Debug, Default, Clone)]
pub struct FunctionFlags {
    /// python3.11 (python, python3), nodejs20 (nodejs, node) or provided (provided.al2023,
    /// provided.al2: a package's executable `bootstrap`) [default on create: from the file's
    /// extension, .py or .js/.mjs/.cjs, or the directory's files].
    #[arg(long, short = 'r')]
    pub runtime: Option<String>,
    /// The source file of the handler: a single-file function (create and deploy need
    /// --file or --dir).
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "dir")]
    pub file: Option<PathBuf>,
    /// A directory to deploy as a package: zipped (honouring a .voltrunignore of
    /// gitignore-style patterns; .git is always left out) and built on the server
    /// (requirements.txt or package.json).
    #[arg(long, short = 'd', value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The handler: the exported name for --file [default: handler]; `module.function` for
    /// --dir [default: main.handler (Python), index.handler (Node)].
    #[arg(long)]
    pub handler: Option<String>,
    /// A layer to mount under /opt, as NAME:VERSION; repeat for more, in order (a later one
    /// wins; at most 5). Replaces the whole list.
    #[arg(long = "layer", value_name = "NAME:VERSION")]
    pub layers: Vec<String>,
    /// Remove every layer.
    #[arg(long, conflicts_with = "layers")]
    pub no_layers: bool,
    /// Do not wait for the dependency build (create, deploy and update follow it by default).
    #[arg(long)]
    pub no_wait: bool,
    /// Memory limit in MiB, 64-4096 [default: 128].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// Timeout in seconds, 1-900 [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// HTTP-trigger route: the function answers at /api/execute/ROUTE.
    #[arg(long)]
    pub route: Option<String>,
    /// Remove the HTTP-trigger route.
    #[arg(long, conflicts_with = "route")]
    pub no_route: bool,
    /// Let anyone call the route without credentials (`--public=false` to undo).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub public: Option<bool>,
    /// An environment variable for the function; repeat for more. Replaces the whole set.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env_kv)]
    pub env: Vec<(String, String)>,
    /// Remove every environment variable.
    #[arg(long, conflicts_with = "env")]
    pub clear_env: bool,
    /// Run it on a schedule: a 5-field cron expression in UTC, e.g. "*/5 * * * *".
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Remove the schedule.
    #[arg(long, conflicts_with = "schedule")]
    pub no_schedule: bool,
    /// What the schedule runs: a version number or an alias [default: the latest version].
    #[arg(long, value_name = "QUALIFIER")]
    pub schedule_qualifier: Option<String>,
    /// Let the schedule run the latest version again.
    #[arg(long, conflicts_with = "schedule_qualifier")]
    pub no_schedule_qualifier: bool,
    /// Times a failed async or scheduled run is retried [default: 2].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Let the function connect to ENTRY: a CIDR (198.18.0.0/24), a host name
    /// (api.example.com, *.example.com) or `public`, each with an optional :PORT; repeat for
    /// more. Replaces the whole list [default: no network].
    #[arg(long = "egress", value_name = "ENTRY")]
    pub egress: Vec<String>,
    /// Remove every egress entry: no network.
    #[arg(long, conflicts_with = "egress")]
    pub no_egress: bool,
    /// One of your secrets (`voltrun secrets list`) that the function's runs get as the
    /// environment variable of the same name; repeat for more. Replaces the whole list.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Remove every secret from the function (the secrets themselves stay).
    #[arg(long, conflicts_with = "secrets")]
    pub no_secrets: bool,
    /// A description.
    #[arg(long)]
    pub description: Option<String>,
}

/// `voltrun functions …`.
#[derive(Subcommand, Debug)]
pub enum FunctionsCommand {
    /// Create a function from a source file.
    Create {
        /// The function's name: lowercase letters, digits, _ and -.
        name: String,
        /// The function's fields.
        #[command(flatten)]
        flags: FunctionFlags,
    },
    /// Create the function, or update it if it exists, from --file or --dir, then follow its
    /// dependency build (exit code 1 when the build fails): the everyday command.
    Deploy {
        /// The function's name.
        name: String,
        /// The function's fields.
        #[command(flatten)]
        flags: FunctionFlags,
    },
    /// List your functions.
    #[command(visible_alias = "ls")]
    List,
    /// Show a function.
    Get {
        /// The function's name or id.
        name: String,
        /// Print only its source code.
        #[arg(long)]
        code: bool,
    },
    /// Change a function: only the given fields change.
    Update {
        /// The function's name or id.
        name: String,
        /// Rename it.
        #[arg(long, value_name = "NEW_NAME")]
        rename: Option<String>,
        /// The function's fields.
        #[command(flatten)]
        flags: FunctionFlags,
    },
    /// Delete a function (its past executions stay listed).
    #[command(visible_alias = "rm")]
    Delete {
        /// The function's name or id.
        name: String,
    },
    /// Show the function's latest dependency build and its log, or follow it while it runs
    /// (exit code 1 when it failed).
    Build {
        /// The function's name or id.
        name: String,
        /// Follow a running build to its end.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List the function's versions (immutable snapshots of code and configuration), newest
    /// first, with the aliases that point at each.
    Versions {
        /// The function's name or id.
        name: String,
    },
    /// Show one version of the function.
    Version {
        /// The function's name or id.
        name: String,
        /// The version number.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        version: u64,
        /// Print only its source code (single-file functions).
        #[arg(long)]
        code: bool,
    },
    /// Delete one version (refused for the latest, and while an alias points at it).
    DeleteVersion {
        /// The function's name or id.
        name: String,
        /// The version number.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        version: u64,
    },
}

/// Fields of an alias, shared by `aliases create` and `aliases update`.
#[derive(Args, Debug, Default, Clone)]
pub struct AliasFlags {
    /// The version the alias points at (on update: a rollback or a promotion).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,
    /// A canary: VERSION=WEIGHT sends that share of the calls (0 < WEIGHT < 1) to another
    /// version, e.g. --weight 5=0.1. Replaces the split.
    #[arg(long, value_name = "VERSION=WEIGHT", value_parser = parse_weight)]
    pub weight: Option<(u64, f64)>,
    /// Remove the canary split: every call runs --version.
    #[arg(long, conflicts_with = "weight")]
    pub no_weights: bool,
    /// Bind an HTTP-trigger route to the alias: /api/execute/ROUTE runs the alias.
    #[arg(long)]
    pub route: Option<String>,
    /// Unbind the alias's route.
    #[arg(long, conflicts_with = "route")]
    pub no_route: bool,
    /// A description.
    #[arg(long)]
    pub description: Option<String>,
}

/// `voltrun aliases …`.
#[derive(Subcommand, Debug)]
pub enum AliasesCommand {
    /// Create an alias of a function.
    Create {
        /// The function's name or id.
        function: String,
        /// The alias: `^[a-z][a-z0-9_-]{0,63}$`, not `latest`.
        alias: String,
        /// The alias's fields (--version is required).
        #[command(flatten)]
        flags: AliasFlags,
    },
    /// List a function's aliases.
    #[command(visible_alias = "ls")]
    List {
        /// The function's name or id.
        function: String,
    },
    /// Show one alias.
    Get {
        /// The function's name or id.
        function: String,
        /// The alias.
        alias: String,
    },
    /// Change an alias: only the given fields change (`--version N` is a one-step rollback).
    Update {
        /// The function's name or id.
        function: String,
        /// The alias.
        alias: String,
        /// The alias's fields.
        #[command(flatten)]
        flags: AliasFlags,
    },
    /// Delete an alias (its route, if any, goes with it).
    #[command(visible_alias = "rm")]
    Delete {
        /// The function's name or id.
        function: String,
        /// The alias.
        alias: String,
    },
}

/// Parses `VERSION=WEIGHT` (a version from 1, a weight strictly between 0 and 1).
pub fn parse_weight(s: &str) -> std::result::Result<(u64, f64), String> {
    let Some((v, w)) = s.split_once('=') else { return Err(format!("{s:?}: expected VERSION=WEIGHT, e.g. 5=0.1")) };
    let v = v.trim().parse::<u64>().ok().filter(|v| *v >= 1).ok_or_else(|| format!("{s:?}: the version before = must be a number from 1"))?;
    let w = w
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|w| w.is_finite() && *w > 0.0 && *w < 1.0)
        .ok_or_else(|| format!("{s:?}: the weight after = must be a number between 0 and 1, e.g. 0.1"))?;
    Ok((v, w))
}

/// Splits `NAME:QUALIFIER` (a version number, `latest` or an alias) off an invocation's target;
/// a name without `:` has none. Function names and ids never contain `:`.
pub fn split_qualifier(target: &str) -> Result<(&str, Option<&str>)> {
    match target.split_once(':') {
        None => Ok((target, None)),
        Some((n, q)) if !n.is_empty() && !q.is_empty() && !q.contains(':') => Ok((n, Some(q))),
        Some(_) => Err(CliError::usage(format!("{target:?}: expected NAME or NAME:QUALIFIER (a version, latest or an alias), e.g. hello:live"))),
    }
}

/// `voltrun invoke`.
#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// The function's name or id.
    pub name: String,
    /// The event: JSON text, @FILE to read a file, or @- for stdin [default: stdin when it is
    /// piped, else {}].
    #[arg(long, short = 'd', value_name = "JSON|@FILE")]
    pub data: Option<String>,
    /// Queue the run and print its execution id instead of waiting (with --logs: follow it).
    #[arg(long = "async")]
    pub is_async: bool,
    /// Also print the run's logs, on stderr.
    #[arg(long)]
    pub logs: bool,
    /// Run this version (a number), `latest`, or an alias; the same as NAME:QUALIFIER.
    #[arg(long, short = 'q', value_name = "QUALIFIER")]
    pub qualifier: Option<String>,
}

/// The statuses an execution can have.
pub const STATUSES: [&str; 4] = ["pending", "running", "success", "failed"];
/// The triggers an execution can have.
pub const TRIGGERS: [&str; 5] = ["api", "async", "http", "schedule", "test"];

/// `voltrun executions …`.
#[derive(Subcommand, Debug)]
pub enum ExecutionsCommand {
    /// List your executions, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only this function's (name or id).
        #[arg(long, short = 'f')]
        function: Option<String>,
        /// Only runs with this status.
        #[arg(long, short = 's', value_parser = STATUSES)]
        status: Option<String>,
        /// Only runs started this way.
        #[arg(long, value_parser = TRIGGERS)]
        trigger: Option<String>,
        /// Only runs of this version of the function.
        #[arg(long = "function-version", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        function_version: Option<u64>,
        /// How many to show, 1-500.
        #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },
    /// Show one execution: status, input, output, error and logs.
    Get {
        /// The execution id (ex_…).
        id: String,
    },
}

/// `voltrun logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The execution id (ex_…).
    pub id: String,
    /// Keep printing while the run goes on, until it ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `voltrun keys …`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; the key is shown this once.
    Create {
        /// A name to recognise it by.
        name: String,
        /// Days until it expires, 1-3650 [default: never].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: Option<u32>,
    },
    /// List your API keys (never the keys themselves).
    #[command(visible_alias = "ls")]
    List,
    /// Delete an API key: it stops working at once.
    #[command(visible_alias = "rm")]
    Delete {
        /// The key's id (key_…).
        id: String,
    },
}

/// `voltrun layers …`.
#[derive(Subcommand, Debug)]
pub enum LayersCommand {
    /// Publish a new version of a layer from a directory or a zip (`python/…` is on Python's
    /// path, `nodejs/node_modules/…` on Node's).
    Publish {
        /// The layer's name: letters, digits, _ and -.
        name: String,
        /// A directory to zip (honouring .voltrunignore; .git is left out).
        #[arg(long, short = 'd', value_name = "DIR", conflicts_with = "zip", required_unless_present = "zip")]
        dir: Option<PathBuf>,
        /// A zip file to upload as is.
        #[arg(long, value_name = "FILE")]
        zip: Option<PathBuf>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
    },
    /// List your layers (the latest version of each).
    #[command(visible_alias = "ls")]
    List,
    /// List every version of a layer.
    Versions {
        /// The layer's name.
        name: String,
    },
    /// Show one version of a layer.
    Get {
        /// NAME:VERSION.
        reference: String,
    },
    /// Delete one version of a layer (refused while a function uses it).
    #[command(visible_alias = "rm")]
    Delete {
        /// NAME:VERSION.
        reference: String,
    },
}

/// Splits `NAME:VERSION` (VERSION a positive integer).
pub fn parse_layer_ref(s: &str) -> Result<(String, u64)> {
    match s.rsplit_once(':') {
        Some((n, v)) if !n.is_empty() => match v.parse::<u64>() {
            Ok(v) if v >= 1 => Ok((n.to_string(), v)),
            _ => Err(CliError::usage(format!("{s:?}: the version after : must be a number from 1"))),
        },
        _ => Err(CliError::usage(format!("{s:?}: expected NAME:VERSION, e.g. deps:1"))),
    }
}

/// `voltrun secrets …`. `Debug` leaves the value out.
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Create a secret or replace its value; the value is read from stdin (less one final
    /// line ending) unless --value is given, and typed without echo on a terminal.
    Set {
        /// `^[A-Z_][A-Z0-9_]{0,127}$`: also the variable's name in a function's runs.
        name: String,
        /// The value (it shows in `ps` and shell history: prefer stdin).
        #[arg(long)]
        value: Option<String>,
    },
    /// List your secrets (names only: values are never shown).
    #[command(visible_alias = "ls")]
    List,
    /// Delete a secret (refused while a function names it).
    #[command(visible_alias = "rm")]
    Delete {
        /// The secret's name.
        name: String,
    },
    /// Re-encrypt every secret under a new master key, online (run on a host with the
    /// database's credentials, not through the API; docs/SECURITY.md, "Rotating the master key").
    RotateMasterKey(RotateArgs),
}

/// `voltrun secrets rotate-master-key`: talks to the database, not to a server.
#[derive(Args)]
pub struct RotateArgs {
    /// The database; default: the SQLite file in --data-dir.
    #[arg(long, env = "VOLTRUN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The data dir of the SQLite database (unused with --database-url).
    #[arg(long, env = "VOLTRUN_DATA_DIR", default_value = "./voltrun-data")]
    pub data_dir: PathBuf,
    /// The new master key (base64 or hex of 32 bytes).
    #[arg(long, env = "VOLTRUN_MASTER_KEY", hide_env_values = true, value_name = "KEY", required = true)]
    pub master_key: Option<String>,
    /// The key the values are sealed under now.
    #[arg(long, env = "VOLTRUN_PREVIOUS_MASTER_KEY", hide_env_values = true, value_name = "KEY", required = true)]
    pub previous_master_key: Option<String>,
    /// Rows read per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: i64,
}

impl std::fmt::Debug for SecretsCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretsCommand::Set { name, value } => f.debug_struct("Set").field("name", name).field("value", &value.as_ref().map(|_| "<redacted>")).finish(),
            SecretsCommand::List => f.write_str("List"),
            SecretsCommand::Delete { name } => f.debug_struct("Delete").field("name", name).finish(),
            SecretsCommand::RotateMasterKey(a) => {
                f.debug_struct("RotateMasterKey").field("database_url", &a.database_url.as_ref().map(|_| "<given>")).field("batch", &a.batch).finish()
            }
        }
    }
}

/// `voltrun completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: Shell,
}

/// Parses `KEY=VALUE` (the value may contain `=` and be empty; the key may not be empty).
pub fn parse_env_kv(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(format!("{s:?}: the name before = is empty")),
        None => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// Where an invocation's event comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum DataSource {
    /// JSON given inline.
    Inline(String),
    /// `@path`: a file.
    File(PathBuf),
    /// `@-`, or nothing with stdin piped: standard input.
    Stdin,
    /// Nothing: the empty event `{}`.
    Empty,
}

/// Where `--data` says the event comes from; with no `--data`, stdin when it is not a terminal.
pub fn data_source(data: Option<&str>, stdin_is_tty: bool) -> DataSource {
    match data {
        Some("@-") => DataSource::Stdin,
        Some(d) if d.starts_with('@') => DataSource::File(PathBuf::from(&d[1..])),
        Some(d) => DataSource::Inline(d.to_string()),
        None if stdin_is_tty => DataSource::Empty,
        None => DataSource::Stdin,
    }
}

/// The event's JSON text from `source`, checked to be JSON (an empty file or stdin is `{}`).
/// The text is sent as given, so numbers and key order survive.
pub fn read_event(source: &DataSource, stdin: &mut dyn Read) -> Result<String> {
    let (text, from) = match source {
        DataSource::Empty => return Ok("{}".into()),
        DataSource::Inline(s) => (s.clone(), "--data".to_string()),
        DataSource::File(p) => {
            let bytes = std::fs::read(p).map_err(|e| CliError::io(format!("reading {}", p.display()), e))?;
            let text = String::from_utf8(bytes).map_err(|_| CliError::usage(format!("{} is not UTF-8 text", p.display())))?;
            (text, p.display().to_string())
        }
        DataSource::Stdin => {
            let mut bytes = Vec::new();
            stdin.read_to_end(&mut bytes).map_err(|e| CliError::io("reading stdin", e))?;
            let text = String::from_utf8(bytes).map_err(|_| CliError::usage("stdin is not UTF-8 text"))?;
            (text, "stdin".to_string())
        }
    };
    if text.trim().is_empty() {
        if matches!(source, DataSource::Inline(_)) {
            return Err(CliError::usage("--data is empty: give JSON, e.g. --data '{}'"));
        }
        return Ok("{}".into());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| CliError::usage(format!("the event from {from} is not valid JSON: {e}")))?;
    Ok(text)
}

/// The runtime a source file implies, from its extension.
pub fn runtime_for(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "py" => Some("python3.11"),
        "js" | "mjs" | "cjs" => Some("nodejs20"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_split_on_the_first_equals() {
        assert_eq!(parse_env_kv("A=1").unwrap(), ("A".into(), "1".into()));
        assert_eq!(parse_env_kv("URL=a=b=c").unwrap(), ("URL".into(), "a=b=c".into()));
        assert_eq!(parse_env_kv("EMPTY=").unwrap(), ("EMPTY".into(), "".into()));
        assert!(parse_env_kv("NOEQUALS").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_env_kv("=v").is_err());
    }

    #[test]
    fn data_sources() {
        assert_eq!(data_source(Some("{\"a\":1}"), true), DataSource::Inline("{\"a\":1}".into()));
        assert_eq!(data_source(Some("@ev.json"), true), DataSource::File("ev.json".into()));
        assert_eq!(data_source(Some("@-"), true), DataSource::Stdin);
        assert_eq!(data_source(None, true), DataSource::Empty);
        assert_eq!(data_source(None, false), DataSource::Stdin);
        // --data wins over a piped stdin.
        assert_eq!(data_source(Some("1"), false), DataSource::Inline("1".into()));
    }

    #[test]
    fn events_are_checked_and_kept_verbatim() {
        let mut no_stdin: &[u8] = b"";
        let ev = read_event(&DataSource::Inline("{\"n\": 1.50, \"b\": 2}".into()), &mut no_stdin).unwrap();
        assert_eq!(ev, "{\"n\": 1.50, \"b\": 2}");
        let e = read_event(&DataSource::Inline("{nope".into()), &mut no_stdin).unwrap_err();
        assert!(matches!(e, CliError::Usage(ref m) if m.contains("--data is not valid JSON")), "{e}");
        assert!(read_event(&DataSource::Inline(" ".into()), &mut no_stdin).is_err());
        assert_eq!(read_event(&DataSource::Empty, &mut no_stdin).unwrap(), "{}");

        let mut stdin: &[u8] = b"[1, 2]\n";
        assert_eq!(read_event(&DataSource::Stdin, &mut stdin).unwrap(), "[1, 2]\n");
        let mut empty: &[u8] = b"  \n";
        assert_eq!(read_event(&DataSource::Stdin, &mut empty).unwrap(), "{}");
        let mut bad: &[u8] = b"hello";
        assert!(read_event(&DataSource::Stdin, &mut bad).unwrap_err().to_string().contains("from stdin"));
    }

    #[test]
    fn data_at_file_reads_the_file() {
        let dir = std::env::temp_dir().join(format!("voltrun-cli-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("event.json");
        std::fs::write(&p, "{\"from\": \"file\"}").unwrap();
        let mut no_stdin: &[u8] = b"";
        let src = data_source(Some(&format!("@{}", p.display())), true);
        assert_eq!(read_event(&src, &mut no_stdin).unwrap(), "{\"from\": \"file\"}");
        let missing = data_source(Some("@/nonexistent/voltrun/event.json"), true);
        let e = read_event(&missing, &mut no_stdin).unwrap_err();
        assert!(matches!(e, CliError::Io { .. }) && e.to_string().contains("/nonexistent/voltrun/event.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn layer_references() {
        assert_eq!(parse_layer_ref("deps:3").unwrap(), ("deps".into(), 3));
        for bad in ["deps", "deps:", "deps:0", ":1", "deps:x"] {
            assert!(parse_layer_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weights_and_qualifiers() {
        assert_eq!(parse_weight("5=0.1").unwrap(), (5, 0.1));
        for bad in ["5", "0=0.1", "x=0.1", "5=0", "5=1", "5=1.5", "5=-0.1", "5=NaN", "5=inf", "=0.5"] {
            assert!(parse_weight(bad).is_err(), "{bad}");
        }
        assert_eq!(split_qualifier("hello").unwrap(), ("hello", None));
        assert_eq!(split_qualifier("hello:live").unwrap(), ("hello", Some("live")));
        assert_eq!(split_qualifier("hello:3").unwrap(), ("hello", Some("3")));
        for bad in ["hello:", ":live", "a:b:c"] {
            assert!(split_qualifier(bad).is_err(), "{bad}");
        }
        let c = parse(&["aliases", "update", "hello", "live", "--version", "4", "--no-weights", "--no-route"]).unwrap();
        let ClientCommand::Aliases(AliasesCommand::Update { flags, .. }) = c.cmd else { panic!() };
        assert_eq!((flags.version, flags.no_weights, flags.no_route), (Some(4), true, true));
        assert!(parse(&["aliases", "update", "hello", "live", "--weight", "2=0.5", "--no-weights"]).is_err());
        assert!(parse(&["functions", "version", "hello", "0"]).is_err());
        let c = parse(&["invoke", "hello", "-q", "live"]).unwrap();
        let ClientCommand::Invoke(a) = c.cmd else { panic!() };
        assert_eq!(a.qualifier.as_deref(), Some("live"));
    }

    #[test]
    fn runtimes_from_extensions() {
        assert_eq!(runtime_for(Path::new("h.py")), Some("python3.11"));
        assert_eq!(runtime_for(Path::new("dir/index.mjs")), Some("nodejs20"));
        assert_eq!(runtime_for(Path::new("Makefile")), None);
    }

    #[derive(clap::Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> std::result::Result<TestCli, clap::Error> {
        use clap::Parser;
        TestCli::try_parse_from(std::iter::once("voltrun").chain(args.iter().copied()))
    }

    #[test]
    fn command_line_parses() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
        let c = parse(&["functions", "deploy", "hi", "--file", "h.py", "-e", "A=1", "--env", "B=x=y", "--public", "--json"]).unwrap();
        assert!(c.global.json);
        let ClientCommand::Functions(FunctionsCommand::Deploy { name, flags }) = c.cmd else { panic!() };
        assert_eq!(name, "hi");
        assert_eq!(flags.env, vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]);
        assert_eq!(flags.public, Some(true));
        let c = parse(&["--server", "h:1", "fn", "update", "hi", "--public=false", "--no-route"]).unwrap();
        assert_eq!(c.global.server.as_deref(), Some("h:1"));
        let ClientCommand::Functions(FunctionsCommand::Update { flags, .. }) = c.cmd else { panic!() };
        assert_eq!((flags.public, flags.no_route), (Some(false), true));
        assert!(parse(&["functions", "create", "x", "--env", "nope"]).is_err());
        assert!(parse(&["executions", "list", "--status", "weird"]).is_err());
        assert!(parse(&["executions", "list", "--limit", "0"]).is_err());
        assert!(parse(&["keys", "create", "ci", "--expires-in-days", "4000"]).is_err());
        assert!(parse(&["login", "--password-stdin", "--api-key", "k"]).is_err());
        assert!(parse(&["completions", "tcsh"]).is_err());
        let c = parse(&["fn", "deploy", "api", "--dir", "src", "--layer", "a:1", "--layer", "b:2"]).unwrap();
        let ClientCommand::Functions(FunctionsCommand::Deploy { flags, .. }) = c.cmd else { panic!() };
        assert_eq!((flags.dir.as_deref(), flags.layers.as_slice()), (Some(Path::new("src")), ["a:1".to_string(), "b:2".to_string()].as_slice()));
        assert!(parse(&["fn", "deploy", "api", "--dir", "src", "--file", "h.py"]).is_err());
        assert!(parse(&["layers", "publish", "deps"]).is_err(), "--dir or --zip is required");
        assert!(parse(&["layers", "publish", "deps", "--dir", "a", "--zip", "b.zip"]).is_err());
        assert!(matches!(parse(&["layers", "versions", "deps"]).unwrap().cmd, ClientCommand::Layers(LayersCommand::Versions { .. })));
    }
}
