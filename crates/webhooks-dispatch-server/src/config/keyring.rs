//! The master key ring that seals endpoint secrets at rest: where it comes from, and the key file a SQLite
//! installation gets by default.
//!
//! Resolution, first match wins:
//! 1. `master_keys` (flag, `WEBHOOKS_DISPATCH_MASTER_KEYS` or the file setting): the ring text itself;
//! 2. `master_keys_file` (`WEBHOOKS_DISPATCH_MASTER_KEYS_FILE`): a file holding that text;
//! 3. with SQLite, `<database file>.keys` beside the database: read if it exists, else created holding one
//!    generated key, so a fresh single-machine install needs no setup and still never stores a secret in
//!    the clear;
//! 4. with PostgreSQL, nothing: refused. Several processes share one PostgreSQL database, and a key each of
//!    them generated for itself would leave each unable to open what the others sealed.
//!
//! No error quotes a ring's text or a key file's content: [`CipherError`]s never carry key material, and the
//! file errors name only the path.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use webhooks_dispatch::keyring::{KeyRing, MasterKey};
use zeroize::Zeroizing;

use super::Config;
use crate::database::DatabaseUrl;
use crate::private_file::{create_private, write_private};
use crate::Error;

/// Appended to the SQLite file's name for the default key file (`webhooks-dispatch.db.keys`).
pub const DEFAULT_KEY_FILE_SUFFIX: &str = ".keys";

/// Heads every key file the service writes, so whoever opens one knows what it is and what losing it costs.
const FILE_HEADER: &str = "\
# webhooks-dispatch master keys, one `id:base64` per line. The first seals endpoint secrets; the others
# only open secrets sealed before. Back this file up with the database: without it no endpoint secret
# can be read.
";

const MISSING: &str = "master_keys: with PostgreSQL a master key ring must be configured, since every \
process sharing the database needs the same one: set WEBHOOKS_DISPATCH_MASTER_KEYS to a ring such as the \
key `webhooks-dispatch keys generate` prints, or point master_keys_file (WEBHOOKS_DISPATCH_MASTER_KEYS_FILE) \
at a file (mode 0600) holding it";

/// Where the master keys come from. `Debug` shows key ids and paths, never key material.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// The `master_keys` setting, already parsed.
    Setting(Arc<KeyRing>),
    /// The `master_keys_file` setting.
    File(PathBuf),
    /// The SQLite default beside the database, created on first use.
    DefaultFile(PathBuf),
}

impl KeySource {
    /// Applies the resolution order above. Parses `master_keys` now (no I/O), so a bad ring is refused with
    /// the other settings; files are read only by [`KeySource::load`].
    pub(super) fn resolve(
        text: Option<&str>,
        file: Option<PathBuf>,
        database: &DatabaseUrl,
    ) -> Result<KeySource, Error> {
        if let Some(text) = text {
            let ring = KeyRing::parse(text).map_err(|e| Error::Config(format!("master_keys: {e}")))?;
            return Ok(KeySource::Setting(Arc::new(ring)));
        }
        if let Some(path) = file {
            return Ok(KeySource::File(path));
        }
        match database {
            DatabaseUrl::Sqlite(db) => Ok(KeySource::DefaultFile(default_key_file(db))),
            DatabaseUrl::Postgres(_) => Err(Error::Config(MISSING.to_owned())),
        }
    }

    /// The key file the ring is read from; `None` when it comes from the `master_keys` setting.
    pub fn file(&self) -> Option<&Path> {
        match self {
            KeySource::Setting(_) => None,
            KeySource::File(path) | KeySource::DefaultFile(path) => Some(path),
        }
    }

    /// The ring: the setting's, or read from its file. The SQLite default file is created (mode 0600, one
    /// generated key) when it does not exist yet, and that is logged once, with its path.
    pub fn load(&self) -> Result<Arc<KeyRing>, Error> {
        match self {
            KeySource::Setting(ring) => Ok(ring.clone()),
            KeySource::File(path) => read_ring(path).map(Arc::new),
            KeySource::DefaultFile(path) => load_or_create(path).map(Arc::new),
        }
    }
}

impl Config {
    /// The key ring: the one already loaded ([`Config::load_key_ring`], or set by an embedder), else read
    /// from [`Config::master_keys`] now.
    pub fn key_ring(&self) -> Result<Arc<KeyRing>, Error> {
        match &self.key_ring {
            Some(ring) => Ok(ring.clone()),
            None => self.master_keys.load(),
        }
    }

    /// Reads the ring once and keeps it, so every dispatcher of a process shares it and a file is read (or
    /// the default one created) once.
    pub fn load_key_ring(&mut self) -> Result<Arc<KeyRing>, Error> {
        let ring = self.key_ring()?;
        self.key_ring = Some(ring.clone());
        Ok(ring)
    }
}

/// `<db file>.keys`, beside the database: backed up, moved and protected together with it.
pub fn default_key_file(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(DEFAULT_KEY_FILE_SUFFIX);
    PathBuf::from(name)
}

/// A configuration error about the key file at `path`, naming the path and never its content.
fn file_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("master_keys_file: {}: {why}", path.display()))
}

/// The text of the key file at `path`, held so that it is wiped when dropped.
fn read_text(path: &Path) -> Result<Zeroizing<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    Ok(Zeroizing::new(text))
}

fn read_ring(path: &Path) -> Result<KeyRing, Error> {
    KeyRing::parse(&read_text(path)?).map_err(|e| file_error(path, e))
}

/// Reads the default key file, or creates it. Creating first (`O_EXCL`) and reading on `AlreadyExists`
/// leaves no moment in which two starting processes could both decide to generate a key.
fn load_or_create(path: &Path) -> Result<KeyRing, Error> {
    let key = MasterKey::generate(&dated_key_id()).map_err(|e| file_error(path, e))?;
    match create_key_file(path, &key) {
        Ok(()) => {
            tracing::warn!(
                file = %path.display(),
                "created a master key file (mode 0600) to seal endpoint secrets; back it up with the \
                 database: without it no endpoint secret can be read"
            );
            Ok(KeyRing::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_ring(path),
        Err(e) => Err(file_error(path, format!("cannot create it ({e})"))),
    }
}

fn create_key_file(path: &Path, key: &MasterKey) -> std::io::Result<()> {
    let mut file = create_private(path)?;
    let text = file_text(key);
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if written.is_err() {
        // A half-written key file would fail every later start; without it the next start tries again.
        let _ = std::fs::remove_file(path);
    }
    written
}

/// A new key file holding only `key`.
fn file_text(key: &MasterKey) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(FILE_HEADER.len() + 80));
    text.push_str(FILE_HEADER);
    text.push_str(&key.encoded());
    text.push('\n');
    text
}

/// Adds `key` to the key file at `path` — first, so it seals from now on, when `current`; else last, only
/// opening — keeping every other line (comments too) and the file's 0600 mode. The file is replaced
/// atomically, so a crash leaves the old ring or the new one, never half of one. Returns the new ring.
pub fn add_to_file(path: &Path, key: &MasterKey, current: bool) -> Result<KeyRing, Error> {
    let old = read_text(path)?;
    KeyRing::parse(&old)
        .and_then(|ring| ring.with_key(key.clone()))
        .map_err(|e| file_error(path, e))?;
    let entry = key.encoded();
    let mut text = Zeroizing::new(String::with_capacity(old.len() + entry.len() + 2));
    let mut placed = false;
    for line in old.lines() {
        let is_entry = !line.trim().is_empty() && !line.trim_start().starts_with('#');
        if current && is_entry && !placed {
            text.push_str(&entry);
            text.push('\n');
            placed = true;
        }
        text.push_str(line);
        text.push('\n');
    }
    if !placed {
        text.push_str(&entry);
        text.push('\n');
    }
    let ring = KeyRing::parse(&text).map_err(|e| file_error(path, e))?;
    // What the file now says must be what was asked; anything else is a bug to stop at, before writing.
    let expected = if current { key.id() } else { ring.key_ids()[0] };
    if ring.current_id() != expected || ring.key_ids().len() < 2 {
        return Err(file_error(path, "the new key could not be placed"));
    }
    write_private(path, &text).map_err(|e| file_error(path, format!("cannot write it ({e})")))?;
    Ok(ring)
}

/// `k` and the current UTC time to the second (`k20300101120000`): the id of a key made without one given.
/// Unlike a fixed `k1`, it tells a lost key file's key from its replacement's, so rows sealed under the
/// lost one fail as sealed under a key missing from the ring, which a rekey reports, rather than silently
/// failing to open under a namesake.
pub fn dated_key_id() -> String {
    chrono::Utc::now().format("k%Y%m%d%H%M%S").to_string()
}

/// The first `k<n>` (n from the ring's size + 1) that no key of `ring` has.
pub fn next_key_id(ring: &KeyRing) -> String {
    let ids = ring.key_ids();
    (ids.len() + 1..)
        .map(|n| format!("k{n}"))
        .find(|id| !ids.contains(&id.as_str()))
        .expect("some k<n> is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(path: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(path.to_owned())
    }

    // Catches: a second start generating a new key over the first (every secret lost), or a default file
    // other users can read.
    #[test]
    fn the_default_file_is_created_once_0600_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hooks.db");
        let source = KeySource::resolve(None, None, &sqlite(&db)).unwrap();
        assert_eq!(source.file(), Some(dir.path().join("hooks.db.keys").as_path()));
        let first = source.load().unwrap();
        let again = source.load().unwrap();
        assert_eq!(first.key_ids().len(), 1);
        assert_eq!(again.key_ids(), first.key_ids());
        use webhooks_dispatch::keyring::SecretCipher as _;
        let sealed = first.seal("ep_1", "whsec_x").unwrap();
        assert_eq!(again.open("ep_1", &sealed).unwrap().as_str(), "whsec_x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(source.file().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_setting_wins_then_the_file_and_postgres_without_either_is_refused() {
        let key = MasterKey::generate("a").unwrap();
        let pg = DatabaseUrl::Postgres("postgres://h/db".into());
        let given = KeySource::resolve(Some(&key.encoded()), Some("/nope".into()), &pg).unwrap();
        assert!(matches!(&given, KeySource::Setting(r) if r.current_id() == "a"));
        let file = KeySource::resolve(None, Some("/nope/keys".into()), &pg).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("master_keys_file: /nope/keys"), "{err}");
        let refused = KeySource::resolve(None, None, &pg).unwrap_err().to_string();
        assert!(
            refused.contains("keys generate") && refused.contains("MASTER_KEYS"),
            "{refused}"
        );
    }

    // Catches: a bad ring quoted back in the error (its text is the key itself).
    #[test]
    fn a_bad_ring_or_key_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let bad = "k1:c2VjcmV0LWJ1dC10b28tc2hvcnQ=";
        let err = KeySource::resolve(Some(bad), None, &sqlite(&dir.path().join("x.db")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration: master_keys:") && !err.contains("c2Vj"),
            "{err}"
        );
        let file = dir.path().join("keys");
        std::fs::write(&file, bad).unwrap();
        let err = KeySource::File(file.clone()).load().unwrap_err().to_string();
        assert!(
            err.contains(&file.display().to_string()) && !err.contains("c2Vj"),
            "{err}"
        );
    }

    #[test]
    fn added_keys_go_first_when_current_else_last_and_comments_stay() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::DefaultFile(dir.path().join("x.db.keys"));
        let first = source.load().unwrap().current_id().to_owned();
        let path = source.file().unwrap();
        let ring = add_to_file(path, &MasterKey::generate("k2").unwrap(), false).unwrap();
        assert_eq!(ring.key_ids(), [first.as_str(), "k2"]);
        let k3 = MasterKey::generate(&next_key_id(&ring)).unwrap();
        let ring = add_to_file(path, &k3, true).unwrap();
        assert_eq!(ring.key_ids(), ["k3", first.as_str(), "k2"]);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with(FILE_HEADER), "{text}");
        assert_eq!(source.load().unwrap().key_ids(), ["k3", first.as_str(), "k2"]);
        let dup = add_to_file(path, &MasterKey::generate("k2").unwrap(), true).unwrap_err();
        assert!(dup.to_string().contains("more than once"), "{dup}");
    }
}
