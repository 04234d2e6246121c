//! Files only their owner may read (mode 0600): the generated API key and the master key file. Both hold
//! credentials, so neither may be created with the umask's mode, written through a planted symbolic link, or
//! seen half-written.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` readable by the owner only. The text goes to a new file (`O_EXCL`, mode 0600
/// set exactly, whatever the umask) beside it, which is then renamed over `path`: whatever was at `path`
/// before — a file with a wider mode, a symbolic link someone planted — is replaced, never written through,
/// and no reader ever sees a partial key.
pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
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

/// Creates a new file at `path`, readable and writable by its owner only; an existing file (or link) there
/// is an error (`AlreadyExists`), never opened.
#[cfg(unix)]
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
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

/// Creates a new file at `path`; an existing one is an error (`AlreadyExists`).
#[cfg(not(unix))]
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
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
