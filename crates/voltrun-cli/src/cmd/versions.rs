//! `functions versions|version|delete-version` (SPEC §13): a function's immutable versions.

use serde_json::{json, Value};

use super::Ctx;
use crate::client::seg;
use crate::error::{CliError, Result};
use crate::output::{age, fields, now_unix, table, timestamp, Cell, Style};

fn fn_path(name: &str) -> String {
    format!("/api/functions/{}", seg(name))
}

fn version_path(name: &str, version: u64) -> String {
    format!("{}/versions/{version}", fn_path(name))
}

fn fn_not_found(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("function {name:?} not found; see `voltrun functions list`")
}

/// A 404 on a version path: the function's own message when the function is missing, else
/// that version's.
fn version_not_found(name: &str, version: u64) -> impl FnOnce(CliError) -> CliError + '_ {
    move |e| match e {
        CliError::Api { status: 404, ref code, .. } if code == "version_not_found" => {
            e.not_found_as(|| format!("function {name:?} has no version {version}; see `voltrun functions versions {name}`"))
        }
        e => e.not_found_as(fn_not_found(name)),
    }
}

/// The first 12 characters of a sha256, or `-`.
fn short_sha(v: &Value) -> String {
    v.as_str().map_or("-".to_string(), |s| s.chars().take(12).collect())
}

/// `functions versions NAME`.
pub fn list(ctx: &Ctx, name: &str) -> Result<()> {
    let mut api = ctx.api()?;
    let items = api.get_all(&format!("{}/versions", fn_path(name))).map_err(|e| e.not_found_as(fn_not_found(name)))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"items": items, "next_cursor": null}));
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|v| {
            let code = match (v["package_sha256"].as_str(), v["code_sha256"].as_str()) {
                (Some(p), _) => format!("package {}", short_sha(&json!(p))),
                (None, Some(c)) => short_sha(&json!(c)),
                (None, None) => "-".into(),
            };
            vec![
                Cell::styled(v["version"].to_string(), Style::Bold),
                v["runtime"].as_str().unwrap_or("?").into(),
                v["state"].as_str().unwrap_or("-").into(),
                format!("{} MiB", v["memory"]).into(),
                code.into(),
                super::functions::names_text(&v["aliases"]).into(),
                v["description"].as_str().filter(|d| !d.is_empty()).unwrap_or("-").into(),
                age(&v["created_at"], now).into(),
            ]
        })
        .collect();
    print!("{}", table(&["VERSION", "RUNTIME", "STATE", "MEMORY", "CODE", "ALIASES", "DESCRIPTION", "CREATED"], &rows, ctx.out.color));
    Ok(())
}

/// `functions version NAME N [--code]`.
pub fn get(ctx: &Ctx, name: &str, version: u64, code_only: bool) -> Result<()> {
    let mut api = ctx.api()?;
    let v = api.get(&version_path(name, version), &[]).map_err(version_not_found(name, version))?;
    if ctx.out.json {
        ctx.out.print_json(&v);
        return Ok(());
    }
    let code = v["code"].as_str();
    if code_only {
        let Some(code) = code else {
            return Err(CliError::usage(format!("version {version} of {name:?} is a package: it has no single-file code")));
        };
        print!("{code}");
        if !code.ends_with('\n') {
            println!();
        }
        return Ok(());
    }
    let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    let env = match v["env"].as_object() {
        Some(m) if !m.is_empty() => m.keys().cloned().collect::<Vec<_>>().join(" "),
        _ => "-".into(),
    };
    let code_line = match (code, v["package_sha256"].as_str()) {
        (Some(c), _) => {
            let lines = c.lines().count();
            format!("{lines} line{} (--code prints it), sha256 {}", if lines == 1 { "" } else { "s" }, text("code_sha256"))
        }
        (None, Some(p)) => format!("package, sha256 {p}"),
        (None, None) => "-".into(),
    };
    print!(
        "{}",
        fields(
            &[
                ("function", format!("{name} (version {})", v["version"])),
                ("state", text("state")),
                ("description", text("description")),
                ("runtime", text("runtime")),
                ("handler", text("handler")),
                ("memory", format!("{} MiB", v["memory"])),
                ("timeout", format!("{} s", v["timeout"])),
                // Names only: values of a version's env are in --json.
                ("env", env),
                ("secrets", super::functions::names_text(&v["secrets"])),
                ("egress", super::functions::names_text(&v["egress"])),
                ("layers", super::functions::names_text(&v["layers"])),
                ("aliases", super::functions::names_text(&v["aliases"])),
                ("code", code_line),
                ("created", timestamp(&v["created_at"])),
            ],
            ctx.out.color
        )
    );
    Ok(())
}

/// `functions delete-version NAME N`.
pub fn delete(ctx: &Ctx, name: &str, version: u64) -> Result<()> {
    let mut api = ctx.api()?;
    api.delete(&version_path(name, version)).map_err(version_not_found(name, version))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"deleted": {"function": name, "version": version}}));
    } else {
        println!("Deleted version {version} of {}.", ctx.out.paint(name, Style::Bold));
    }
    Ok(())
}
