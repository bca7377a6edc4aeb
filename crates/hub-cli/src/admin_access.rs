//! How `hub serve` and the `hub events` / `hub replay` commands agree on the admin listener:
//! the bearer token and the listener's address live in two small files next to the store
//! (`<store>.admin-token`, mode 0600, and `<store>.admin-addr`), unless `HUB_ADMIN_TOKEN` gives
//! the token.

use anyhow::{Context, Result, bail};
use rand::RngCore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;
/// Shortest token accepted from `HUB_ADMIN_TOKEN`.
const MIN_TOKEN_LEN: usize = 32;

fn sibling(store: &Path, suffix: &str) -> PathBuf {
    let mut name = store.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_else(|| "hub.redb".into());
    name.push(suffix);
    store.with_file_name(name)
}

/// `<store>.admin-token`.
pub fn token_path(store: &Path) -> PathBuf {
    sibling(store, ".admin-token")
}

/// `<store>.admin-addr`.
pub fn addr_path(store: &Path) -> PathBuf {
    sibling(store, ".admin-addr")
}

/// A token given in the environment, checked for length.
pub fn env_token(value: Option<&str>) -> Result<Option<String>> {
    match value.map(str::trim) {
        None => Ok(None),
        Some(t) if t.len() < MIN_TOKEN_LEN || t.chars().any(|c| !c.is_ascii_graphic()) => bail!(
            "HUB_ADMIN_TOKEN must be at least {MIN_TOKEN_LEN} printable characters without spaces \
             (unset it and `hub serve` writes a random one to the token file)"
        ),
        Some(t) => Ok(Some(t.to_string())),
    }
}

fn valid_file_token(t: &str) -> bool {
    t.len() >= MIN_TOKEN_LEN && t.chars().all(|c| c.is_ascii_graphic())
}

/// The token `hub serve` uses when `HUB_ADMIN_TOKEN` is unset: the one in the token file, or a
/// new random one written there with mode 0600. A file others can read is not reused.
pub fn load_or_create_token(store: &Path) -> Result<String> {
    let path = token_path(store);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if valid_file_token(t) && private(&path)? {
            return Ok(t.to_string());
        }
        tracing::warn!(file = %path.display(), "admin token file is unreadable, malformed or readable by others; writing a new token");
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    write_private(&path, &token).with_context(|| format!("writing the admin token to {}", path.display()))?;
    Ok(token)
}

/// The token the CLI presents: `HUB_ADMIN_TOKEN`, else the token file next to the store.
pub fn read_token(store: &Path) -> Result<String> {
    if let Some(t) = env_token(std::env::var("HUB_ADMIN_TOKEN").ok().as_deref())? {
        return Ok(t);
    }
    let path = token_path(store);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the admin token from {} (or set HUB_ADMIN_TOKEN as `hub serve` has it)",
            path.display()
        )
    })?;
    Ok(text.trim().to_string())
}

/// Records where the admin listener is, for the CLI.
pub fn write_addr(store: &Path, addr: SocketAddr) -> Result<()> {
    let path = addr_path(store);
    std::fs::write(&path, format!("{addr}\n")).with_context(|| format!("writing {}", path.display()))
}

/// The admin base URL the CLI calls: `--server`/`HUB_SERVER` if given, else the address the
/// running server recorded, else `HUB_ADMIN_LISTEN`, else the default.
pub fn server_url(store: &Path, server: Option<&str>) -> String {
    if let Some(s) = server {
        return s.trim_end_matches('/').to_string();
    }
    let recorded =
        std::fs::read_to_string(addr_path(store)).ok().and_then(|t| t.trim().parse::<SocketAddr>().ok());
    let addr = recorded
        .or_else(|| std::env::var("HUB_ADMIN_LISTEN").ok().and_then(|v| v.parse().ok()))
        .unwrap_or_else(default_admin_listen);
    format!("http://{addr}")
}

pub fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

#[cfg(unix)]
fn private(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    Ok(mode & 0o077 == 0)
}

#[cfg(not(unix))]
fn private(_path: &Path) -> Result<bool> {
    Ok(true)
}

/// Writes `text` to a fresh file created with mode 0600 (never briefly readable by others),
/// then renames it over `path`.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = sibling(path, ".tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = dir.path().join("hub.redb");
        let a = load_or_create_token(&store).expect("create");
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(private(&token_path(&store)).expect("mode"));
        assert_eq!(load_or_create_token(&store).expect("reuse"), a);
        assert_eq!(token_path(&store), dir.path().join("hub.redb.admin-token"));
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let store = dir.path().join("hub.redb");
        let a = load_or_create_token(&store).expect("create");
        std::fs::set_permissions(token_path(&store), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let b = load_or_create_token(&store).expect("replace");
        assert_ne!(a, b);
        assert!(private(&token_path(&store)).expect("mode"));
    }

    #[test]
    fn short_env_token_is_refused() {
        assert!(env_token(Some("secret")).is_err());
        assert!(env_token(Some(&"x".repeat(40))).expect("ok").is_some());
        assert!(env_token(None).expect("ok").is_none());
    }
}
