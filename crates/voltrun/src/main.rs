//! The `voltrun` binary: parses the command line and hands over to the library crates.
//! `voltrun serve` runs the API, the engine and a local worker in one process; the client
//! commands (`login`, `functions`, `invoke`, …) live in `voltrun-cli`.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use voltrun_api::{app, auth::AuthKeys, AppState, RateLimits};
use voltrun_engine::{Engine, EngineConfig, Runtimes};
use voltrun_sandbox::{
    init, namespace, network,
    oci::{self, OciSandbox},
    process::ProcessSandbox,
    Sandbox,
};
use voltrun_store::Store;

#[derive(Parser)]
#[command(name = "voltrun", version, about = "Self-hosted serverless functions for Node.js and Python")]
struct Cli {
    #[command(flatten)]
    global: voltrun_cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and moved, never stored in bulk: boxing the big variants buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the API, the scheduler and a local worker in one process.
    Serve(ServeArgs),
    /// Run only a worker: claim and execute queued runs from a shared PostgreSQL database.
    Worker(WorkerArgs),
    /// Print the API's OpenAPI 3.1 document (JSON), as `GET /api/openapi.json` serves it.
    Openapi,
    #[command(flatten)]
    Client(voltrun_cli::ClientCommand),
    /// Build a package's dependencies in the sandbox, as a deploy would, and print the result
    /// as JSON (for tests and operators; the API runs builds itself).
    #[command(name = "__build", hide = true)]
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// The function's runtime.
    #[arg(long)]
    runtime: String,
    /// The unpacked package (with requirements.txt or package.json at its root).
    #[arg(long)]
    dir: PathBuf,
    /// The function's memory in MiB (builds get at least 512).
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// After the build, run this code in the sandbox with the tree on the module path
    /// (`python -c` / `node -e`) and report its output.
    #[arg(long)]
    check: Option<String>,
    /// Start this many identical builds at once (they build once; the rest wait for it).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
}

/// What every node that executes functions needs.
#[derive(clap::Args)]
struct EngineArgs {
    /// Directory for the database, secrets and instance files.
    #[arg(long, env = "VOLTRUN_DATA_DIR", default_value = "./voltrun-data")]
    data_dir: PathBuf,
    /// Database URL; default: a SQLite file in the data dir. `postgres://…` to share state
    /// between nodes.
    #[arg(long, env = "VOLTRUN_DATABASE_URL")]
    database_url: Option<String>,
    /// Isolation tier: namespace, gvisor (runsc), container (runc), process.
    #[arg(long, env = "VOLTRUN_SANDBOX", default_value = "namespace")]
    sandbox: String,
    /// The OCI runtime binary of the container or gvisor tier (default: `runc` / `runsc` on PATH).
    #[arg(long, env = "VOLTRUN_RUNTIME_PATH")]
    runtime_path: Option<PathBuf>,
    /// A block no function may reach, whatever its `egress` list says (repeatable; the
    /// environment variable takes a comma-separated list).
    #[arg(long = "egress-deny", env = "VOLTRUN_EGRESS_DENY", value_delimiter = ',', value_name = "CIDR")]
    egress_deny: Vec<String>,
    /// The DNS resolver (`ip` or `ip:port`) host names in `egress` lists are resolved with
    /// (default: the first nameserver of /etc/resolv.conf).
    #[arg(long, env = "VOLTRUN_EGRESS_DNS_UPSTREAM", value_name = "ADDR")]
    egress_dns_upstream: Option<String>,
    /// Seconds a dependency build may take before it is killed.
    #[arg(long, env = "VOLTRUN_BUILD_TIMEOUT", default_value_t = 600)]
    build_timeout: u64,
    /// Bound of the dependency-tree cache (bytes, or with a K, M, G suffix).
    #[arg(long, env = "VOLTRUN_BUILD_CACHE_SIZE", default_value = "5G")]
    build_cache_size: String,
    /// The most one dependency build may write (bytes, or with a K, M, G suffix): a build
    /// past it is killed and fails.
    #[arg(long, env = "VOLTRUN_BUILD_MAX_OUTPUT", default_value = "1G")]
    build_max_output: String,
    /// The pip index builds use (default: PIP_INDEX_URL, else https://pypi.org/simple).
    #[arg(long, env = "VOLTRUN_PIP_INDEX_URL")]
    pip_index_url: Option<String>,
    /// The npm registry builds use (default: `npm config get registry`, else
    /// https://registry.npmjs.org/).
    #[arg(long, env = "VOLTRUN_NPM_REGISTRY")]
    npm_registry: Option<String>,
    /// The master key secrets (and the shared JWT signing key) are sealed under: 32 bytes as
    /// base64 (`openssl rand -base64 32`) or 64 hex digits. Required with PostgreSQL (every
    /// node the same key); with SQLite, default: `master.key` in the data dir, generated on
    /// first start (mode 0600). Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "VOLTRUN_MASTER_KEY", hide_env_values = true, value_name = "KEY")]
    master_key: Option<String>,
    /// During a master-key rotation: the key being replaced. Values sealed under it still
    /// open; everything new is sealed under --master-key.
    #[arg(long, env = "VOLTRUN_PREVIOUS_MASTER_KEY", hide_env_values = true, value_name = "KEY")]
    previous_master_key: Option<String>,
    /// Allow the `process` tier, which does not isolate functions from the host.
    #[arg(long, env = "VOLTRUN_INSECURE")]
    insecure: bool,
    /// Instances one function may run at once.
    #[arg(long, env = "VOLTRUN_FUNCTION_CONCURRENCY", default_value_t = 10)]
    function_concurrency: usize,
    /// Synchronous invocations that may queue per function before 429.
    #[arg(long, env = "VOLTRUN_FUNCTION_QUEUE", default_value_t = 100)]
    function_queue: usize,
    /// Seconds an idle warm instance is kept.
    #[arg(long, env = "VOLTRUN_IDLE_TTL", default_value_t = 300)]
    idle_ttl: u64,
    /// Async runs this node executes at once (0: none; leave them to workers).
    #[arg(long, env = "VOLTRUN_ASYNC_CONCURRENCY", default_value_t = 32)]
    async_concurrency: usize,
    /// Seconds a claimed run stays this node's without a heartbeat (then another node takes it).
    #[arg(long, env = "VOLTRUN_LEASE_SECONDS", default_value_t = 30)]
    lease_seconds: u64,
    /// Milliseconds before the first retry of a failed async run (doubling each attempt).
    #[arg(long, env = "VOLTRUN_RETRY_BACKOFF_MS", default_value_t = 1000)]
    retry_backoff_ms: u64,
    /// Pre-started instances kept ready per runtime (0: none), so a new function's first run
    /// only loads its code.
    #[arg(long, env = "VOLTRUN_SPARES", default_value_t = 1)]
    spares: usize,
    /// The most spares per runtime the pool grows to when new functions arrive faster than
    /// spares are replaced (it doubles on demand and halves after an idle TTL without).
    #[arg(long, env = "VOLTRUN_SPARES_MAX", default_value_t = voltrun_engine::DEFAULT_SPARES_MAX)]
    spares_max: usize,
    /// Do not fire cron schedules from this node.
    #[arg(long, env = "VOLTRUN_NO_SCHEDULER")]
    no_scheduler: bool,
    /// Runs one user may have in flight on this node (synchronous, HTTP and test runs past it
    /// get 429; async runs count towards it). 0 = unlimited.
    #[arg(long, env = "VOLTRUN_QUOTA_CONCURRENT_RUNS", default_value_t = voltrun_core::Quotas::default().concurrent_runs)]
    quota_concurrent_runs: u64,
    /// Async slots one user's runs may hold at once on this node (0: all but an eighth of
    /// --async-concurrency, keeping at least one free for other users).
    #[arg(long, env = "VOLTRUN_ASYNC_PER_USER", default_value_t = 0)]
    async_per_user: usize,
    /// Test runs (POST /api/functions/test) at once on this node, every user's together.
    #[arg(long, env = "VOLTRUN_TEST_CONCURRENCY", default_value_t = 16)]
    test_concurrency: usize,
    /// Test runs one user may have at once.
    #[arg(long, env = "VOLTRUN_TEST_RUNS_PER_USER", default_value_t = 2)]
    test_runs_per_user: usize,
    /// Dependency builds this node runs at once (0: none, other nodes build; default: one
    /// per core). More are queued.
    #[arg(long, env = "VOLTRUN_BUILD_CONCURRENCY")]
    build_concurrency: Option<usize>,
    /// Dependency builds one user may have running at once, on every node together; more
    /// are queued (default: half of --build-concurrency, at least 1).
    #[arg(long, env = "VOLTRUN_BUILDS_PER_USER")]
    builds_per_user: Option<usize>,
    /// Versions kept per function beyond those an alias or the schedule points to: older
    /// ones are pruned as new ones are made; the latest is always kept (0 = keep all).
    #[arg(long, env = "VOLTRUN_VERSION_RETENTION", default_value_t = voltrun_store::DEFAULT_VERSION_RETENTION)]
    version_retention: i64,
}

/// Per-user quotas and execution history retention (docs/SECURITY.md, "Hardening: quotas and
/// retention"); 0 = unlimited everywhere.
#[derive(clap::Args)]
struct QuotaArgs {
    /// Functions one user may have (0 = unlimited).
    #[arg(long, env = "VOLTRUN_QUOTA_FUNCTIONS", default_value_t = voltrun_core::Quotas::default().functions)]
    quota_functions: u64,
    /// Bytes of code summed over one user's functions and layers (0 = unlimited).
    #[arg(long, env = "VOLTRUN_QUOTA_CODE_BYTES", default_value_t = voltrun_core::Quotas::default().code_bytes)]
    quota_code_bytes: u64,
    /// API keys one user may have (0 = unlimited).
    #[arg(long, env = "VOLTRUN_QUOTA_API_KEYS", default_value_t = voltrun_core::Quotas::default().api_keys)]
    quota_api_keys: u64,
    /// Secrets one user may have (0 = unlimited).
    #[arg(long, env = "VOLTRUN_QUOTA_SECRETS", default_value_t = voltrun_core::Quotas::default().secrets)]
    quota_secrets: u64,
    /// Days a finished execution is kept (0 = no age limit).
    #[arg(long, env = "VOLTRUN_RETENTION_DAYS", default_value_t = voltrun_core::Retention::default().max_age_days)]
    retention_days: u64,
    /// Newest finished executions kept per function (0 = no count limit).
    #[arg(long, env = "VOLTRUN_RETENTION_PER_FUNCTION", default_value_t = voltrun_core::Retention::default().per_function)]
    retention_per_function: u64,
    /// Newest finished executions kept per user (0 = no count limit).
    #[arg(long, env = "VOLTRUN_RETENTION_PER_USER", default_value_t = voltrun_core::Retention::default().per_user)]
    retention_per_user: u64,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "VOLTRUN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// Invocations per second allowed per user (0 = unlimited).
    #[arg(long, env = "VOLTRUN_INVOKE_RATE", default_value_t = 1000.0)]
    invoke_rate: f64,
    /// Log streams (GET /api/executions/{id}/logs?follow=true) one user may hold open at once.
    #[arg(long, env = "VOLTRUN_MAX_LOG_STREAMS_PER_USER", default_value_t = 16)]
    max_log_streams_per_user: usize,
    /// Also serve HTTP triggers at `/{route}/…` on this address, an origin of their own (no
    /// API, no dashboard), as Lambda function URLs live on their own domain. Default: off.
    #[arg(long, env = "VOLTRUN_TRIGGER_LISTEN")]
    trigger_listen: Option<String>,
    #[command(flatten)]
    quotas: QuotaArgs,
    /// JWT signing secret; default: generated on first start, kept in the shared database
    /// with PostgreSQL (so every node signs alike) and in the data dir (mode 0600) with SQLite.
    #[arg(long, env = "VOLTRUN_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    #[command(flatten)]
    guard: GuardArgs,
}

/// What one client may hold of the server: connections, their timeouts, password hashing.
#[derive(clap::Args)]
struct GuardArgs {
    /// Registrations allowed per client address per minute.
    #[arg(long, env = "VOLTRUN_REGISTER_RATE", default_value_t = voltrun_api::DEFAULT_REGISTER_RATE)]
    register_rate: u32,
    /// Password hashes (argon2, ~19 MiB each) run at once; default: the number of CPUs.
    #[arg(long, env = "VOLTRUN_HASH_CONCURRENCY")]
    hash_concurrency: Option<usize>,
    /// Logins and registrations that may wait for a hash before 429.
    #[arg(long, env = "VOLTRUN_HASH_QUEUE", default_value_t = 64)]
    hash_queue: usize,
    /// Seconds allowed for a request's head; also how long an idle kept-alive connection stays open.
    #[arg(long, env = "VOLTRUN_HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds allowed from a request's head to the end of its body; also how long a response
    /// write may wait for a client that does not read.
    #[arg(long, env = "VOLTRUN_BODY_TIMEOUT", default_value_t = 30.0)]
    body_timeout: f64,
    /// Open connections allowed per client address (per /64 for IPv6).
    #[arg(long, env = "VOLTRUN_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    max_connections_per_ip: usize,
    /// Open connections allowed in all; default: half the open-file limit.
    #[arg(long, env = "VOLTRUN_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
}

impl GuardArgs {
    fn listener(&self) -> Result<voltrun_api::listener::ListenerConfig> {
        let secs = |v: f64, flag: &str| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                bail!("--{flag} must be a number of seconds above 0")
            }
        };
        Ok(voltrun_api::listener::ListenerConfig {
            header_timeout: secs(self.header_timeout, "header-timeout")?,
            body_timeout: secs(self.body_timeout, "body-timeout")?,
            write_timeout: secs(self.body_timeout, "body-timeout")?,
            max_connections: self.max_connections.unwrap_or_else(voltrun_api::listener::default_max_connections).max(1),
            max_connections_per_ip: self.max_connections_per_ip.max(1),
        })
    }

    fn hash_pool(&self) -> voltrun_api::hashpool::HashPoolConfig {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        voltrun_api::hashpool::HashPoolConfig { concurrency: self.hash_concurrency.unwrap_or(cpus).max(1), queue: self.hash_queue }
    }
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[command(flatten)]
    engine: EngineArgs,
}

/// Once parsed, the keys given by environment leave it (else /proc/<pid>/environ and every
/// host helper spawned without a cleared environment would show them), and the process
/// writes no core dump (it would hold the keys and opened secrets). Runs while the process
/// has one thread: nothing reads the environment concurrently.
fn forget_key_material() {
    for var in ["VOLTRUN_MASTER_KEY", "VOLTRUN_PREVIOUS_MASTER_KEY", "VOLTRUN_JWT_SECRET"] {
        std::env::remove_var(var);
    }
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads a valid rlimit; failing only leaves core dumps as they were.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
}

fn main() -> Result<()> {
    // A sandbox init is this same binary re-executed; it must not start a runtime or parse
    // the command line as a client would.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(init::INIT_ARG) {
        init::init_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(oci::GUARD_ARG) {
        oci::guard_main(&args[2..]);
    }
    // A `provided` instance's Runtime API helper, when the voltrun-runtime-api binary is not
    // installed beside this one (voltrun_engine::runtimes).
    if args.get(1).map(String::as_str) == Some(voltrun_engine::runtimes::RUNTIME_API_ARG) {
        voltrun_engine::runtime_api::main();
    }
    let cli = Cli::parse();
    forget_key_material();
    if let Command::Openapi = cli.command {
        print!("{}", voltrun_api::openapi::document_json());
        return Ok(());
    }
    // The one `secrets` command that is not a client of the API: it needs the database.
    if let Command::Client(voltrun_cli::ClientCommand::Secrets(voltrun_cli::args::SecretsCommand::RotateMasterKey(a))) = cli.command {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VOLTRUN_LOG").unwrap_or_else(|_| "warn".into())).with_writer(std::io::stderr).init();
        return tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(rotate_master_key(a));
    }
    // Client commands are blocking HTTP calls: no runtime, no server logging.
    if let Command::Client(cmd) = cli.command {
        std::process::exit(voltrun_cli::run(cmd, cli.global, Cli::command));
    }
    // Before any thread allocates: freed password-hash buffers go back to the system.
    voltrun_api::sys::return_large_allocations_to_the_system();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VOLTRUN_LOG").unwrap_or_else(|_| "info".into())).with_writer(std::io::stderr).init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::Worker(args) => rt.block_on(worker(args)),
        Command::Build(args) => {
            let ok = rt.block_on(build(args))?;
            std::process::exit(if ok { 0 } else { 1 })
        }
        Command::Client(_) | Command::Openapi => unreachable!("client and openapi commands returned above"),
    }
}

/// The server's egress settings, validated (a bad `--egress-deny` or upstream stops the start).
fn egress_config(args: &EngineArgs) -> Result<network::EgressConfig> {
    let deny = args.egress_deny.iter().map(|c| voltrun_core::egress::Cidr::parse(c.trim()).map_err(|e| anyhow::anyhow!("--egress-deny {c:?}: {e}"))).collect::<Result<Vec<_>>>()?;
    let dns_upstream = match &args.egress_dns_upstream {
        None => None,
        Some(a) => Some(
            a.parse::<std::net::SocketAddr>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                .map_err(|_| anyhow::anyhow!("--egress-dns-upstream {a:?}: not an address or address:port"))?,
        ),
    };
    Ok(network::EgressConfig { deny, dns_upstream })
}

/// Egress enforcement for the isolating tiers, or why this host cannot have it.
fn build_network(args: &EngineArgs) -> Result<Result<Arc<network::Network>, String>> {
    let cfg = egress_config(args)?;
    Ok(network::Network::new(cfg).map_err(|e| {
        tracing::warn!(err = %e, "network egress is not available: functions with an egress list will not start");
        e.to_string()
    }))
}

fn build_sandbox(args: &EngineArgs, data_dir: &Path) -> Result<Arc<dyn Sandbox>> {
    let kind = args.sandbox.as_str();
    Ok(match kind {
        "process" => Arc::new(ProcessSandbox::new(args.insecure)?),
        "namespace" => Arc::new(namespace::NamespaceSandbox::new()?.with_network(build_network(args)?)),
        "container" => Arc::new(OciSandbox::new(oci::Runtime::Runc, args.runtime_path.clone(), data_dir)?.with_network(build_network(args)?)),
        "gvisor" => Arc::new(OciSandbox::new(oci::Runtime::Runsc, args.runtime_path.clone(), data_dir)?.with_network(build_network(args)?)),
        other => bail!("unknown sandbox {other:?}: use namespace, gvisor, container or process"),
    })
}

/// The JWT secret: given; or with PostgreSQL the one in the shared database (the first node
/// to start generates it); or with SQLite read from / generated into `<data>/jwt.key`.
async fn jwt_secret(store: &Store, data_dir: &Path, given: Option<String>) -> Result<Vec<u8>> {
    if let Some(s) = given {
        if s.len() < 32 {
            bail!("--jwt-secret must be at least 32 characters");
        }
        return Ok(s.into_bytes());
    }
    if store.dialect() == voltrun_store::Dialect::Postgres {
        // Sealed under the master key (issue 16): a copy of the database alone cannot mint
        // tokens. A key an older version kept in plain text is adopted.
        let s = store.shared_sealed_secret("jwt_signing_key", || zeroize::Zeroizing::new(new_jwt_key())).await.context("reading the shared JWT key")?;
        if s.len() < 64 {
            bail!("the shared JWT key in server_secrets is too short");
        }
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt.key");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 64 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => bail!("{} is too short; delete it to generate a new one", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = new_jwt_key();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// A fresh JWT signing key: 32 random bytes as 64 hex characters.
fn new_jwt_key() -> String {
    (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// Gives the store its master key (docs/SECURITY.md, "Secrets and the master key"): the one
/// given; or, on SQLite only, `<data>/master.key`, generated on first start. A key that is
/// not the database's stops the start (the store checks it against the key check value).
async fn unlock(store: Store, given: Option<&str>, previous: Option<&str>, data_dir: &Path) -> Result<Store> {
    let previous = previous.map(|p| voltrun_store::MasterKey::parse(p).context("--previous-master-key / VOLTRUN_PREVIOUS_MASTER_KEY")).transpose()?;
    let (key, generated) = match given {
        Some(text) => (voltrun_store::MasterKey::parse(text).context("--master-key / VOLTRUN_MASTER_KEY")?, None),
        None if store.dialect() == voltrun_store::Dialect::Postgres => bail!(
            "on PostgreSQL every node must be given the same master key: set VOLTRUN_MASTER_KEY (or --master-key) to 32 bytes as base64 or hex, e.g. from `openssl rand -base64 32`"
        ),
        None => {
            let path = data_dir.join("master.key");
            let (key, created) = voltrun_store::MasterKey::load_or_create(&path).with_context(|| format!("the master key file {}", path.display()))?;
            if created {
                tracing::info!(path = %path.display(), key_id = key.id(), "generated a master key; back it up: secrets cannot be read without it");
            }
            (key, created.then_some(path))
        }
    };
    let id = key.id().to_string();
    match store.unlock(key, previous).await {
        Ok(store) => {
            tracing::info!(key_id = %id, "master key accepted");
            Ok(store)
        }
        Err(e @ voltrun_store::StoreError::WrongMasterKey { .. }) if generated.is_some() => {
            // The key just generated is of no use to this database: not left behind.
            if let Some(path) = &generated {
                let _ = std::fs::remove_file(path);
            }
            Err(anyhow::anyhow!("refusing to start: {e}; master.key is missing from the data dir: restore the original"))
        }
        Err(e @ (voltrun_store::StoreError::WrongMasterKey { .. } | voltrun_store::StoreError::RetiredMasterKey { .. })) => Err(anyhow::anyhow!("refusing to start: {e}")),
        Err(e) => Err(e).context("checking the master key"),
    }
}

/// `voltrun secrets rotate-master-key`: re-seals every value under the new key (the store
/// does it in batches, online), then replaces the key check value.
async fn rotate_master_key(a: voltrun_cli::args::RotateArgs) -> Result<()> {
    let url = match &a.database_url {
        Some(u) => u.clone(),
        None => {
            let db = a.data_dir.join("voltrun.db");
            if !db.exists() {
                bail!("{} does not exist: give --data-dir of the server, or --database-url", db.display());
            }
            format!("sqlite://{}", db.canonicalize()?.display())
        }
    };
    let parse = |text: &Option<String>, what: &str| -> Result<voltrun_store::MasterKey> {
        voltrun_store::MasterKey::parse(text.as_deref().unwrap_or_default()).with_context(|| what.to_string())
    };
    let new = parse(&a.master_key, "--master-key / VOLTRUN_MASTER_KEY (the new key)")?;
    let old = parse(&a.previous_master_key, "--previous-master-key / VOLTRUN_PREVIOUS_MASTER_KEY (the key in use)")?;
    if new.id() == old.id() {
        bail!("the new and the previous master key are the same key");
    }
    let (new_id, old_id) = (new.id().to_string(), old.id().to_string());
    let store = Store::open(&url).await.context("opening the database")?;
    let store = store.unlock(new, Some(old)).await.context("checking the keys against the database")?;
    let done = store.rotate_master_key(a.batch.max(1)).await.context("re-encrypting")?;
    println!(
        "rotated from master key {old_id} to {new_id}: {} secrets and {} server values re-encrypted, {} already under the new key, {} AWS keys re-encrypted; the key check value now names the new key",
        done.secrets, done.server_values, done.already_new, done.aws_keys
    );
    Ok(())
}

/// Opens the store and builds the engine (not started: no dispatcher, no spares).
async fn open_engine(args: &EngineArgs, quotas: voltrun_core::Quotas) -> Result<(Store, Engine, PathBuf)> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))?;
    let data_dir = args.data_dir.canonicalize()?;
    let sandbox = build_sandbox(args, &data_dir)?;
    if sandbox.kind() == "process" {
        tracing::warn!("the process sandbox runs functions without isolation: development only");
    }
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", data_dir.join("voltrun.db").display()));
    let store = Store::open(&url).await.with_context(|| format!("opening the database at {url}"))?.with_version_retention(args.version_retention);
    let store = unlock(store, args.master_key.as_deref(), args.previous_master_key.as_deref(), &data_dir).await?;
    let runtimes = Runtimes::discover(&data_dir.join("runtimes"))?;
    let build_concurrency = args.build_concurrency.unwrap_or_else(voltrun_engine::default_build_concurrency);
    let cfg = EngineConfig {
        data_dir: data_dir.clone(),
        function_concurrency: args.function_concurrency.max(1),
        function_queue: args.function_queue,
        idle_ttl: Duration::from_secs(args.idle_ttl.max(1)),
        async_concurrency: args.async_concurrency,
        lease: Duration::from_secs(args.lease_seconds.max(3)),
        retry_backoff: Duration::from_millis(args.retry_backoff_ms),
        scheduler: !args.no_scheduler,
        spares: args.spares,
        spares_max: args.spares_max,
        user_concurrent_runs: args.quota_concurrent_runs,
        async_per_user: args.async_per_user,
        test_concurrency: args.test_concurrency,
        test_per_user: args.test_runs_per_user,
        build_concurrency,
        builds_per_user: args.builds_per_user.unwrap_or_else(|| voltrun_engine::default_builds_per_user(build_concurrency)).max(1),
        quotas,
        build: build_config(args)?,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone(), sandbox, runtimes, cfg)?;
    Ok((store, engine, data_dir))
}

/// Opens the store and builds the engine a node runs (serve or worker), started.
async fn start_engine(args: &EngineArgs, quotas: voltrun_core::Quotas) -> Result<(Store, Engine, PathBuf)> {
    let (store, engine, data_dir) = open_engine(args, quotas).await?;
    engine.start().await?;
    Ok((store, engine, data_dir))
}

/// The build settings from the flags, the host's pip/npm configuration filling the gaps.
fn build_config(args: &EngineArgs) -> Result<voltrun_engine::BuildConfig> {
    let mut c = voltrun_engine::BuildConfig::from_host();
    if args.build_timeout == 0 {
        bail!("--build-timeout must be at least 1 second");
    }
    c.timeout = Duration::from_secs(args.build_timeout);
    c.cache_bytes = parse_size(&args.build_cache_size).with_context(|| format!("--build-cache-size {:?}", args.build_cache_size))?;
    c.max_output = parse_size(&args.build_max_output).with_context(|| format!("--build-max-output {:?}", args.build_max_output))?;
    for (flag, given, slot) in [("--pip-index-url", &args.pip_index_url, &mut c.pip_index_url), ("--npm-registry", &args.npm_registry, &mut c.npm_registry)] {
        if let Some(u) = given {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                bail!("{flag} must be an http(s) URL");
            }
            *slot = u.clone();
        }
    }
    Ok(c)
}

/// `5G`, `512M`, `100K` or a number of bytes.
fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = num.trim().parse().context("not a size")?;
    n.checked_mul(1 << shift).context("too large")
}

/// `voltrun __build`: one dependency build (or cache hit), printed as JSON; true on success.
async fn build(args: BuildArgs) -> Result<bool> {
    let runtime = voltrun_core::Runtime::parse(&args.runtime).with_context(|| format!("unknown runtime {:?}", args.runtime))?;
    let dir = args.dir.canonicalize().with_context(|| format!("{}", args.dir.display()))?;
    let (_store, engine, _) = open_engine(&args.engine, voltrun_core::Quotas::default()).await?;
    let Some(dep_files) = voltrun_engine::build::dependency_files(runtime, &dir) else {
        bail!("{} has nothing to build", dir.display());
    };
    let t0 = Instant::now();
    let req = voltrun_engine::BuildRequest { runtime, memory_mb: args.memory, package_dir: dir, dep_files, log: None };
    let mut others = tokio::task::JoinSet::new();
    for _ in 1..args.parallel.max(1) {
        let (engine, req) = (engine.clone(), req.clone());
        others.spawn(async move { engine.build_dependencies(req).await });
    }
    let result = engine.build_dependencies(req).await;
    let mut parallel = Vec::new();
    while let Some(r) = others.join_next().await {
        parallel.push(match r? {
            Ok(t) => serde_json::json!({"ok": true, "key": t.key, "cached": t.cached}),
            Err(f) => serde_json::json!({"ok": false, "reason": f.reason}),
        });
    }
    let ms = t0.elapsed().as_millis() as u64;
    let out = match &result {
        Ok(t) => {
            let check = match &args.check {
                Some(code) => Some(engine.try_dependency_tree(runtime, &t.path, code).await),
                None => None,
            };
            serde_json::json!({
                "ok": true, "key": t.key, "path": t.path, "cached": t.cached, "logs": t.logs, "logs_truncated": t.logs_truncated,
                "duration_ms": ms, "tree_bytes": engine.dependency_cache_bytes(), "parallel": parallel,
                "check": check.as_ref().map(|c| match c { Ok(o) => serde_json::json!({"ok": true, "output": o}), Err(o) => serde_json::json!({"ok": false, "output": o}) }),
            })
        }
        Err(f) => serde_json::json!({"ok": false, "reason": f.reason, "logs": f.logs, "logs_truncated": f.logs_truncated, "duration_ms": ms}),
    };
    println!("{out}");
    engine.shutdown().await;
    Ok(result.is_ok())
}

async fn worker(args: WorkerArgs) -> Result<()> {
    let url = args.engine.database_url.as_deref().unwrap_or("");
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("a worker shares its queue with other nodes: give --database-url postgres://…");
    }
    // A worker applies the builds it runs under the default quotas (the serving nodes' flags
    // are not its own).
    let (_store, engine, _) = start_engine(&args.engine, voltrun_core::Quotas::default()).await?;
    println!("voltrun worker ready");
    tracing::info!("worker claiming runs");
    shutdown_signal().await;
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let q = &args.quotas;
    let quotas = voltrun_core::Quotas {
        functions: q.quota_functions,
        code_bytes: q.quota_code_bytes,
        concurrent_runs: args.engine.quota_concurrent_runs,
        api_keys: q.quota_api_keys,
        secrets: q.quota_secrets,
    };
    let (store, engine, data_dir) = start_engine(&args.engine, quotas).await?;
    let auth = AuthKeys::new(jwt_secret(&store, &data_dir, args.jwt_secret).await?).with_hash_pool(args.guard.hash_pool());
    // One connection table for every listener: their caps count together.
    let conns = voltrun_api::listener::Connections::new(args.guard.listener()?);
    store.spawn_retention(voltrun_core::Retention { max_age_days: q.retention_days, per_function: q.retention_per_function, per_user: q.retention_per_user });
    let state = AppState::new(voltrun_api::SharedState {
        store,
        engine,
        auth: Arc::new(auth),
        limits: Arc::new(RateLimits::new(args.invoke_rate).with_register_rate(args.guard.register_rate.max(1))),
        quotas,
        started: Instant::now(),
        log_streams: Arc::new(voltrun_api::executions::LogStreams::new(args.max_log_streams_per_user)),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("voltrun listening on http://{addr}");
    tracing::info!(%addr, data_dir = %data_dir.display(), "voltrun serving");
    let triggers = match &args.trigger_listen {
        Some(at) => Some(tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding {at}"))?),
        None => None,
    };
    let engine = state.engine.clone();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // The trigger listener stops with the main one (when the shutdown signal arrives).
    let (triggers_stop_tx, triggers_stop_rx) = tokio::sync::watch::channel(false);
    let mut triggers_task = None;
    if let Some(listener) = triggers {
        let at = listener.local_addr()?;
        println!("voltrun triggers listening on http://{at}");
        tracing::info!(addr = %at, "serving triggers on an origin of their own");
        let app = voltrun_api::trigger_app(state.clone());
        let mut stop = triggers_stop_rx;
        let table = conns.clone();
        triggers_task = Some(tokio::spawn(async move {
            let r = voltrun_api::listener::serve(listener, app, &table, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = r.await {
                tracing::error!(error = %e, "the trigger listener failed");
            }
        }));
    }
    let server = voltrun_api::listener::serve(listener, app(state), &conns, async move {
        shutdown_signal().await;
        let _ = triggers_stop_tx.send(true);
        let _ = stopping_tx.send(());
    });
    // Open requests get a grace period to finish; long streams do not hold the exit.
    let grace = async {
        let _ = stopping_rx.await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    // Both listeners drain within the same grace period.
    let server = async move {
        let r = server.await;
        if let Some(t) = triggers_task {
            let _ = t.await;
        }
        r
    };
    tokio::select! {
        r = server => r?,
        _ = grace => tracing::warn!("requests still open after 10 s; stopping anyway"),
    }
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
