//! Writing a file whole, with exact permissions: the password file and the
//! certificate files `switchboard certs --force` replaces.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom as _, SystemRandom};

/// Why [`replace`] failed, and the file it concerns: the temporary file if it
/// could not be made or written, the target for anything else.
#[derive(Debug)]
pub(crate) struct WriteError {
    /// The temporary file or the target.
    pub(crate) path: PathBuf,
    /// What the OS said.
    pub(crate) source: io::Error,
}

/// Creates `path`, which must not exist, with exactly `mode` (whatever the
/// umask), writes `data` and syncs it. If the file was created but could not
/// be written, it is removed again; an existing file is left alone
/// ([`io::ErrorKind::AlreadyExists`]).
pub(crate) fn create_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    let written = (|| {
        // The umask can only clear bits of `mode`; set them exactly so the
        // result does not depend on the caller's umask.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Writes `data` to `path` atomically with exactly `mode` (0600 for secrets:
/// never readable by others, even briefly).
///
/// The data goes to a new temporary file in the same directory (made by
/// [`create_new`] under a random name, so concurrent writers or a stale
/// temporary file from a crash never collide with it), which is then renamed
/// over `path`, and the directory is synced (best effort). A reader or a crash
/// therefore sees the old file or the new one, never half of one. If `path` is
/// a symbolic link, the link itself is replaced.
///
/// # Errors
///
/// [`WriteError`]; the temporary file is removed and `path` is left as it was.
pub(crate) fn replace(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteError> {
    let error = |p: &Path| {
        let path = p.to_owned();
        move |source| WriteError { path, source }
    };
    let Some(file_name) = path.file_name() else {
        return Err(error(path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 8];
    SystemRandom::new().fill(&mut suffix).map_err(|_| {
        error(path)(io::Error::other(
            "the system random number generator failed",
        ))
    })?;
    let mut hex = String::with_capacity(2 * suffix.len());
    for byte in suffix {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp-");
    tmp_name.push(hex);
    let tmp = dir.join(tmp_name);

    create_new(&tmp, data, mode).map_err(error(&tmp))?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(error(path)(e));
    }
    // Make the rename itself durable. Best effort: some file systems refuse
    // to sync a directory, and the new file is in place either way.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir().join(format!(
                "switchboard-atomic-{}-{nanos}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replace_sets_the_mode_and_leaves_nothing_behind() {
        let dir = TempDir::new();
        let path = dir.0.join("f");
        replace(&path, b"one", 0o644).unwrap();
        assert_eq!(
            (fs::read(&path).unwrap(), mode(&path)),
            (b"one".to_vec(), 0o644)
        );
        replace(&path, b"two", 0o600).unwrap();
        assert_eq!(
            (fs::read(&path).unwrap(), mode(&path)),
            (b"two".to_vec(), 0o600)
        );
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn errors_name_the_file_they_concern() {
        let dir = TempDir::new();
        // No such directory: the temporary file cannot be made.
        let err = replace(&dir.0.join("missing").join("f"), b"x", 0o600).unwrap_err();
        assert!(err.path.starts_with(dir.0.join("missing")), "{err:?}");
        assert!(err.path.to_string_lossy().contains(".f.tmp-"), "{err:?}");
        // A directory in the way: the rename fails and names the target.
        let target = dir.0.join("d");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"").unwrap();
        let err = replace(&target, b"x", 0o600).unwrap_err();
        assert_eq!(err.path, target);
        assert_eq!(
            fs::read_dir(&dir.0).unwrap().count(),
            1,
            "temporary file removed"
        );
        // No file name at all.
        assert_eq!(
            replace(Path::new("/"), b"x", 0o600)
                .unwrap_err()
                .source
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn create_new_never_replaces() {
        let dir = TempDir::new();
        let path = dir.0.join("f");
        create_new(&path, b"mine", 0o600).unwrap();
        let err = create_new(&path, b"theirs", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            (fs::read(&path).unwrap(), mode(&path)),
            (b"mine".to_vec(), 0o600)
        );
    }
}
