//! `login`, `logout`, `whoami`.

use std::io::{BufRead, Write};

use serde_json::{json, Value};

use super::Ctx;
use crate::args::LoginArgs;
use crate::client::{post_anonymous, Api};
use crate::config::{normalize_server, Auth, Config, Session, Source};
use crate::error::{CliError, Result};
use crate::output::{fields, Style};
use crate::sys::{isatty, EchoOff};

/// The server `login` uses when none is given or saved: `voltrun serve`'s default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The first line of stdin, without its line ending.
fn stdin_line(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::io(format!("reading the {what} from stdin"), e))?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(CliError::usage(format!("no {what} on stdin")));
    }
    Ok(line.to_string())
}

/// Asks on the terminal; `secret` turns echo off while typing.
fn prompt(label: &str, secret: bool) -> Result<String> {
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let _echo = if secret { Some(EchoOff::stdin().map_err(|e| CliError::io("turning off echo for the password prompt", e))?) } else { None };
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::io("reading from the terminal", e))?;
    if n == 0 {
        eprintln!();
        return Err(CliError::usage("no input"));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn print_identity(ctx: &Ctx, server: &str, auth: &str, user: &Value, headline: Option<String>) {
    if ctx.out.json {
        ctx.out.print_json(&json!({"server": server, "auth": auth, "user": user}));
        return;
    }
    if let Some(h) = headline {
        println!("{h}");
    }
    let auth_words = match auth {
        "api_key" => "API key",
        "api_key_env" => "API key from VOLTRUN_API_KEY",
        _ => "password (access token, renewed automatically)",
    };
    let name = user["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("-");
    print!(
        "{}",
        fields(
            &[
                ("user", user["email"].as_str().unwrap_or("?").to_string()),
                ("name", name.to_string()),
                ("id", user["id"].as_str().unwrap_or("?").to_string()),
                ("server", server.to_string()),
                ("auth", auth_words.to_string()),
            ],
            ctx.out.color
        )
    );
}

/// `voltrun login`.
pub fn login(ctx: &Ctx, a: LoginArgs) -> Result<()> {
    let mut cfg = ctx.config.load()?;
    let saved_server = cfg.server.as_deref().and_then(|s| normalize_server(s).ok());
    let server = match ctx.global.server.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => normalize_server(s)?,
        None => saved_server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string()),
    };
    let stdin_tty = isatty(0);

    if let Some(key) = a.api_key {
        let key = if key == "-" { stdin_line("API key")? } else { key.trim().to_string() };
        if key.is_empty() {
            return Err(CliError::usage("the API key is empty"));
        }
        let session = Session { server: server.clone(), auth: Auth::ApiKey(key.clone()), source: Source::Env };
        let user = Api::new(session, None).get("/api/auth/me", &[])?;
        let email = user["email"].as_str().map(str::to_string);
        cfg = Config { server: Some(server.clone()), email, token: None, refresh_token: None, api_key: Some(key) };
        ctx.config.save(&cfg)?;
        let headline = format!("Logged in to {server} with an API key.");
        print_identity(ctx, &server, "api_key", &user, Some(ctx.out.paint(&headline, Style::Green)));
        warn_env_key(ctx);
        return Ok(());
    }

    let last_email = cfg.email.clone().filter(|_| saved_server.as_deref() == Some(server.as_str()));
    let email = match a.email {
        Some(e) => e,
        None if stdin_tty && !a.password_stdin => {
            let label = match &last_email {
                Some(e) => format!("Email [{e}]: "),
                None => "Email: ".to_string(),
            };
            match (prompt(&label, false)?, last_email) {
                (typed, Some(last)) if typed.trim().is_empty() => last,
                (typed, _) => typed,
            }
        }
        None => last_email.ok_or_else(|| CliError::usage("--email is required (there is no terminal to ask on)"))?,
    };
    let email = email.trim().to_string();
    if email.is_empty() {
        return Err(CliError::usage("the email is empty"));
    }
    let password = if a.password_stdin {
        stdin_line("password")?
    } else if stdin_tty {
        prompt("Password: ", true)?
    } else {
        return Err(CliError::usage("stdin is not a terminal, so the password cannot be prompted for: pipe it in with --password-stdin, or log in with --api-key"));
    };
    if password.is_empty() {
        return Err(CliError::usage("the password is empty"));
    }
    let v = post_anonymous(&server, "/api/auth/login", &json!({"email": email, "password": password}))?;
    let (Some(token), Some(refresh)) = (v["token"].as_str(), v["refresh_token"].as_str()) else {
        return Err(CliError::BadResponse { server, detail: "the login answer has no token".into() });
    };
    cfg = Config {
        server: Some(server.clone()),
        email: Some(v["user"]["email"].as_str().unwrap_or(&email).to_string()),
        token: Some(token.to_string()),
        refresh_token: Some(refresh.to_string()),
        api_key: None,
    };
    ctx.config.save(&cfg)?;
    let headline = format!("Logged in to {server} as {}.", cfg.email.as_deref().unwrap_or("?"));
    print_identity(ctx, &server, "token", &v["user"], Some(ctx.out.paint(&headline, Style::Green)));
    warn_env_key(ctx);
    Ok(())
}

fn warn_env_key(ctx: &Ctx) {
    if std::env::var("VOLTRUN_API_KEY").is_ok_and(|k| !k.trim().is_empty()) {
        ctx.out.note("note: VOLTRUN_API_KEY is set, and it is used instead of the saved credentials.");
    }
}

/// `voltrun logout`: revokes the saved refresh token's family on the server (best effort: an
/// unreachable server still gets logged out of locally), then drops the saved token or key
/// (keeping the server and email as defaults for the next login).
pub fn logout(ctx: &Ctx) -> Result<()> {
    let mut cfg = ctx.config.load()?;
    let server = cfg.server.clone();
    let was_in = cfg.has_credentials();
    if let (Some(server), Some(rt)) = (&server, &cfg.refresh_token) {
        if let Err(e) = crate::client::post_anonymous(server, "/api/auth/logout", &json!({ "refresh_token": rt })) {
            ctx.out.note(&format!("note: the server did not revoke the session ({e}); it expires on its own."));
        }
    }
    if was_in {
        cfg.token = None;
        cfg.refresh_token = None;
        cfg.api_key = None;
        ctx.config.save(&cfg)?;
    }
    if ctx.out.json {
        ctx.out.print_json(&json!({"server": server, "logged_out": was_in}));
    } else if was_in {
        println!("Logged out of {}.", server.as_deref().unwrap_or("the server"));
    } else {
        println!("Not logged in.");
    }
    warn_env_key(ctx);
    Ok(())
}

/// `voltrun whoami`.
pub fn whoami(ctx: &Ctx) -> Result<()> {
    let mut api = ctx.api()?;
    let user = api.get("/api/auth/me", &[])?;
    let auth = match (&api.session().auth, api.session().source) {
        (Auth::ApiKey(_), Source::Env) => "api_key_env",
        (Auth::ApiKey(_), Source::Saved) => "api_key",
        (Auth::Token { .. }, _) => "token",
    };
    print_identity(ctx, api.server(), auth, &user, None);
    Ok(())
}
