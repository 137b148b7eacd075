//! The `process` tier: a plain child process with rlimits in its own process group.
//!
//! No isolation at all: the function sees the host's files, network and processes. It exists
//! for development on machines where namespaces are unavailable, and refuses to be built
//! unless the operator says `--insecure`.

use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};

use crate::root::{rlimits, Rlimit};
use crate::setup::{at, SetupError, Step};
use crate::{sys, ExitInfo, InstanceHandle, InstanceSpec, Sandbox, SandboxError, Spawned};

/// Runs instances as plain child processes (no isolation).
#[derive(Debug)]
pub struct ProcessSandbox(());

impl ProcessSandbox {
    /// Builds the tier only when the operator accepted that it isolates nothing.
    pub fn new(insecure: bool) -> Result<Self, SandboxError> {
        if !insecure {
            return Err(SandboxError::Unavailable("the process sandbox does not isolate functions from the host; pass --insecure to use it anyway".into()));
        }
        Ok(ProcessSandbox(()))
    }
}

impl Sandbox for ProcessSandbox {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn spawn(&self, spec: &InstanceSpec) -> Result<Spawned, SandboxError> {
        if spec.network.is_some() {
            // No network of its own here: a function with egress would get the host's, unfiltered.
            return Err(SetupError::other(Step::PrepareNetwork, "egress is not available in the process tier").into());
        }
        if spec.job.is_some() {
            // A job (a dependency build) runs hostile build scripts: with no isolation they
            // would run as the server, on its files and its network.
            return Err(SetupError::other(Step::Exec, "dependency builds are not available in the process tier (it has no isolation)").into());
        }
        let pipe = || sys::pipe().map_err(at(Step::MakePipes, "pipe2"));
        let (ctl_in_r, ctl_in_w) = pipe()?;
        let (ctl_out_r, ctl_out_w) = pipe()?;
        let (log_r, log_w) = pipe()?;
        let log_w2 = log_w.try_clone().map_err(at(Step::MakePipes, "dup"))?;

        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(voltrun_package::InstanceDir::new(&spec.code_dir).task())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_w))
            .stderr(Stdio::from(log_w2));
        let (fd3, fd4) = (ctl_in_r.as_raw_fd(), ctl_out_w.as_raw_fd());
        // The same rlimits as every tier (the only containment this one has), computed before
        // the fork: the closure below must not allocate.
        let limits: Vec<(Rlimit, u64)> = rlimits(&spec.limits);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // calls (setsid, dup2, setrlimit); it allocates nothing.
        // No PR_SET_PDEATHSIG: it fires when the forking *thread* exits (tokio's blocking
        // threads come and go). If the server dies, the bootstrap reads EOF on fd 3 and exits.
        unsafe {
            cmd.pre_exec(move || {
                sys::new_session()?;
                sys::dup_onto(fd3, 3)?;
                sys::dup_onto(fd4, 4)?;
                for &(r, value) in &limits {
                    sys::set_rlimit(r.resource(), value)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(at(Step::Exec, "spawn the runtime"))?;
        drop((ctl_in_r, ctl_out_w));
        Ok(Spawned { control_in: ctl_in_w, control_out: ctl_out_r, logs: log_r, handle: Box::new(ProcessInstance { child, reaped: None }) })
    }
}

struct ProcessInstance {
    child: Child,
    reaped: Option<ExitInfo>,
}

impl InstanceHandle for ProcessInstance {
    fn try_exited(&mut self) -> bool {
        self.reaped.is_some() || matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn kill(&mut self) {
        if self.reaped.is_none() {
            sys::kill_group(self.child.id());
        }
    }

    fn wait(&mut self) -> ExitInfo {
        if let Some(info) = self.reaped {
            return info;
        }
        let info = match self.child.wait() {
            Ok(st) => ExitInfo { code: st.code(), signal: st.signal() },
            Err(err) => {
                tracing::warn!(%err, pid = self.child.id(), "waitpid failed");
                ExitInfo::default()
            }
        };
        // The group may outlive its leader (children); end them too.
        sys::kill_group(self.child.id());
        self.reaped = Some(info);
        info
    }

    fn out_of_memory(&self) -> bool {
        // rlimits give no OOM signal; the runtime reports MemoryError / heap exhaustion itself.
        false
    }

    fn has_stray_processes(&self) -> bool {
        self.reaped.is_none() && sys::has_descendants(self.child.id())
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill();
            self.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceLimits;

    /// Regression (egress port): the process tier ignored `InstanceSpec.network`, so a function
    /// with an egress list ran with the host's network, unfiltered.
    #[test]
    fn a_function_with_egress_does_not_start_in_the_process_tier() {
        let plan = crate::network::NetworkPlan { function: "f1".into(), policy: Default::default(), on_event: None };
        let spec = InstanceSpec {
            argv: vec!["/bin/true".into()],
            env: vec![],
            code_dir: std::env::temp_dir(),
            runtime_paths: vec![],
            bootstrap_dir: std::env::temp_dir(),
            limits: ResourceLimits::default(),
            network: Some(std::sync::Arc::new(plan)),
            job: None,
        };
        let sandbox = ProcessSandbox::new(true).expect("insecure process tier");
        match sandbox.spawn(&spec) {
            Ok(_) => panic!("an instance with a network started in the process tier"),
            Err(SandboxError::Setup(e)) => assert_eq!(e.step, Step::PrepareNetwork, "{e}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
        assert!(sandbox.egress_support().is_err(), "/health says the tier has no egress");
    }
}
