//! `keys create|list|delete`.

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::args::KeysCommand;
use crate::client::seg;
use crate::error::Result;
use crate::output::{age, now_unix, parse_utc, table, Cell, Style};

/// Runs one `keys` subcommand.
pub fn run(ctx: &Ctx, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create { name, expires_in_days } => create(ctx, &name, expires_in_days),
        KeysCommand::List => list(ctx),
        KeysCommand::Delete { id } => delete(ctx, &id),
    }
}

fn create(ctx: &Ctx, name: &str, expires_in_days: Option<u32>) -> Result<()> {
    let mut body = Map::new();
    body.insert("name".into(), name.into());
    if let Some(d) = expires_in_days {
        body.insert("expires_in_days".into(), d.into());
    }
    let mut api = ctx.api()?;
    let k = api.post("/api/keys", &Value::Object(body))?;
    if ctx.out.json {
        ctx.out.print_json(&k);
        return Ok(());
    }
    // The key alone on stdout, so `KEY=$(voltrun keys create ci)` works; the words on stderr.
    let expires = match k["expires_at"].as_str() {
        Some(t) => format!("expires {}", &t[..t.len().min(10)]),
        None => "never expires".into(),
    };
    eprintln!(
        "Created API key {} ({}, {expires}). {}",
        ctx.out.paint_err(name, Style::Bold),
        k["id"].as_str().unwrap_or("?"),
        ctx.out.paint_err("This is the only time it is shown: store it now.", Style::Yellow)
    );
    println!("{}", k["key"].as_str().unwrap_or(""));
    Ok(())
}

fn list(ctx: &Ctx) -> Result<()> {
    let mut api = ctx.api()?;
    let items = api.get_all("/api/keys")?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"items": items, "next_cursor": null}));
        return Ok(());
    }
    if items.is_empty() {
        println!("No API keys. Create one with: voltrun keys create NAME");
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|k| {
            let expires = match k["expires_at"].as_str() {
                None => Cell::from("never"),
                Some(t) if parse_utc(t).is_some_and(|t| t <= now) => Cell::styled("expired", Style::Red),
                Some(t) => Cell::from(&t[..t.len().min(10)]),
            };
            let last_used = if k["last_used_at"].is_null() { "never".to_string() } else { age(&k["last_used_at"], now) };
            vec![
                Cell::styled(k["id"].as_str().unwrap_or("?"), Style::Cyan),
                Cell::styled(k["name"].as_str().unwrap_or("?"), Style::Bold),
                format!("{}…", k["prefix"].as_str().unwrap_or("")).into(),
                age(&k["created_at"], now).into(),
                expires,
                last_used.into(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "NAME", "PREFIX", "CREATED", "EXPIRES", "LAST USED"], &rows, ctx.out.color));
    Ok(())
}

fn delete(ctx: &Ctx, id: &str) -> Result<()> {
    let mut api = ctx.api()?;
    api.delete(&format!("/api/keys/{}", seg(id))).map_err(|e| e.not_found_as(|| format!("API key {id:?} not found; see `voltrun keys list`")))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"deleted": id}));
    } else {
        println!("Deleted API key {id}: it no longer works.");
    }
    Ok(())
}
