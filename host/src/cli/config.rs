//! The CLI's config file: server nicknames, the default server, and one token per server.
//!
//! Lives at `$LIGHTCONE_CLI_CONFIG` if set, else `$XDG_CONFIG_HOME/lightcone/cli.json`, else
//! `~/.config/lightcone/cli.json`. Written atomically, readable by its owner only (it holds tokens).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::CliError;

/// A named server (`lightcone server add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    pub nickname: String,
    pub url: String,
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// A nickname or URL used when `-s` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_server: Option<String>,
    #[serde(default)]
    pub servers: Vec<ServerEntry>,
    /// Server URL → the token (JWT) the CLI authenticates with there.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
}

/// Where the config file is.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LIGHTCONE_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lightcone/cli.json");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".config/lightcone/cli.json"),
        None => PathBuf::from(".lightcone-cli.json"),
    }
}

impl Config {
    /// Reads the config file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(CliError::Config { path: path.to_owned(), reason: e.to_string() }),
        };
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_json::from_str(&text)
            .map_err(|e| CliError::Config { path: path.to_owned(), reason: e.to_string() })
    }

    /// Writes the config file atomically (temp file + rename), mode 0600 on Unix.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let err = |e: std::io::Error| CliError::Config { path: path.to_owned(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CliError::Config { path: path.to_owned(), reason: e.to_string() })?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.write_all(b"\n").map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// The URL registered under `nickname`.
    pub fn server_by_nickname(&self, nickname: &str) -> Option<&str> {
        self.servers.iter().find(|s| s.nickname == nickname).map(|s| s.url.as_str())
    }

    pub fn token(&self, server_url: &str) -> Option<&str> {
        self.tokens.get(server_url).map(String::as_str)
    }
}
