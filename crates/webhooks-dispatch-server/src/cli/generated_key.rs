//! The API key `serve` generates when none is configured, and where it goes.
//!
//! A person at a terminal sees it once on stderr. Anywhere else stderr is a log pipe, a journal or a file
//! other people and systems read, so the key goes to a file only its owner can read (mode 0600) and stderr
//! gets the file's path.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::config::Config;
use crate::database::DatabaseUrl;
use crate::private_file::write_private;
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
