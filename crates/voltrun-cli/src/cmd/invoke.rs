//! `invoke` and `logs`: running a function, and reading or following a run's logs.

use std::io::Write;

use serde_json::{json, Value};

use super::Ctx;
use crate::args::{data_source, read_event, split_qualifier, InvokeArgs, LogsArgs};
use crate::client::{seg, Api};
use crate::error::{CliError, Result};
use crate::output::{duration, json_text, Out, Spinner, Style};
use crate::sys::isatty;

/// `voltrun invoke`.
pub fn invoke(ctx: &Ctx, a: InvokeArgs) -> Result<()> {
    let source = data_source(a.data.as_deref(), isatty(0));
    let event = read_event(&source, &mut std::io::stdin().lock())?;
    let (name, in_name) = split_qualifier(&a.name)?;
    let qualifier = match (in_name, a.qualifier.as_deref()) {
        (Some(x), Some(y)) if x != y => return Err(CliError::usage(format!("{:?} names qualifier {x:?} but --qualifier says {y:?}: give one", a.name))),
        (Some(x), _) => Some(x),
        (None, y) => y,
    };
    if qualifier == Some("") {
        return Err(CliError::usage("--qualifier is empty: give a version number, latest or an alias"));
    }
    let mut api = ctx.api()?;
    let target = match qualifier {
        Some(q) => format!("{name}:{q}"),
        None => name.to_string(),
    };
    // A 404 names what was missing: the version or alias when the server says so.
    let not_found = |e: CliError| {
        let what = match &e {
            CliError::Api { status: 404, code, .. } if code == "alias_not_found" => Some("alias"),
            CliError::Api { status: 404, code, .. } if code == "version_not_found" => Some("version"),
            _ => None,
        };
        match what {
            Some(what) => e.not_found_as(|| {
                format!("{target:?}: function {name:?} has no {what} {:?}; see `voltrun functions versions {name}` and `voltrun aliases list {name}`", qualifier.unwrap_or(""))
            }),
            None => e.not_found_as(|| format!("function {name:?} not found; see `voltrun functions list`")),
        }
    };

    if a.is_async {
        let pending = api.execute(name, qualifier, event.as_bytes(), true).map_err(not_found)?;
        let id = pending["id"].as_str().unwrap_or_default().to_string();
        if !a.logs {
            if ctx.out.json {
                ctx.out.print_json(&pending);
            } else {
                println!("{id}");
                if ctx.out.stderr_tty {
                    ctx.out.note(&format!("Queued. Follow it with: voltrun logs {id} --follow"));
                }
            }
            return Ok(());
        }
        // --async --logs: stream the logs to stderr while it runs, then report as a sync call.
        follow(&ctx.out, &mut api, &id, &mut std::io::stderr(), false)?;
        let record = api.get(&format!("/api/executions/{}", seg(&id)), &[])?;
        return finish(ctx, &record, false);
    }

    let spinner = Spinner::start(&ctx.out, &format!("Running {target}"));
    let record = api.execute(name, qualifier, event.as_bytes(), false).map_err(not_found);
    drop(spinner);
    finish(ctx, &record?, a.logs)
}

/// Prints a finished run: its logs on stderr if asked, then its output (or the record with
/// `--json`); a failed run becomes [`CliError::RunFailed`] (exit code 1).
fn finish(ctx: &Ctx, record: &Value, print_logs: bool) -> Result<()> {
    if print_logs {
        let logs = record["logs"].as_str().unwrap_or("");
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(logs.as_bytes());
        if !logs.is_empty() && !logs.ends_with('\n') {
            let _ = writeln!(err);
        }
        if record["logs_truncated"] == true {
            let _ = writeln!(err, "{}", ctx.out.paint_err("[logs truncated at 256 KiB]", Style::Dim));
        }
    }
    let failed = record["status"] == "failed";
    if ctx.out.json {
        ctx.out.print_json(record);
    } else if !failed {
        println!("{}", json_text(&record["output"], ctx.out.stdout_tty));
    }
    if ctx.out.stderr_tty && !ctx.out.json {
        let status = record["status"].as_str().unwrap_or("?");
        let via = record["qualifier"].as_str().map(|q| format!(" via {q}")).unwrap_or_default();
        let meta = format!("{} · {} · v{}{via} · {}", record["id"].as_str().unwrap_or("?"), status, record["function_version"], duration(&record["duration_ms"]));
        ctx.out.note(&meta);
    }
    if failed {
        let e = &record["error"];
        return Err(CliError::RunFailed {
            kind: e["type"].as_str().unwrap_or("Error").to_string(),
            message: e["message"].as_str().unwrap_or("the run failed").to_string(),
            stack: e["stack"].as_str().filter(|s| !s.trim().is_empty()).map(str::to_string),
        });
    }
    Ok(())
}

/// `voltrun logs`.
pub fn logs(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let mut api = ctx.api()?;
    if a.follow {
        let mut stdout = std::io::stdout();
        return follow(&ctx.out, &mut api, &a.id, &mut stdout, ctx.out.json);
    }
    let v =
        api.get(&format!("/api/executions/{}/logs", seg(&a.id)), &[]).map_err(|e| e.not_found_as(|| format!("execution {:?} not found; see `voltrun executions list`", a.id)))?;
    if ctx.out.json {
        ctx.out.print_json(&v);
        return Ok(());
    }
    let text = v["logs"].as_str().unwrap_or("");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    if !text.is_empty() && !text.ends_with('\n') && ctx.out.stdout_tty {
        let _ = writeln!(stdout);
    }
    let _ = stdout.flush();
    if v["truncated"] == true {
        ctx.out.note("[logs truncated at 256 KiB]");
    } else if text.is_empty() && ctx.out.stderr_tty {
        ctx.out.note("(no logs)");
    }
    Ok(())
}

/// Streams a run's logs to `w` as they arrive, until the run ends. With `json`, writes each
/// event as one JSON line (`{"event": "log", "data": {"text": …}}`).
fn follow(out: &Out, api: &mut Api, id: &str, w: &mut dyn Write, json: bool) -> Result<()> {
    let stream = api
        .stream(&format!("/api/executions/{}/logs", seg(id)), &[("follow", "true".to_string())])
        .map_err(|e| e.not_found_as(|| format!("execution {id:?} not found; see `voltrun executions list`")))?;
    let server = api.server().to_string();
    let broken = |detail: String| CliError::Unreachable { server: server.clone(), detail };
    let mut ends_with_newline = true;
    for ev in stream {
        let ev = ev.map_err(|e| broken(format!("the log stream broke ({e})")))?;
        let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data.clone()));
        if json {
            let _ = writeln!(w, "{}", json!({"event": ev.event, "data": data}));
            let _ = w.flush();
            if ev.event == "end" {
                return Ok(());
            }
            continue;
        }
        match ev.event.as_str() {
            "log" => {
                let text = data["text"].as_str().unwrap_or("");
                let _ = w.write_all(text.as_bytes());
                let _ = w.flush();
                if !text.is_empty() {
                    ends_with_newline = text.ends_with('\n');
                }
            }
            "lagged" => {
                out.note(&format!("[{} log chunks were dropped from the stream; `voltrun logs {id}` shows them all once the run ends]", data["missed_chunks"]));
            }
            "end" => {
                if !ends_with_newline && out.stdout_tty {
                    let _ = writeln!(w);
                }
                if data["logs_truncated"] == true {
                    out.note("[logs truncated at 256 KiB]");
                }
                if out.stderr_tty {
                    let status = data["status"].as_str().unwrap_or("?");
                    let shown = out.paint_err(status, crate::output::status_style(status));
                    eprintln!("{} {shown}", out.paint_err("run ended:", Style::Dim));
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Err(broken("the log stream ended before the run did".into()))
}
