//! The API key `serve` generates when none is configured, and where it goes.
//!
//! A person at a terminal sees it once on stderr. Anywhere else stderr is a log pipe, a journal or a file
//! other people and systems read, so the key goes to a file only its owner can read (mode 0600) and stderr
//! gets the file's path.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::database::DatabaseUrl;
use crate::Error;

/// File name of a generated API key (see [`key_file`]).
pub const KEY_FILE_NAME: &str = "webhooks-dispatch.api-key";

/// Where a generated key was put, to tell the operator once logging is up.
pub enum Shown {
    /// Printed on the terminal.
    Terminal,
    /// Written to this file.
    File(PathBuf),
}

/// Generates a key for this run, adds it to `config` and shows it: on stderr if that is a terminal and no
/// `api_key_file` is set, else in [`key_file`].
pub fn generate(config: &mut Config) -> Result<Shown, Error> {
    let key = generated_api_key()?;
    let shown = if config.api_key_file.is_none() && std::io::stderr().is_terminal() {
        eprintln!(
            "No API key configured: generated one for this run (set WEBHOOKS_DISPATCH_API_KEYS to choose \
             your own):\n\n    {key}\n"
        );
        Shown::Terminal
    } else {
        let path = key_file(config);
        write_private(&path, &format!("{key}\n"))
            .map_err(|e| Error::io(format!("writing the generated API key to {}", path.display()), e))?;
        Shown::File(path)
    };
    config.api_keys.0.push(key);
    Ok(shown)
}

/// Where a generated key is written: `api_key_file`, else [`KEY_FILE_NAME`] in the SQLite file's directory
/// (which the service can write, and whose files are private already), else in the working directory.
pub fn key_file(config: &Config) -> PathBuf {
    if let Some(path) = &config.api_key_file {
        return path.clone();
    }
    match &config.database_url {
        DatabaseUrl::Sqlite(db) => db
            .parent()
            .map_or_else(|| PathBuf::from(KEY_FILE_NAME), |dir| dir.join(KEY_FILE_NAME)),
        DatabaseUrl::Postgres(_) => PathBuf::from(KEY_FILE_NAME),
    }
}

/// Logs where the key went (the key itself never goes through the log).
pub fn announce(shown: &Shown) {
    if let Shown::File(path) = shown {
        tracing::warn!(
            file = %path.display(),
            "no API key configured: generated one for this run and wrote it to the file (mode 0600); set \
             WEBHOOKS_DISPATCH_API_KEYS to choose your own"
        );
    }
}

/// `wdk_` + 32 bytes from the operating system's CSPRNG, URL-safe base64.
fn generated_api_key() -> Result<String, Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::io("generating an API key", std::io::Error::other(e)))?;
    Ok(format!(
        "wdk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Writes `contents` to `path` readable by the owner only. The text goes to a new file (`O_EXCL`, mode 0600
/// set exactly, whatever the umask) beside it, which is then renamed over `path`: whatever was at `path`
/// before — a file with a wider mode, a symbolic link someone planted — is replaced, never written through,
/// and no reader ever sees a partial key.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let temporary = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    // Refuses a file already there (left over, or planted): it is not ours to write into or remove.
    let mut file = create_private(&temporary)?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // open(2)'s mode is reduced by the umask; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // Catches: a key written through a symbolic link planted at its path (into a file someone else chose
    // and can read), or left with the umask's mode.
    #[test]
    fn the_key_file_replaces_whatever_was_at_its_path_and_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        let path = dir.path().join("api-key");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_private(&path, "wdk_x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "wdk_x\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
    }
}
