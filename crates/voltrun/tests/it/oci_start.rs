//! The OCI tiers when the container runtime itself fails: runsc (or runc) refusing to create a
//! sandbox on a loaded host is the tier's failure, not the function's. It failed a CI run as
//! "the runtime process exited with status 1 before returning a result" on a function that
//! had done nothing wrong. Each test runs the suite's tier when it is an OCI one, else runc.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::harness::{sandbox, temp_dir, Server};

/// A runtime wrapper that refuses the first `failures` `run` commands, as runsc does when it
/// cannot create a sandbox, and passes everything else to the real runtime.
fn flaky_runtime(dir: &Path, failures: u32) -> (Vec<String>, PathBuf) {
    let tier = match sandbox().as_str() {
        t @ ("container" | "gvisor") => t.to_string(),
        _ => "container".to_string(),
    };
    let name = if tier == "gvisor" { "runsc" } else { "runc" };
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is needed by this test (scripts/test installs it)"));
    let counter = dir.join("refused");
    let script = dir.join(format!("flaky-{name}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = run ]; then\n    n=$(cat {c} 2>/dev/null || echo 0)\n    if [ \"$n\" -lt {failures} ]; then\n      echo $((n + 1)) > {c}\n      echo 'flaky: cannot create sandbox: simulated failure' >&2\n      exit 1\n    fi\n  fi\ndone\nexec {real} \"$@\"\n",
            c = counter.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = vec!["--sandbox".to_string(), tier, "--runtime-path".to_string(), script.display().to_string(), "--spares".to_string(), "0".to_string()];
    (args, counter)
}

#[test]
fn a_sandbox_the_container_runtime_fails_to_create_is_retried_with_a_new_one() {
    let dir = temp_dir("oci-flaky");
    let tools = temp_dir("oci-flaky-bin");
    let (args, counter) = flaky_runtime(&tools, 1);
    let server = Server::spawn_in(&args, &dir, &[], true);
    let c = server.user();
    c.create_function("calm", "python", "def handler(event, context):\n    return {'ok': event['n']}\n", json!({}));
    let r = c.invoke("calm", &json!({"n": 7}));
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["output"], json!({"ok": 7}), "{r}");
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "1", "the wrapper refused one run");
    let _ = std::fs::remove_dir_all(&tools);
}

#[test]
fn a_container_runtime_that_cannot_create_any_sandbox_is_an_internal_error_not_the_functions_exit() {
    let dir = temp_dir("oci-broken");
    let tools = temp_dir("oci-broken-bin");
    let (args, counter) = flaky_runtime(&tools, 1000);
    let server = Server::spawn_in(&args, &dir, &[], true);
    let c = server.user();
    c.create_function("calm", "python", "def handler(event, context):\n    return 1\n", json!({}));
    // The run is recorded as failed, with an internal error that blames the tier.
    let (status, body) = c.post("/api/functions/calm/execute", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["error"]["type"], "Internal", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("container runtime failed to create it"), "{body}");
    assert!(!message.contains("exited with status"), "{body}");
    // One try and three retries, no more.
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "4", "{body}");
    let _ = std::fs::remove_dir_all(&tools);
}

/// A spare the container runtime failed to create (runc crashed while a CI host was loaded)
/// was handed to the first run, which then went to a new instance instead of the waiting
/// spare. A spare whose process has ended is now retired unseen (since issue 19 it is never
/// shelved: its bootstrap never says it started), and the next one (or a new instance) serves
/// the run.
#[test]
fn a_spare_the_container_runtime_failed_to_create_is_never_handed_out() {
    let dir = temp_dir("oci-spare");
    let tools = temp_dir("oci-spare-bin");
    let (mut args, counter) = flaky_runtime(&tools, 1);
    let at = args.iter().position(|a| a == "--spares").unwrap();
    args[at + 1] = "1".to_string();
    let server = Server::spawn_in(&args, &dir, &[], true);
    let c = server.user();
    // The first spare started (of one runtime or the other) was refused; wait until it is
    // gone from the runtime's view (its guard ended) and the other spare is up.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&counter).unwrap_or_default().trim() != "1" {
        assert!(std::time::Instant::now() < until, "the wrapper refused nothing");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    c.create_function("py", "python", "def handler(event, context):\n    return 'py'\n", json!({}));
    c.create_function("js", "node", "exports.handler = async () => 'js';\n", json!({}));
    for (name, want) in [("py", "py"), ("js", "js")] {
        let r = c.invoke(name, &json!({}));
        assert_eq!((r["status"].as_str(), &r["output"]), (Some("success"), &json!(want)), "{r}");
    }
    let log = std::fs::read_to_string(dir.with_extension("stderr.log")).unwrap_or_default();
    // Noticed before it is shelved (its bootstrap never said it started), or, had it died
    // on the shelf, when it is taken.
    assert!(log.contains("a spare did not say it started") || log.contains("a spare had ended before it was used"), "the dead spare was not noticed:\n{log}");
    assert!(!log.contains("could not create an instance; trying a new one"), "the dead spare was handed to a run:\n{log}");
    let _ = std::fs::remove_dir_all(&tools);
}
