//! Saved credentials: `$XDG_CONFIG_HOME/voltrun/config.json` (else
//! `~/.config/voltrun/config.json`), mode 0600 in a 0700 directory, written atomically. The
//! environment (`VOLTRUN_SERVER`, `VOLTRUN_API_KEY`) overrides what is saved.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::sys::FileLock;

/// What `voltrun login` saves.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The email logged in with (used as the default on the next login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The access token (a JWT valid for an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The single-use refresh token that renews `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// An API key, when logged in with `--api-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl Config {
    /// Whether any credentials are saved.
    pub fn has_credentials(&self) -> bool {
        self.token.is_some() || self.api_key.is_some()
    }
}

/// Where the config file lives, from `XDG_CONFIG_HOME` and `HOME` (pure, for tests).
/// An empty or relative `XDG_CONFIG_HOME` is ignored, as the XDG spec says.
pub fn config_path_from(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(x) = xdg_config_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(x.join("voltrun").join("config.json"));
    }
    home.map(PathBuf::from).filter(|p| !p.as_os_str().is_empty()).map(|h| h.join(".config").join("voltrun").join("config.json"))
}

/// The config file of this user.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// The file named by the environment.
    pub fn from_env() -> Result<ConfigFile> {
        config_path_from(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
            .map(|path| ConfigFile { path })
            .ok_or_else(|| CliError::usage("neither XDG_CONFIG_HOME nor HOME is set: cannot find the config file"))
    }

    /// A file at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> ConfigFile {
        ConfigFile { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved config; empty when there is no file yet.
    pub fn load(&self) -> Result<Config> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(CliError::io(format!("reading {}", self.path.display()), e)),
        };
        serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{} is not valid ({e}): fix it, or delete it and run `voltrun login` again", self.path.display())))
    }

    /// Saves `cfg`: writes a 0600 temporary file beside it and renames it over the old one, so
    /// a crash never leaves half a file and the secret is never readable by others.
    pub fn save(&self, cfg: &Config) -> Result<()> {
        let dir = self.dir();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
        let tmp = self.path.with_extension(format!("json.tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            // The umask cannot widen 0600, but an odd one could narrow it below what we need.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            let mut text = serde_json::to_string_pretty(cfg).expect("a config serialises");
            text.push('\n');
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CliError::io(format!("writing {}", self.path.display()), e)
        })
    }

    /// Locks the credentials against another `voltrun` process of this user, so that two
    /// commands never spend the same single-use refresh token (which would revoke the login).
    pub fn lock(&self) -> Result<FileLock> {
        let dir = self.dir();
        let lock_path = dir.join("config.lock");
        let open = || -> std::io::Result<FileLock> {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&lock_path)?;
            FileLock::exclusive(f)
        };
        open().map_err(|e| CliError::io(format!("locking {}", lock_path.display()), e))
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Normalises a server URL: adds `http://` when there is no scheme and drops trailing `/`.
/// Only plain HTTP is spoken by this build.
pub fn normalize_server(url: &str) -> Result<String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(CliError::usage("the server URL is empty"));
    }
    let url = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    if let Some(rest) = url.strip_prefix("https://") {
        return Err(CliError::usage(format!(
            "https://{rest}: this build of the CLI speaks plain HTTP only; use an http:// URL (e.g. through an SSH tunnel or on the server's own network)"
        )));
    }
    if !url.starts_with("http://") {
        return Err(CliError::usage(format!("{url}: the server URL must start with http://")));
    }
    let url = url.trim_end_matches('/').to_string();
    if url.len() <= "http://".len() {
        return Err(CliError::usage("the server URL has no host"));
    }
    Ok(url)
}

/// How requests authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// An access token, renewable with the refresh token.
    Token {
        /// The access token.
        token: String,
        /// The refresh token, if saved.
        refresh_token: Option<String>,
    },
    /// An API key (from `VOLTRUN_API_KEY` or a login with `--api-key`).
    ApiKey(String),
}

/// Where a session's credentials came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The config file: rotated tokens are saved back to it.
    Saved,
    /// `VOLTRUN_API_KEY`.
    Env,
}

/// A server and the credentials to use with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The server's base URL.
    pub server: String,
    /// The credentials.
    pub auth: Auth,
    /// Where they came from.
    pub source: Source,
}

/// Picks the server and credentials: `--server`/`VOLTRUN_SERVER` over the saved server, and
/// `VOLTRUN_API_KEY` over saved credentials. Saved credentials are used only with the server
/// they were saved for, so `--server elsewhere` never sends them to another host.
pub fn resolve(server_flag: Option<&str>, env_key: Option<&str>, cfg: &Config) -> Result<Session> {
    let saved_server = cfg.server.as_deref().map(normalize_server).transpose().ok().flatten();
    let server = match server_flag.filter(|s| !s.trim().is_empty()) {
        Some(s) => normalize_server(s)?,
        None => match &saved_server {
            Some(s) => s.clone(),
            None if env_key.is_some() => return Err(CliError::usage("no server: pass --server URL or set VOLTRUN_SERVER")),
            None => return Err(CliError::NotLoggedIn { server: None }),
        },
    };
    if let Some(key) = env_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok(Session { server, auth: Auth::ApiKey(key.to_string()), source: Source::Env });
    }
    if saved_server.as_deref() != Some(server.as_str()) {
        return Err(CliError::NotLoggedIn { server: Some(server) });
    }
    let auth = match (&cfg.api_key, &cfg.token) {
        (Some(k), _) => Auth::ApiKey(k.clone()),
        (None, Some(t)) => Auth::Token { token: t.clone(), refresh_token: cfg.refresh_token.clone() },
        (None, None) => return Err(CliError::NotLoggedIn { server: Some(server) }),
    };
    Ok(Session { server, auth, source: Source::Saved })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_prefers_an_absolute_xdg_config_home() {
        let p = config_path_from(Some("/x/cfg".into()), Some("/home/ada".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/x/cfg/voltrun/config.json"));
        let p = config_path_from(Some("relative".into()), Some("/home/ada".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/home/ada/.config/voltrun/config.json"));
        let p = config_path_from(Some("".into()), Some("/home/ada".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/home/ada/.config/voltrun/config.json"));
        assert_eq!(config_path_from(None, None), None);
    }

    #[test]
    fn server_urls_are_normalised() {
        assert_eq!(normalize_server("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(normalize_server("http://h:1/").unwrap(), "http://h:1");
        assert!(normalize_server("https://h").unwrap_err().to_string().contains("plain HTTP"));
        assert!(normalize_server("ftp://h").is_err());
        assert!(normalize_server("  ").is_err());
        assert!(normalize_server("http://").is_err());
    }

    fn saved() -> Config {
        Config { server: Some("http://a:1".into()), email: Some("ada@example.com".into()), token: Some("t".into()), refresh_token: Some("r".into()), api_key: None }
    }

    #[test]
    fn saved_credentials_go_only_to_their_server() {
        let s = resolve(None, None, &saved()).unwrap();
        assert_eq!(s.server, "http://a:1");
        assert_eq!(s.auth, Auth::Token { token: "t".into(), refresh_token: Some("r".into()) });
        assert_eq!(resolve(Some("a:1/"), None, &saved()).unwrap().source, Source::Saved);
        let e = resolve(Some("http://b:2"), None, &saved()).unwrap_err();
        assert!(matches!(e, CliError::NotLoggedIn { server: Some(ref s) } if s == "http://b:2"), "{e}");
    }

    #[test]
    fn env_api_key_overrides_saved_credentials() {
        let s = resolve(Some("http://b:2"), Some("vr_k"), &saved()).unwrap();
        assert_eq!((s.auth, s.source), (Auth::ApiKey("vr_k".into()), Source::Env));
        assert!(matches!(resolve(None, Some("vr_k"), &Config::default()), Err(CliError::Usage(_))));
    }

    #[test]
    fn nothing_saved_is_not_logged_in() {
        assert!(matches!(resolve(None, None, &Config::default()), Err(CliError::NotLoggedIn { server: None })));
        let logged_out = Config { token: None, refresh_token: None, ..saved() };
        assert!(matches!(resolve(None, None, &logged_out), Err(CliError::NotLoggedIn { server: Some(_) })));
    }

    #[test]
    fn save_writes_mode_0600_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("voltrun-cli-cfg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let f = ConfigFile::at(dir.join("voltrun/config.json"));
        assert_eq!(f.load().unwrap(), Config::default());
        f.save(&saved()).unwrap();
        assert_eq!(f.load().unwrap(), saved());
        let mode = fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(dir.join("voltrun")).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        drop(f.lock().unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
