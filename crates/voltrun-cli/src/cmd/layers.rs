//! `layers publish|list|versions|get|delete`.

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::args::{parse_layer_ref, LayersCommand};
use crate::client::seg;
use crate::error::{CliError, Result};
use crate::output::{age, bytes, fields, now_unix, table, timestamp, Cell, Style};
use crate::package;

/// Runs one `layers` subcommand.
pub fn run(ctx: &Ctx, cmd: LayersCommand) -> Result<()> {
    match cmd {
        LayersCommand::Publish { name, dir, zip, description } => publish(ctx, &name, dir.as_deref(), zip.as_deref(), description),
        LayersCommand::List => list(ctx),
        LayersCommand::Versions { name } => versions(ctx, &name),
        LayersCommand::Get { reference } => get(ctx, &reference),
        LayersCommand::Delete { reference } => delete(ctx, &reference),
    }
}

fn version_path(name: &str, version: u64) -> String {
    format!("/api/layers/{}/versions/{version}", seg(name))
}

fn publish(ctx: &Ctx, name: &str, dir: Option<&std::path::Path>, zip: Option<&std::path::Path>, description: Option<String>) -> Result<()> {
    let bytes = match (dir, zip) {
        (Some(d), _) => package::zip_dir(d)?.bytes,
        (None, Some(z)) => package::read_zip(z)?,
        (None, None) => return Err(CliError::usage("--dir or --zip is required")),
    };
    let mut body = Map::new();
    body.insert("name".into(), name.into());
    body.insert("zip".into(), package::base64(&bytes).into());
    if let Some(d) = description {
        body.insert("description".into(), d.into());
    }
    let mut api = ctx.api()?;
    let l = api.post("/api/layers", &Value::Object(body))?;
    if ctx.out.json {
        ctx.out.print_json(&l);
    } else {
        let reference = format!("{}:{}", l["name"].as_str().unwrap_or(name), l["version"]);
        println!("Published layer {} ({}).", ctx.out.paint(&reference, Style::Bold), bytes_of(&l));
        ctx.out.note(&format!("Use it with: voltrun functions update FUNCTION --layer {reference}"));
    }
    Ok(())
}

fn bytes_of(l: &Value) -> String {
    format!("{} zipped, {} files", bytes(&l["size"]), l["file_count"].as_u64().map_or("?".to_string(), |n| n.to_string()))
}

fn rows(items: &[Value]) -> Vec<Vec<Cell>> {
    let now = now_unix();
    items
        .iter()
        .map(|l| {
            vec![
                Cell::styled(l["name"].as_str().unwrap_or("?"), Style::Bold),
                l["version"].to_string().into(),
                bytes(&l["size"]).into(),
                l["sha256"].as_str().map_or("?".to_string(), |s| s.chars().take(12).collect()).into(),
                l["description"].as_str().filter(|d| !d.is_empty()).unwrap_or("-").into(),
                age(&l["created_at"], now).into(),
            ]
        })
        .collect()
}

const HEADERS: [&str; 6] = ["NAME", "VERSION", "SIZE", "SHA256", "DESCRIPTION", "CREATED"];

fn list(ctx: &Ctx) -> Result<()> {
    let mut api = ctx.api()?;
    let items = api.get_all("/api/layers")?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"items": items, "next_cursor": null}));
        return Ok(());
    }
    if items.is_empty() {
        println!("No layers yet. Publish one with: voltrun layers publish NAME --dir ./layer");
        return Ok(());
    }
    print!("{}", table(&HEADERS, &rows(&items), ctx.out.color));
    Ok(())
}

fn versions(ctx: &Ctx, name: &str) -> Result<()> {
    let mut api = ctx.api()?;
    let v = api.get(&format!("/api/layers/{}/versions", seg(name)), &[]).map_err(|e| e.not_found_as(|| format!("layer {name:?} not found; see `voltrun layers list`")))?;
    if ctx.out.json {
        ctx.out.print_json(&v);
        return Ok(());
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    print!("{}", table(&HEADERS, &rows(&items), ctx.out.color));
    Ok(())
}

fn get(ctx: &Ctx, reference: &str) -> Result<()> {
    let (name, version) = parse_layer_ref(reference)?;
    let mut api = ctx.api()?;
    let l = api.get(&version_path(&name, version), &[]).map_err(|e| e.not_found_as(|| format!("layer {reference:?} not found; see `voltrun layers versions {name}`")))?;
    if ctx.out.json {
        ctx.out.print_json(&l);
        return Ok(());
    }
    let text = |k: &str| l[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    print!(
        "{}",
        fields(
            &[
                ("layer", format!("{}:{}", text("name"), l["version"])),
                ("description", text("description")),
                ("size", bytes(&l["size"])),
                ("unpacked", bytes(&l["unpacked_size"])),
                ("files", l["file_count"].to_string()),
                ("sha256", text("sha256")),
                ("created", timestamp(&l["created_at"])),
            ],
            ctx.out.color
        )
    );
    Ok(())
}

fn delete(ctx: &Ctx, reference: &str) -> Result<()> {
    let (name, version) = parse_layer_ref(reference)?;
    let mut api = ctx.api()?;
    api.delete(&version_path(&name, version)).map_err(|e| e.not_found_as(|| format!("layer {reference:?} not found; see `voltrun layers versions {name}`")))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"deleted": reference}));
    } else {
        println!("Deleted layer {}.", ctx.out.paint(reference, Style::Bold));
    }
    Ok(())
}
