//! A setup step that really fails, in the namespace tier (on the init's side of the clone) and
//! in the container tier (on the server's side, before the OCI runtime runs): the error names the step, what it displays
//! (what reaches an execution record) carries no host path, its source keeps the detail for
//! the log, and the setup guard leaves nothing behind (mount point, bundle, cgroup).
//!
//! Its own `main` (no libtest harness): the namespace tier starts `/proc/self/exe
//! __sandbox-init`, which is this binary, so it must act as the init when asked to, as the
//! voltrun binary does. Needs root and cgroups (as the tiers do); the container part needs runc.

use std::path::{Path, PathBuf};

use voltrun_sandbox::cgroup::Hierarchy;
use voltrun_sandbox::namespace::NamespaceSandbox;
use voltrun_sandbox::oci::{OciSandbox, Runtime};
use voltrun_sandbox::{init, InstanceSpec, ResourceLimits, Sandbox, SandboxError, Step};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(init::INIT_ARG) {
        init::init_main(&args[2..]);
    }
    let tests: [Test; 2] = [
        ("a_failed_init_step_names_the_step_and_no_host_path", a_failed_init_step_names_the_step_and_no_host_path),
        ("a_failed_server_step_names_the_step_and_no_host_path", a_failed_server_step_names_the_step_and_no_host_path),
    ];
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    for (name, test) in tests {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("voltrun-setup-failure-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir test dir");
        test(&dir);
        std::fs::remove_dir_all(&dir).expect("remove test dir");
        println!("test {name} ... ok");
    }
}

/// A test's name and body (given a fresh directory).
type Test = (&'static str, fn(&Path));

fn spec(code_dir: PathBuf, bootstrap_dir: PathBuf) -> InstanceSpec {
    InstanceSpec {
        argv: vec!["/bin/true".into()],
        env: vec![("SECRET_PATH".into(), "x".into())],
        code_dir,
        runtime_paths: vec![],
        bootstrap_dir,
        limits: ResourceLimits::default(),
        network: None,
        job: None,
    }
}

/// The error of a spawn that must fail.
fn spawn_error(sandbox: &dyn Sandbox, spec: &InstanceSpec) -> SandboxError {
    match sandbox.spawn(spec) {
        Ok(_) => panic!("the {} tier started an instance that cannot start", sandbox.kind()),
        Err(e) => e,
    }
}

/// What users would see names `step`, and no path but what the step's own name holds.
fn assert_user_safe(e: &SandboxError, step: Step, host_path: &Path) {
    let SandboxError::Setup(setup) = e else { panic!("not a setup error: {e:?}") };
    assert_eq!(setup.step, step, "{e}");
    let shown = e.to_string();
    assert!(shown.contains(step.name()), "{shown}");
    assert!(!shown.replace(step.name(), "").contains('/'), "a path in what users see: {shown}");
    let log = std::error::Error::source(e).expect("a source for the log").to_string();
    assert!(log.contains(&*host_path.to_string_lossy()), "the log detail lost the path: {log}");
}

/// No cgroup of this process is left in the instance hierarchy.
fn assert_no_cgroup_left() {
    let dirs = match Hierarchy::detect().expect("cgroups") {
        Hierarchy::V1 { memory, pids, cpu, .. } => vec![memory, pids, cpu],
        Hierarchy::V2 { base } => vec![base],
    };
    let ours = format!("i{}-", std::process::id());
    for d in dirs {
        let left: Vec<_> = std::fs::read_dir(&d).expect("read cgroup dir").flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&ours)).collect();
        assert!(left.is_empty(), "cgroups left in {}: {left:?}", d.display());
    }
}

/// The bootstrap directory is missing: the init cannot open it as a bind source (ENOENT), a
/// step on the child side, reported over the sync pipe.
fn a_failed_init_step_names_the_step_and_no_host_path(dir: &Path) {
    let sandbox = NamespaceSandbox::new().expect("the namespace tier (needs root and cgroups)");
    let code = dir.join("code");
    voltrun_package::InstanceDir::create(&code).unwrap();
    let missing = dir.join("no-such-bootstraps");
    let e = spawn_error(&sandbox, &spec(code.clone(), missing.clone()));
    assert_user_safe(&e, Step::OpenBindSources, &missing);
    let SandboxError::Setup(setup) = &e else { unreachable!() };
    assert_eq!(setup.source.kind(), std::io::ErrorKind::NotFound, "{:?}", setup.source);
    assert!(!dir.join("code.root").exists(), "the mount point is left");
    assert_no_cgroup_left();
}

/// Where the OCI bundle goes (beside the code directory) a file is in the way: the server
/// cannot write the bundle.
fn a_failed_server_step_names_the_step_and_no_host_path(dir: &Path) {
    let sandbox = OciSandbox::new(Runtime::Runc, None, dir).expect("the container tier (needs root, cgroups and runc: apt-get install runc)");
    let code = dir.join("code");
    voltrun_package::InstanceDir::create(&code).unwrap();
    let in_the_way = dir.join("code.oci");
    std::fs::write(&in_the_way, b"not a directory").unwrap();
    let e = spawn_error(&sandbox, &spec(code, dir.to_path_buf()));
    assert_user_safe(&e, Step::WriteBundle, &in_the_way);
    assert_no_cgroup_left();
    sandbox.shutdown();
}
