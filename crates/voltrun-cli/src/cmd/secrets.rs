//! `secrets set|list|delete`. A value goes to the server and is never printed: from `--value`,
//! from stdin (all of it, less one final line ending, so `echo v | voltrun secrets set X`
//! stores `v`), or typed at a prompt that does not echo.

use std::io::{Read, Write};

use serde_json::{json, Value};

use super::Ctx;
use crate::args::SecretsCommand;
use crate::client::seg;
use crate::error::{CliError, Result};
use crate::output::{age, now_unix, table, Cell, Style};
use crate::sys::{isatty, EchoOff};

/// Runs one `secrets` subcommand.
pub fn run(ctx: &Ctx, cmd: SecretsCommand) -> Result<()> {
    match cmd {
        SecretsCommand::Set { name, value } => set(ctx, &name, value),
        SecretsCommand::List => list(ctx),
        SecretsCommand::Delete { name } => delete(ctx, &name),
        SecretsCommand::RotateMasterKey(_) => unreachable!("the binary runs rotate-master-key: it needs the database, not the API"),
    }
}

/// The value to store: `--value`, else stdin (a prompt without echo on a terminal).
fn read_value(name: &str, given: Option<String>) -> Result<String> {
    if let Some(v) = given {
        return Ok(v);
    }
    if isatty(0) {
        eprint!("Value of {name} (not echoed): ");
        let _ = std::io::stderr().flush();
        let _echo = EchoOff::stdin().map_err(|e| CliError::io("turning off echo for the value prompt", e))?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| CliError::io("reading the value from the terminal", e))?;
        eprintln!();
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let mut text = String::new();
    std::io::stdin().lock().read_to_string(&mut text).map_err(|e| CliError::io("reading the value from stdin", e))?;
    Ok(strip_one_line_ending(text))
}

/// Drops one final `\n` or `\r\n` (what `echo` and editors add), nothing else.
fn strip_one_line_ending(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn set(ctx: &Ctx, name: &str, value: Option<String>) -> Result<()> {
    let value = read_value(name, value)?;
    let mut api = ctx.api()?;
    // Update first; a 404 means there is none yet.
    let (s, created) = match api.put(&format!("/api/secrets/{}", seg(name)), &json!({"value": value})) {
        Ok(s) => (s, false),
        Err(CliError::Api { status: 404, .. }) => (api.post("/api/secrets", &json!({"name": name, "value": value}))?, true),
        Err(e) => return Err(e),
    };
    if ctx.out.json {
        ctx.out.print_json(&s);
    } else if created {
        println!("Created secret {}.", ctx.out.paint(name, Style::Bold));
    } else {
        println!("Updated secret {}: the next run of every function using it sees the new value.", ctx.out.paint(name, Style::Bold));
    }
    Ok(())
}

fn list(ctx: &Ctx) -> Result<()> {
    let mut api = ctx.api()?;
    let items = api.get_all("/api/secrets")?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"items": items, "next_cursor": Value::Null}));
        return Ok(());
    }
    if items.is_empty() {
        println!("No secrets. Create one with: voltrun secrets set NAME");
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<Cell>> =
        items.iter().map(|s| vec![Cell::styled(s["name"].as_str().unwrap_or("?"), Style::Bold), age(&s["created_at"], now).into(), age(&s["updated_at"], now).into()]).collect();
    print!("{}", table(&["NAME", "CREATED", "UPDATED"], &rows, ctx.out.color));
    Ok(())
}

fn delete(ctx: &Ctx, name: &str) -> Result<()> {
    let mut api = ctx.api()?;
    api.delete(&format!("/api/secrets/{}", seg(name))).map_err(|e| e.not_found_as(|| format!("secret {name:?} not found; see `voltrun secrets list`")))?;
    if ctx.out.json {
        ctx.out.print_json(&json!({"deleted": name}));
    } else {
        println!("Deleted secret {name}.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::strip_one_line_ending;

    #[test]
    fn one_line_ending_is_dropped_and_nothing_else() {
        assert_eq!(strip_one_line_ending("v\n".into()), "v");
        assert_eq!(strip_one_line_ending("v\r\n".into()), "v");
        assert_eq!(strip_one_line_ending("v\n\n".into()), "v\n");
        assert_eq!(strip_one_line_ending("  v  ".into()), "  v  ");
        assert_eq!(strip_one_line_ending("".into()), "");
    }
}
