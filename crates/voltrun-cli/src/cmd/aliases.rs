//! `aliases create|list|get|update|delete` (SPEC §13): names that point at a version of a
//! function, with at most one weighted extra version (a canary) and an optional route.

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::args::{AliasFlags, AliasesCommand};
use crate::client::{seg, Api};
use crate::error::{CliError, Result};
use crate::output::{age, fields, now_unix, table, timestamp, Cell, Style};

/// Runs one `aliases` subcommand.
pub fn run(ctx: &Ctx, cmd: AliasesCommand) -> Result<()> {
    match cmd {
        AliasesCommand::Create { function, alias, flags } => create(ctx, &function, &alias, &flags),
        AliasesCommand::List { function } => list(ctx, &function),
        AliasesCommand::Get { function, alias } => get(ctx, &function, &alias),
        AliasesCommand::Update { function, alias, flags } => update(ctx, &function, &alias, &flags),
        AliasesCommand::Delete { function, alias } => delete(ctx, &function, &alias),
    }
}

fn aliases_path(function: &str) -> String {
    format!("/api/functions/{}/aliases", seg(function))
}

fn alias_path(function: &str, alias: &str) -> String {
    format!("{}/{}", aliases_path(function), seg(alias))
}

/// A 404 reworded: the alias's own message when the function exists, else the function's.
fn not_found<'a>(function: &'a str, alias: Option<&'a str>) -> impl FnOnce(CliError) -> CliError + 'a {
    move |e| match (e, alias) {
        (e @ CliError::Api { status: 404, .. }, Some(a)) if matches!(&e, CliError::Api { code, .. } if code == "alias_not_found") => {
            e.not_found_as(|| format!("function {function:?} has no alias {a:?}; see `voltrun aliases list {function}`"))
        }
        (e, _) => e.not_found_as(|| format!("function {function:?} not found; see `voltrun functions list`")),
    }
}

/// The request body for the given flags (only what was given).
pub fn body_of(flags: &AliasFlags) -> Map<String, Value> {
    let mut b = Map::new();
    if let Some(v) = flags.version {
        b.insert("version".into(), v.into());
    }
    if let Some((v, w)) = flags.weight {
        b.insert("weights".into(), json!({ v.to_string(): w }));
    } else if flags.no_weights {
        b.insert("weights".into(), Value::Null);
    }
    if let Some(r) = &flags.route {
        b.insert("route".into(), r.clone().into());
    } else if flags.no_route {
        b.insert("route".into(), Value::Null);
    }
    if let Some(d) = &flags.description {
        b.insert("description".into(), d.clone().into());
    }
    b
}

/// An alias's target for people: `3`, or `3 (90%) + 5 (10%)` with a canary.
pub fn target_text(a: &Value) -> String {
    let main = a["version"].to_string();
    let Some((extra, w)) = a["weights"].as_object().and_then(|m| m.iter().next()).and_then(|(k, w)| w.as_f64().map(|w| (k.clone(), w))) else {
        return main;
    };
    let pct = |x: f64| {
        let p = x * 100.0;
        if (p - p.round()).abs() < 1e-9 {
            format!("{p:.0}%")
        } else {
            format!("{}%", format!("{p:.2}").trim_end_matches('0'))
        }
    };
    format!("{main} ({}) + {extra} ({})", pct(1.0 - w), pct(w))
}

fn report(ctx: &Ctx, api: &Api, verb: &str, function: &str, a: &Value) {
    if ctx.out.json {
        ctx.out.print_json(a);
        return;
    }
    let name = a["name"].as_str().unwrap_or("?");
    println!("{verb} alias {} → version {}.", ctx.out.paint(&format!("{function}:{name}"), Style::Bold), target_text(a));
    if let Some(r) = a["route"].as_str() {
        ctx.out.note(&format!("HTTP trigger: {}/api/execute/{r}", api.server()));
    }
}

fn create(ctx: &Ctx, function: &str, alias: &str, flags: &AliasFlags) -> Result<()> {
    if flags.version.is_none() {
        return Err(CliError::usage("--version is required: the version the alias points at (see `voltrun functions versions NAME`)"));
    }
    let mut body = body_of(flags);
    body.insert("name".into(), alias.into());
    let mut api = ctx.api()?;
    let a = api.post(&aliases_path(function), &Value::Object(body)).map_err(not_found(function, None))?;
    report(ctx, &api, "Created", function, &a);
    Ok(())
}

fn list(ctx: &Ctx, function: &str) -> Result<()> {
    let mut api = ctx.api()?;
    let page = api.get(&aliases_path(function), &[]).map_err(not_found(function, None))?;
    let items = match page.as_array() {
        Some(items) => items.clone(),
        None => page["items"].as_array().cloned().unwrap_or_default(),
    };
    if ctx.out.json {
        ctx.out.print_json(&json!({"items": items, "next_cursor": null}));
        return Ok(());
    }
    if items.is_empty() {
        println!("No aliases. Create one with: voltrun aliases create {function} live --version N");
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|a| {
            vec![
                Cell::styled(a["name"].as_str().unwrap_or("?"), Style::Bold),
                target_text(a).into(),
                a["route"].as_str().unwrap_or("-").into(),
                a["description"].as_str().filter(|d| !d.is_empty()).unwrap_or("-").into(),
                age(&a["updated_at"], now).into(),
            ]
        })
        .collect();
    print!("{}", table(&["ALIAS", "VERSION", "ROUTE", "DESCRIPTION", "UPDATED"], &rows, ctx.out.color));
    Ok(())
}

fn get(ctx: &Ctx, function: &str, alias: &str) -> Result<()> {
    let mut api = ctx.api()?;
    let a = api.get(&alias_path(function, alias), &[]).map_err(not_found(function, Some(alias)))?;
    if ctx.out.json {
        ctx.out.print_json(&a);
        return Ok(());
    }
    let text = |k: &str| a[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    let route = match a["route"].as_str() {
        Some(r) => format!("{r}  ({}/api/execute/{r})", api.server()),
        None => "-".into(),
    };
    print!(
        "{}",
        fields(
            &[
                ("alias", format!("{function}:{}", text("name"))),
                ("version", target_text(&a)),
                ("route", route),
                ("description", text("description")),
                ("created", timestamp(&a["created_at"])),
                ("updated", format!("{} ({})", timestamp(&a["updated_at"]), age(&a["updated_at"], now_unix()))),
            ],
            ctx.out.color
        )
    );
    Ok(())
}

fn update(ctx: &Ctx, function: &str, alias: &str, flags: &AliasFlags) -> Result<()> {
    let body = body_of(flags);
    if body.is_empty() {
        return Err(CliError::usage("nothing to change: give at least one flag, e.g. --version, --weight, --no-weights, --route or --no-route"));
    }
    let mut api = ctx.api()?;
    let a = api.put(&alias_path(function, alias), &Value::Object(body)).map_err(not_found(function, Some(alias)))?;
    report(ctx, &api, "Updated", function, &a);
    Ok(())
}

fn delete(ctx: &Ctx, function: &str, alias: &str) -> Result<()> {
    let mut api = ctx.api()?;
    api.delete(&alias_path(function, alias)).map_err(not_found(function, Some(alias)))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"deleted": {"function": function, "alias": alias}}));
    } else {
        println!("Deleted alias {}.", ctx.out.paint(&format!("{function}:{alias}"), Style::Bold));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_bodies_have_only_what_was_given() {
        let f = AliasFlags { version: Some(4), ..Default::default() };
        assert_eq!(Value::Object(body_of(&f)), json!({"version": 4}));
        let f = AliasFlags { weight: Some((5, 0.1)), no_route: true, ..Default::default() };
        assert_eq!(Value::Object(body_of(&f)), json!({"weights": {"5": 0.1}, "route": null}));
        let f = AliasFlags { no_weights: true, route: Some("shop".into()), ..Default::default() };
        assert_eq!(Value::Object(body_of(&f)), json!({"weights": null, "route": "shop"}));
    }

    #[test]
    fn targets_read_as_shares() {
        assert_eq!(target_text(&json!({"version": 3, "weights": null})), "3");
        assert_eq!(target_text(&json!({"version": 3, "weights": {}})), "3");
        assert_eq!(target_text(&json!({"version": 3, "weights": {"5": 0.1}})), "3 (90%) + 5 (10%)");
        assert_eq!(target_text(&json!({"version": 3, "weights": {"5": 0.125}})), "3 (87.5%) + 5 (12.5%)");
    }
}
