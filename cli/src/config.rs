//! Saved credentials: `config.toml` in the user's config directory, mode
//! 0600; PAPERHOOK_URL and PAPERHOOK_API_KEY override it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CliError, Result};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub url: Option<String>,
    pub api_key: Option<String>,
}

/// Where the URL and key came from.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub url: String,
    pub key: String,
    pub url_from_env: bool,
    pub key_from_env: bool,
}

/// The credentials file: PAPERHOOK_CLI_CONFIG, else `paperhook/config.toml` in
/// the platform's config directory ($XDG_CONFIG_HOME or ~/.config on Linux).
pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PAPERHOOK_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::config_dir()
        .map(|d| d.join("paperhook").join("config.toml"))
        .ok_or_else(|| {
            CliError::new("cannot tell where your config directory is (HOME is not set)").hint(
                "set PAPERHOOK_CLI_CONFIG to a file path, or PAPERHOOK_URL and PAPERHOOK_API_KEY",
            )
        })
}

pub fn load_file(path: &Path) -> Result<Saved> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            CliError::new(format!(
                "{} is not a valid config file: {e}",
                path.display()
            ))
            .hint("run `paperhook login` again to rewrite it")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(CliError::new(format!("reading {}: {e}", path.display()))),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The URL and key to use: the environment first, then the saved file.
pub fn credentials() -> Result<Credentials> {
    let env_url = env("PAPERHOOK_URL");
    let env_key = env("PAPERHOOK_API_KEY");
    let saved = if env_url.is_some() && env_key.is_some() {
        Saved::default()
    } else {
        load_file(&path()?)?
    };
    let url_from_env = env_url.is_some();
    let key_from_env = env_key.is_some();
    let url = env_url.or(saved.url).ok_or_else(not_logged_in)?;
    let key = env_key.or(saved.api_key).ok_or_else(not_logged_in)?;
    Ok(Credentials {
        url: normalise_url(&url)?,
        key,
        url_from_env,
        key_from_env,
    })
}

fn not_logged_in() -> CliError {
    CliError::new("no API URL and key: you are not logged in").hint(
        "run `paperhook login --url URL --key KEY`, or set PAPERHOOK_URL and PAPERHOOK_API_KEY",
    )
}

/// Checks the URL and drops a trailing slash.
pub fn normalise_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        CliError::new(format!("{url:?} is not a valid URL: {e}"))
            .hint("give the API's base URL, like http://127.0.0.1:8080")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(CliError::new(format!("{url:?} is not an http(s) URL"))
            .hint("give the API's base URL, like http://127.0.0.1:8080"));
    }
    Ok(url.to_owned())
}

/// Writes the file readable and writable by the owner only (0600), in a
/// directory only the owner can enter; an existing file is replaced.
pub fn save(path: &Path, saved: &Saved) -> Result<()> {
    let text = toml::to_string(saved).map_err(|e| CliError::new(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        create_private_dir(dir)
            .map_err(|e| CliError::new(format!("creating {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, text.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CliError::new(format!("writing {}: {e}", path.display()))
        })
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The umask cannot widen 0600, but make sure anyway.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

/// A warning when the file can be read by others.
#[cfg(unix)]
pub fn permission_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} can be read by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
pub fn permission_warning(_: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalise_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(normalise_url("127.0.0.1:8080").is_err());
        assert!(normalise_url("ftp://x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn saved_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let saved = Saved {
            url: Some("http://x".into()),
            api_key: Some("ph_secret".into()),
        };
        save(&path, &saved).unwrap();
        save(&path, &saved).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_file(&path).unwrap().api_key.as_deref(),
            Some("ph_secret")
        );
        assert!(permission_warning(&path).is_none());
    }
}
