//! `executions list|get`.

use serde_json::Value;

use super::Ctx;
use crate::args::ExecutionsCommand;
use crate::client::seg;
use crate::error::Result;
use crate::output::{age, duration, fields, json_text, now_unix, status_style, table, timestamp, Cell, Style};

/// Runs one `executions` subcommand.
pub fn run(ctx: &Ctx, cmd: ExecutionsCommand) -> Result<()> {
    match cmd {
        ExecutionsCommand::List { function, status, trigger, function_version, limit } => list(ctx, function, status, trigger, function_version, limit),
        ExecutionsCommand::Get { id } => get(ctx, &id),
    }
}

fn list(ctx: &Ctx, function: Option<String>, status: Option<String>, trigger: Option<String>, function_version: Option<u64>, limit: u32) -> Result<()> {
    let mut api = ctx.api()?;
    let mut q = vec![("limit", limit.to_string())];
    if let Some(f) = &function {
        q.push(("function_id", f.clone()));
    }
    if let Some(s) = status {
        q.push(("status", s));
    }
    if let Some(t) = trigger {
        q.push(("trigger", t));
    }
    if let Some(v) = function_version {
        q.push(("function_version", v.to_string()));
    }
    let page = api.get("/api/executions", &q)?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    // The API filters by a name or id it does not know with an empty list: say so instead.
    if items.is_empty() {
        if let Some(f) = &function {
            api.get(&format!("/api/functions/{}", seg(f)), &[]).map_err(|e| e.not_found_as(|| format!("function {f:?} not found; see `voltrun functions list`")))?;
        }
    }
    if ctx.out.json {
        ctx.out.print_json(&page);
        return Ok(());
    }
    if items.is_empty() {
        println!("No executions.");
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|e| {
            let status = e["status"].as_str().unwrap_or("?");
            vec![
                Cell::styled(e["id"].as_str().unwrap_or("?"), Style::Cyan),
                e["function_name"].as_str().unwrap_or("?").into(),
                format!("v{}", e["function_version"]).into(),
                e["qualifier"].as_str().unwrap_or("-").into(),
                Cell::styled(status, status_style(status)),
                e["trigger"].as_str().unwrap_or("?").into(),
                duration(&e["duration_ms"]).into(),
                age(&e["created_at"], now).into(),
                e["error"]["type"].as_str().unwrap_or("").into(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "FUNCTION", "VERSION", "QUALIFIER", "STATUS", "TRIGGER", "DURATION", "CREATED", "ERROR"], &rows, ctx.out.color));
    if page["next_cursor"].is_string() && ctx.out.stderr_tty {
        ctx.out.note(&format!("(showing the newest {limit}; --limit shows up to 500)"));
    }
    Ok(())
}

fn get(ctx: &Ctx, id: &str) -> Result<()> {
    let mut api = ctx.api()?;
    let e = api.get(&format!("/api/executions/{}", seg(id)), &[]).map_err(|err| err.not_found_as(|| format!("execution {id:?} not found; see `voltrun executions list`")))?;
    if ctx.out.json {
        ctx.out.print_json(&e);
        return Ok(());
    }
    print!("{}", render(&e, ctx.out.color));
    Ok(())
}

/// An execution record for people: the fields, then input, output or error, then logs.
pub fn render(e: &Value, color: bool) -> String {
    let status = e["status"].as_str().unwrap_or("?");
    let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let mut out = fields(
        &[
            ("id", text("id")),
            ("function", format!("{} (v{})", text("function_name"), e["function_version"])),
            ("qualifier", text("qualifier")),
            ("status", crate::output::paint(status, status_style(status), color)),
            ("trigger", text("trigger")),
            ("created", timestamp(&e["created_at"])),
            ("started", timestamp(&e["started_at"])),
            ("finished", timestamp(&e["finished_at"])),
            ("duration", duration(&e["duration_ms"])),
            ("attempts", e["attempts"].as_u64().map_or("-".to_string(), |n| n.to_string())),
            ("input", json_text(&e["input"], false)),
        ],
        color,
    );
    let section = |title: &str| format!("\n{}\n", crate::output::paint(title, Style::Bold, color));
    if let Some(err) = e["error"].as_object() {
        out.push_str(&section("Error:"));
        let kind = err.get("type").and_then(Value::as_str).unwrap_or("Error");
        let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("{}: {msg}\n", crate::output::paint(kind, Style::Red, color)));
        if let Some(stack) = err.get("stack").and_then(Value::as_str).filter(|s| !s.trim().is_empty()) {
            out.push_str(&crate::output::paint(stack.trim_end(), Style::Dim, color));
            out.push('\n');
        }
    } else if status == "success" {
        out.push_str(&section("Output:"));
        out.push_str(&json_text(&e["output"], true));
        out.push('\n');
    }
    let logs = e["logs"].as_str().unwrap_or("");
    if !logs.is_empty() {
        out.push_str(&section("Logs:"));
        out.push_str(logs);
        if !logs.ends_with('\n') {
            out.push('\n');
        }
        if e["logs_truncated"] == true {
            out.push_str(&crate::output::paint("[logs truncated at 256 KiB]\n", Style::Dim, color));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A detail view golden: a failed run shows its error and logs, not an output.
    #[test]
    fn failed_record_renders_error_and_logs() {
        let e = json!({
            "id": "ex_1", "function_name": "boom", "function_version": 2, "status": "failed", "trigger": "api",
            "input": {"a": 1}, "output": null,
            "error": {"type": "HandlerError", "message": "ValueError: no", "stack": "Traceback...\n"},
            "logs": "before\n", "logs_truncated": false, "duration_ms": 1.5, "attempts": 1,
            "created_at": "2026-11-23T19:39:17.298Z", "started_at": "2026-11-23T19:39:17.300Z", "finished_at": null
        });
        let expected = "\
id:         ex_1
function:   boom (v2)
qualifier:  -
status:     failed
trigger:    api
created:    2026-11-23 19:39:17 UTC
started:    2026-11-23 19:39:17 UTC
finished:   -
duration:   1.50 ms
attempts:   1
input:      {\"a\":1}

Error:
HandlerError: ValueError: no
Traceback...

Logs:
before
";
        assert_eq!(render(&e, false), expected);
    }
}
