//! `functions create|deploy|list|get|update|delete|build` (versions: [`super::versions`]).

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::args::{runtime_for, FunctionFlags, FunctionsCommand};
use crate::client::{seg, Api};
use crate::error::{CliError, Result};
use crate::output::{age, bytes, duration, fields, now_unix, table, timestamp, Cell, Spinner, Style};
use crate::package;

/// Runs one `functions` subcommand.
pub fn run(ctx: &Ctx, cmd: FunctionsCommand) -> Result<()> {
    match cmd {
        FunctionsCommand::Create { name, flags } => create(ctx, &name, &flags),
        FunctionsCommand::Deploy { name, flags } => deploy(ctx, &name, &flags),
        FunctionsCommand::List => list(ctx),
        FunctionsCommand::Get { name, code } => get(ctx, &name, code),
        FunctionsCommand::Update { name, rename, flags } => update(ctx, &name, rename, &flags),
        FunctionsCommand::Delete { name } => delete(ctx, &name),
        FunctionsCommand::Build { name, follow } => build(ctx, &name, follow),
        FunctionsCommand::Versions { name } => super::versions::list(ctx, &name),
        FunctionsCommand::Version { name, version, code } => super::versions::get(ctx, &name, version, code),
        FunctionsCommand::DeleteVersion { name, version } => super::versions::delete(ctx, &name, version),
    }
}

fn path(name: &str) -> String {
    format!("/api/functions/{}", seg(name))
}

fn not_found(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("function {name:?} not found; see `voltrun functions list`")
}

/// The request body for the given flags. `infer_runtime` fills the runtime from the file's
/// extension (or the directory's files) when it is not given. `--dir` is zipped here.
pub fn body_of(flags: &FunctionFlags, infer_runtime: bool) -> Result<Map<String, Value>> {
    let mut b = Map::new();
    if let Some(file) = &flags.file {
        let bytes = std::fs::read(file).map_err(|e| CliError::io(format!("reading {}", file.display()), e))?;
        let code = String::from_utf8(bytes).map_err(|_| CliError::usage(format!("{} is not UTF-8 text", file.display())))?;
        b.insert("code".into(), code.into());
    }
    if let Some(dir) = &flags.dir {
        let z = package::zip_dir(dir)?;
        b.insert("zip".into(), package::base64(&z.bytes).into());
    }
    let runtime = match (&flags.runtime, &flags.file, &flags.dir) {
        (Some(r), _, _) => Some(r.clone()),
        (None, Some(f), _) if infer_runtime => runtime_for(f).map(str::to_string),
        (None, _, Some(d)) if infer_runtime => package::runtime_of_dir(d).map(str::to_string),
        _ => None,
    };
    if let Some(r) = runtime {
        b.insert("runtime".into(), r.into());
    }
    if let Some(h) = &flags.handler {
        b.insert("handler".into(), h.clone().into());
    }
    if let Some(m) = flags.memory {
        b.insert("memory".into(), m.into());
    }
    if let Some(t) = flags.timeout {
        b.insert("timeout".into(), t.into());
    }
    if let Some(r) = &flags.route {
        b.insert("route".into(), r.clone().into());
    } else if flags.no_route {
        b.insert("route".into(), Value::Null);
    }
    if let Some(p) = flags.public {
        b.insert("public".into(), p.into());
    }
    if !flags.env.is_empty() {
        let env: Map<String, Value> = flags.env.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        b.insert("env".into(), env.into());
    } else if flags.clear_env {
        b.insert("env".into(), json!({}));
    }
    if let Some(c) = &flags.schedule {
        b.insert("schedule".into(), c.clone().into());
    } else if flags.no_schedule {
        b.insert("schedule".into(), Value::Null);
    }
    if let Some(q) = &flags.schedule_qualifier {
        b.insert("schedule_qualifier".into(), q.clone().into());
    } else if flags.no_schedule_qualifier {
        b.insert("schedule_qualifier".into(), Value::Null);
    }
    if let Some(n) = flags.max_retries {
        b.insert("max_retries".into(), n.into());
    }
    if !flags.egress.is_empty() {
        b.insert("egress".into(), flags.egress.clone().into());
    } else if flags.no_egress {
        b.insert("egress".into(), json!([]));
    }
    if !flags.secrets.is_empty() {
        b.insert("secrets".into(), flags.secrets.clone().into());
    } else if flags.no_secrets {
        b.insert("secrets".into(), json!([]));
    }
    if !flags.layers.is_empty() {
        for l in &flags.layers {
            crate::args::parse_layer_ref(l)?;
        }
        b.insert("layers".into(), flags.layers.clone().into());
    } else if flags.no_layers {
        b.insert("layers".into(), json!([]));
    }
    if let Some(d) = &flags.description {
        b.insert("description".into(), d.clone().into());
    }
    Ok(b)
}

fn create_body(name: &str, flags: &FunctionFlags) -> Result<Map<String, Value>> {
    if flags.file.is_none() && flags.dir.is_none() {
        return Err(CliError::usage("--file or --dir is required: the handler's source file, or the package's directory"));
    }
    let mut b = body_of(flags, true)?;
    if !b.contains_key("runtime") {
        let what = if flags.dir.is_some() { "the directory's files (requirements.txt or main.py, package.json or index.js)" } else { "the file's extension" };
        return Err(CliError::usage(format!("--runtime is required (python3.11 or nodejs20): it cannot be told from {what}")));
    }
    b.insert("name".into(), name.into());
    Ok(b)
}

fn route_line(ctx: &Ctx, api: &Api, f: &Value) {
    if let Some(r) = f["route"].as_str() {
        let access = if f["public"] == true { "public" } else { "needs credentials" };
        ctx.out.note(&format!("HTTP trigger: {}/api/execute/{r} ({access})", api.server()));
    }
}

fn report_created(ctx: &Ctx, api: &Api, name: &str, f: &Value) {
    if ctx.out.json {
        ctx.out.print_json(f);
    } else {
        println!("Created function {} ({}, version {}).", ctx.out.paint(name, Style::Bold), f["runtime"].as_str().unwrap_or("?"), f["version"]);
        route_line(ctx, api, f);
    }
}

fn create(ctx: &Ctx, name: &str, flags: &FunctionFlags) -> Result<()> {
    let body = create_body(name, flags)?;
    let mut api = ctx.api()?;
    let f = api.post("/api/functions", &Value::Object(body))?;
    let f = settle(ctx, &mut api, name, f, flags.no_wait)?;
    report_created(ctx, &api, name, &f);
    Ok(())
}

fn deploy(ctx: &Ctx, name: &str, flags: &FunctionFlags) -> Result<()> {
    if flags.file.is_none() && flags.dir.is_none() {
        return Err(CliError::usage("--file or --dir is required: the handler's source file, or the package's directory"));
    }
    let mut api = ctx.api()?;
    let existing = match api.get(&path(name), &[]) {
        Ok(f) => Some(f),
        Err(CliError::Api { status: 404, .. }) => None,
        Err(e) => return Err(e),
    };
    let Some(old) = existing else {
        let body = create_body(name, flags)?;
        let f = api.post("/api/functions", &Value::Object(body))?;
        let f = settle(ctx, &mut api, name, f, flags.no_wait)?;
        report_created(ctx, &api, name, &f);
        return Ok(());
    };
    // Address it by id from here on, so a function called `test` works too.
    let id = old["id"].as_str().unwrap_or(name).to_string();
    let body = body_of(flags, true)?;
    let f = api.put(&path(&id), &Value::Object(body)).map_err(|e| e.not_found_as(not_found(name)))?;
    let f = settle(ctx, &mut api, name, f, flags.no_wait)?;
    report_update(ctx, &api, name, &old, &f);
    Ok(())
}

/// True when the function's answer says a dependency build is under way: its first
/// (`state: pending`) or an update's (`last_update_status: in_progress`).
pub fn building(f: &Value) -> bool {
    f["state"] == "pending" || f["last_update_status"] == "in_progress"
}

/// Follows the build the answer `f` says is running (unless `no_wait`), then returns the
/// function as it is after it; a failed build prints its log and is [`CliError::BuildFailed`].
fn settle(ctx: &Ctx, api: &mut Api, name: &str, f: Value, no_wait: bool) -> Result<Value> {
    if !building(&f) {
        return Ok(f);
    }
    let id = f["id"].as_str().unwrap_or(name).to_string();
    if no_wait {
        ctx.out.note(&format!("Building dependencies; follow with: voltrun functions build {name} --follow"));
        return Ok(f);
    }
    let build = follow_build(ctx, api, &id, name)?;
    let reason = || build["reason"].as_str().unwrap_or("no reason given").to_string();
    if build["status"] != "success" {
        return Err(CliError::BuildFailed { reason: reason() });
    }
    api.get(&path(&id), &[]).map_err(|e| e.not_found_as(not_found(name)))
}

/// How many times a broken build stream is reopened before the build is polled instead.
const STREAM_TRIES: u32 = 3;
/// Polls of a build after its stream broke, one a second (longer than the longest build).
const BUILD_POLLS: u32 = 20 * 60;

/// Follows `GET /api/functions/{id}/build?follow=true` to its end: a spinner on a terminal,
/// plain lines otherwise; on failure the build's log goes to stderr. Returns the build.
pub fn follow_build(ctx: &Ctx, api: &mut Api, id: &str, name: &str) -> Result<Value> {
    let build_path = format!("{}/build", path(id));
    let plain = !ctx.out.stderr_tty || ctx.out.json;
    if plain && !ctx.out.json {
        eprintln!("Building dependencies of {name}…");
    }
    let started = std::time::Instant::now();
    let mut log = String::new();
    let mut end: Option<Value> = None;
    {
        let _spinner = (!plain).then(|| Spinner::start(&ctx.out, &format!("Building dependencies of {name}")));
        for _ in 0..STREAM_TRIES {
            log.clear();
            let events = match api.stream(&build_path, &[("follow", "true".to_string())]) {
                Ok(ev) => ev,
                Err(CliError::Api { status: 404, .. }) => break,
                Err(e) => return Err(e),
            };
            for ev in events {
                let Ok(ev) = ev else { break };
                let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                match ev.event.as_str() {
                    "log" => log.push_str(data["text"].as_str().unwrap_or("")),
                    "end" => {
                        end = Some(data);
                        break;
                    }
                    _ => {}
                }
            }
            if end.is_some() {
                break;
            }
        }
        if end.is_none() {
            for _ in 0..BUILD_POLLS {
                let b = api.get(&build_path, &[])?;
                if b["status"] != "building" {
                    log = b["logs"].as_str().unwrap_or("").to_string();
                    end = Some(b);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    let Some(build) = end else {
        return Err(CliError::BadResponse { server: api.server().to_string(), detail: "the build did not end while it was followed".into() });
    };
    let took = build["duration_ms"].as_f64().map_or_else(|| format!("{:.1}s", started.elapsed().as_secs_f64()), |ms| duration(&json!(ms)));
    if build["status"] == "success" {
        if !ctx.out.json {
            let cached = if build["cached"] == true { " (from the cache)" } else { "" };
            eprintln!("{} Built dependencies in {took}{cached}.", ctx.out.paint_err("✓", Style::Green));
        }
    } else {
        let text = if log.is_empty() { build["logs"].as_str().unwrap_or("").to_string() } else { log };
        eprintln!("{} The build of {name} failed after {took}. Its log:", ctx.out.paint_err("✗", Style::Red));
        eprint!("{text}");
        if !text.ends_with('\n') {
            eprintln!();
        }
        if build["logs_truncated"] == true {
            eprintln!("(the log was cut at its limit)");
        }
    }
    Ok(build)
}

fn report_update(ctx: &Ctx, api: &Api, name: &str, old: &Value, new: &Value) {
    if ctx.out.json {
        ctx.out.print_json(new);
        return;
    }
    let shown = new["name"].as_str().unwrap_or(name);
    if old["version"] == new["version"] {
        println!("Function {} is unchanged (version {}).", ctx.out.paint(shown, Style::Bold), new["version"]);
    } else {
        println!("Updated function {} to version {}.", ctx.out.paint(shown, Style::Bold), new["version"]);
    }
    route_line(ctx, api, new);
}

fn list(ctx: &Ctx) -> Result<()> {
    let mut api = ctx.api()?;
    let items = api.get_all("/api/functions")?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"items": items, "next_cursor": null}));
        return Ok(());
    }
    if items.is_empty() {
        println!("No functions yet. Deploy one with: voltrun functions deploy NAME --file handler.py");
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|f| {
            let route = match (f["route"].as_str(), f["public"] == true) {
                (Some(r), true) => format!("{r} (public)"),
                (Some(r), false) => r.to_string(),
                (None, _) => "-".into(),
            };
            vec![
                Cell::styled(f["name"].as_str().unwrap_or("?"), Style::Bold),
                f["runtime"].as_str().unwrap_or("?").into(),
                format!("v{}", f["version"]).into(),
                format!("{} MiB", f["memory"]).into(),
                format!("{} s", f["timeout"]).into(),
                // Lists carry the code's size, never the code (`functions get --code`).
                bytes(&f["code_bytes"]).into(),
                route.into(),
                age(&f["updated_at"], now).into(),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "RUNTIME", "VERSION", "MEMORY", "TIMEOUT", "CODE", "ROUTE", "UPDATED"], &rows, ctx.out.color));
    Ok(())
}

fn get(ctx: &Ctx, name: &str, code_only: bool) -> Result<()> {
    let mut api = ctx.api()?;
    let f = api.get(&path(name), &[]).map_err(|e| e.not_found_as(not_found(name)))?;
    let code = f["code"].as_str().unwrap_or("");
    if code_only && !ctx.out.json {
        print!("{code}");
        if !code.ends_with('\n') {
            println!();
        }
        return Ok(());
    }
    if ctx.out.json {
        ctx.out.print_json(&f);
        return Ok(());
    }
    let env = match f["env"].as_object() {
        Some(m) if !m.is_empty() => m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(" "),
        _ => "-".into(),
    };
    let route = match f["route"].as_str() {
        Some(r) => format!("{r}  ({}/api/execute/{r})", api.server()),
        None => "-".into(),
    };
    let schedule = match (f["schedule"].as_str(), f["schedule_qualifier"].as_str()) {
        (Some(c), Some(q)) => format!("{c} (UTC), runs {q}"),
        (Some(c), None) => format!("{c} (UTC)"),
        (None, _) => "-".to_string(),
    };
    let lines = code.lines().count();
    let text = |k: &str| f[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    print!(
        "{}",
        fields(
            &[
                ("name", text("name")),
                ("id", text("id")),
                ("description", text("description")),
                ("runtime", text("runtime")),
                ("handler", text("handler")),
                ("memory", format!("{} MiB", f["memory"])),
                ("timeout", format!("{} s", f["timeout"])),
                ("version", f["version"].to_string()),
                ("route", route),
                ("public", f["public"].to_string()),
                ("env", env),
                ("schedule", schedule),
                ("max retries", f["max_retries"].as_u64().map_or("-".to_string(), |n| n.to_string())),
                ("egress", egress_text(&f["egress"])),
                ("secrets", names_text(&f["secrets"])),
                ("code", format!("{lines} line{} (--code prints it)", if lines == 1 { "" } else { "s" })),
                ("created", timestamp(&f["created_at"])),
                ("updated", format!("{} ({})", timestamp(&f["updated_at"]), age(&f["updated_at"], now_unix()))),
            ],
            ctx.out.color
        )
    );
    Ok(())
}

/// A list of names (secrets, aliases) as one line, or `-` when there are none.
pub fn names_text(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string)).collect::<Vec<_>>().join(" "),
        _ => "-".into(),
    }
}

/// A function's egress list as `functions get` shows it: the entries, or that it has none.
fn egress_text(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(|e| e.as_str().unwrap_or("?")).collect::<Vec<_>>().join(" "),
        _ => "- (no network)".into(),
    }
}

fn update(ctx: &Ctx, name: &str, rename: Option<String>, flags: &FunctionFlags) -> Result<()> {
    let mut body = body_of(flags, false)?;
    if let Some(n) = rename {
        body.insert("name".into(), n.into());
    }
    if body.is_empty() {
        return Err(CliError::usage("nothing to change: give at least one flag, e.g. --file, --dir, --memory, --env, --egress, --secret or --layer"));
    }
    let mut api = ctx.api()?;
    let old = api.get(&path(name), &[]).map_err(|e| e.not_found_as(not_found(name)))?;
    let id = old["id"].as_str().unwrap_or(name).to_string();
    let f = api.put(&path(&id), &Value::Object(body)).map_err(|e| e.not_found_as(not_found(name)))?;
    let f = settle(ctx, &mut api, name, f, flags.no_wait)?;
    report_update(ctx, &api, name, &old, &f);
    Ok(())
}

fn build(ctx: &Ctx, name: &str, follow: bool) -> Result<()> {
    let mut api = ctx.api()?;
    let f = api.get(&path(name), &[]).map_err(|e| e.not_found_as(not_found(name)))?;
    let id = f["id"].as_str().unwrap_or(name).to_string();
    let no_build = || format!("function {name:?} has had no build (only packages with requirements.txt or package.json dependencies build)");
    let b = api.get(&format!("{}/build", path(&id)), &[]).map_err(|e| e.not_found_as(no_build))?;
    let b = if follow && b["status"] == "building" { follow_build(ctx, &mut api, &id, name)? } else { b };
    if ctx.out.json {
        ctx.out.print_json(&b);
    } else if !(follow && b["status"] == "failed") {
        let text = |k: &str| b[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
        print!(
            "{}",
            fields(
                &[
                    ("build", text("id")),
                    ("status", text("status")),
                    ("reason", text("reason")),
                    ("version", b["function_version"].to_string()),
                    ("cached", b["cached"].to_string()),
                    ("started", timestamp(&b["started_at"])),
                    ("took", duration(&b["duration_ms"])),
                ],
                ctx.out.color
            )
        );
        let logs = b["logs"].as_str().unwrap_or("");
        if !logs.is_empty() {
            println!();
            print!("{logs}");
            if !logs.ends_with('\n') {
                println!();
            }
        }
    }
    if b["status"] == "failed" {
        return Err(CliError::BuildFailed { reason: b["reason"].as_str().unwrap_or("no reason given").to_string() });
    }
    Ok(())
}

fn delete(ctx: &Ctx, name: &str) -> Result<()> {
    let mut api = ctx.api()?;
    api.delete(&path(name)).map_err(|e| e.not_found_as(not_found(name)))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"deleted": name}));
    } else {
        println!("Deleted function {}.", ctx.out.paint(name, Style::Bold));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_body_has_only_what_was_given() {
        let flags = FunctionFlags { memory: Some(256), no_route: true, public: Some(false), no_schedule: true, ..Default::default() };
        let b = body_of(&flags, false).unwrap();
        assert_eq!(Value::Object(b), json!({"memory": 256, "route": null, "public": false, "schedule": null}));
        let flags = FunctionFlags { clear_env: true, ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"env": {}}));
        let flags = FunctionFlags { egress: vec!["198.18.0.0/24".into(), "api.example.com:443".into()], ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"egress": ["198.18.0.0/24", "api.example.com:443"]}));
        let flags = FunctionFlags { no_egress: true, ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"egress": []}));
        let flags = FunctionFlags { secrets: vec!["API_TOKEN".into(), "DB_URL".into()], ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"secrets": ["API_TOKEN", "DB_URL"]}));
        let flags = FunctionFlags { schedule_qualifier: Some("live".into()), ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"schedule_qualifier": "live"}));
        let flags = FunctionFlags { no_schedule_qualifier: true, ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"schedule_qualifier": null}));
        let flags = FunctionFlags { no_secrets: true, ..Default::default() };
        assert_eq!(Value::Object(body_of(&flags, false).unwrap()), json!({"secrets": []}));
        assert_eq!(names_text(&json!([])), "-");
        assert_eq!(names_text(&json!(["A", "B"])), "A B");
        assert_eq!(egress_text(&json!([])), "- (no network)");
        assert_eq!(egress_text(&json!(["public", "x.test:80"])), "public x.test:80");
    }

    #[test]
    fn create_body_needs_a_file_and_infers_the_runtime() {
        let dir = std::env::temp_dir().join(format!("voltrun-cli-fn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let py = dir.join("h.py");
        std::fs::write(&py, "def handler(e, c):\n    return 1\n").unwrap();
        let flags = FunctionFlags { file: Some(py.clone()), env: vec![("A".into(), "1".into())], ..Default::default() };
        let b = Value::Object(create_body("hi", &flags).unwrap());
        assert_eq!(b["runtime"], "python3.11");
        assert_eq!(b["name"], "hi");
        assert_eq!(b["env"], json!({"A": "1"}));
        assert!(b["code"].as_str().unwrap().starts_with("def handler"));

        let txt = dir.join("h.txt");
        std::fs::write(&txt, "x").unwrap();
        let e = create_body("hi", &FunctionFlags { file: Some(txt), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("--runtime is required"), "{e}");
        assert!(create_body("hi", &FunctionFlags::default()).unwrap_err().to_string().contains("--file or --dir is required"));
        let e = create_body("hi", &FunctionFlags { file: Some(dir.join("missing.py")), ..Default::default() }).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
