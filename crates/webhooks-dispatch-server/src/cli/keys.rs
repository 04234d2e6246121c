//! `keys …`: the master keys that seal endpoint secrets at rest — generate one, add one to the key file,
//! and rekey (reseal every endpoint key under the current master key).
//!
//! Moving to a new master key with several processes: `keys add` (decrypt-only) and restart each, so all of
//! them can open what the new key will seal; then put it first in every ring and restart again; then
//! `keys rekey`; then drop the old key. With one process (SQLite's default), `keys add --current`, a restart
//! and `keys rekey` do it.

use std::process::ExitCode;

use clap::Subcommand;
use webhooks_dispatch::keyring::MasterKey;

use super::{client, fail};
use crate::config::keyring::{add_to_file, dated_key_id, next_key_id};
use crate::config::Config;
use crate::Error;

/// `keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new master key (`id:base64`, 32 random bytes) on standard output, for
    /// WEBHOOKS_DISPATCH_MASTER_KEYS or a key file. Needs no database or configuration.
    Generate {
        /// Its id, 1 to 32 of A-Z a-z 0-9 _ - [default: k + the current UTC time, e.g. k20300101120000].
        #[arg(long)]
        id: Option<String>,
    },
    /// Generate a master key and add it to the key file in use (master_keys_file, or SQLite's default
    /// beside the database): decrypt-only, unless --current puts it first so it seals from now on. Prints
    /// its id. Restart the processes that use the file to make them use it.
    Add {
        /// Its id [default: the first free k<n>].
        #[arg(long)]
        id: Option<String>,
        /// Put it first: new secrets are sealed under it (run `keys rekey` after restarting to reseal the
        /// others). With several processes, add it decrypt-only everywhere first.
        #[arg(long)]
        current: bool,
    },
    /// Seal every endpoint key that is not sealed under the current master key (plaintext rows of older
    /// databases, rows of a previous key), then print how many. Safe beside running services; `serve` and
    /// `worker` also do it at start.
    Rekey {
        /// Keys read per statement [default: 500].
        #[arg(long, value_name = "N")]
        batch: Option<u32>,
    },
}

/// `keys generate`: prints the key on standard output and what to do with it on standard error.
pub(super) fn generate_command(id: Option<&str>) -> ExitCode {
    let id = id.map_or_else(dated_key_id, str::to_owned);
    match MasterKey::generate(&id) {
        Ok(key) => {
            println!("{}", key.encoded().as_str());
            eprintln!(
                "A new master key: keep it secret. Add it to WEBHOOKS_DISPATCH_MASTER_KEYS or to the key file \
                 (comma- or newline-separated): first to seal with it, after the others to only open."
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&Error::Input(format!("--id: {e}"))),
    }
}

/// `keys add` and `keys rekey`.
pub(super) async fn keys_command(command: KeysCommand, config: &Config) -> Result<(), Error> {
    match command {
        KeysCommand::Generate { .. } => unreachable!("handled before configuration"),
        KeysCommand::Add { id, current } => add_command(config, id, current),
        KeysCommand::Rekey { batch } => {
            let report = client(config).await?.rekey(batch).await?;
            println!("examined: {}", report.examined);
            println!("resealed: {}", report.resealed);
            println!("raced: {}", report.raced);
            println!("unopened: {}", report.unopened);
            match report.unopened {
                0 => Ok(()),
                n => Err(Error::Input(format!(
                    "{n} key(s) did not open: they are sealed under a master key missing from the key ring \
                     (or were altered) and cannot sign until that master key is back in the ring"
                ))),
            }
        }
    }
}

fn add_command(config: &Config, id: Option<String>, current: bool) -> Result<(), Error> {
    // Read first: the ids in use, and (for SQLite's default) the file created if this is the first start.
    let ring = config.master_keys.load()?;
    let id = id.unwrap_or_else(|| next_key_id(&ring));
    let key = MasterKey::generate(&id).map_err(|e| Error::Input(format!("--id: {e}")))?;
    let Some(path) = config.master_keys.file() else {
        return Err(refuse_setting(&key, current));
    };
    let ring = add_to_file(path, &key, current)?;
    println!("{}", key.id());
    let role = if current {
        "current: it seals new secrets; restart the service, then run `webhooks-dispatch keys rekey`"
    } else {
        "decrypt-only: processes restarted with this file can open what it seals"
    };
    eprintln!(
        "Added master key {} to {} ({role}). Ring now: {}.",
        key.id(),
        path.display(),
        ring.key_ids().join(", ")
    );
    Ok(())
}

/// A ring given as a setting cannot be edited from here: the key is printed to put there by hand.
fn refuse_setting(key: &MasterKey, current: bool) -> Error {
    println!("{}", key.encoded().as_str());
    let place = if current {
        "first (it then seals new secrets; run `keys rekey` once every process has it)"
    } else {
        "after the existing keys (it then only opens)"
    };
    Error::Config(format!(
        "master_keys: the key ring comes from the master_keys setting (WEBHOOKS_DISPATCH_MASTER_KEYS, \
         --master-keys or the configuration file), which this command cannot change; add the key printed \
         on standard output to it, {place}, comma-separated, in every process sharing the database"
    ))
}
