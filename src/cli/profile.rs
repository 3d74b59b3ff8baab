//! Named profiles (server URL and token) in the client configuration file:
//! `$STACKYARD_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/stackyard/config.toml`,
//! else `~/.config/stackyard/config.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{CliError, CliResult, Context};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os("STACKYARD_CLIENT_CONFIG") {
        return path.into();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("stackyard").join("config.toml")
}

pub fn load() -> CliResult<ClientConfig> {
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            CliError::usage(format!("the client configuration {} is invalid: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(e) => Err(e.into()),
    }
}

/// The server and token to use: flags and environment first, then the
/// profile (named, or the default one), then the local default server.
pub fn resolve(
    server: Option<String>,
    token: Option<String>,
    profile: Option<&str>,
) -> CliResult<(String, Option<String>)> {
    let config = load()?;
    let name = profile.map(str::to_string).or(config.default_profile.clone());
    let chosen = match &name {
        Some(name) => match config.profiles.get(name) {
            Some(p) => Some(p.clone()),
            None if profile.is_some() => {
                return Err(CliError::usage(format!("no profile '{name}' in {}", config_path().display())));
            }
            None => None,
        },
        None => None,
    };
    let server =
        server.or_else(|| chosen.as_ref().map(|p| p.server.clone())).unwrap_or_else(|| DEFAULT_SERVER.into());
    let token = token.or_else(|| chosen.and_then(|p| p.token));
    Ok((server, token))
}

/// `stackyard login`: checks the server answers, then saves the profile.
pub async fn login(ctx: &Context, name: &str, server: &str, token: Option<String>) -> CliResult {
    // A read that needs a token: it proves both the server and the token.
    let client = stackyard_client::Client::new(server, token.clone());
    if let Err(e) = client.list_artifacts(None, &[], None).await {
        let mut error = CliError::from(e);
        error.message = format!("{}; nothing was saved", error.message);
        return Err(error);
    }
    let mut config = load()?;
    config.profiles.insert(name.to_string(), Profile { server: server.to_string(), token });
    if config.default_profile.is_none() {
        config.default_profile = Some(name.to_string());
    }
    let path = config_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(&path, &toml::to_string_pretty(&config).expect("serialisable"))?;
    ctx.info(format!("saved profile '{name}' ({server}) in {}", path.display()));
    Ok(())
}

/// The configuration holds tokens: readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
