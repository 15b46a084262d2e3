//! The password file: salted, slow hashes for `--auth password` (protocol.md
//! section 3) and the `switchboard passwd FILE USER` command (cli.md).
//!
//! # Format
//!
//! Text, one entry per line:
//!
//! ```text
//! # comments and blank lines are ignored on load
//! alice:pbkdf2-sha256:150000:00112233445566778899aabbccddeeff:<64 hex digits>
//! ```
//!
//! The fields are the user name, the scheme, the iteration count, a 16-byte
//! random salt and the 32-byte derived hash, both in lowercase hex. The clear-text
//! password is never stored and never logged. [`PasswordFile::save`] rewrites the
//! whole file, sorted by user name; comments in a hand-edited file are not kept.
//!
//! # Why PBKDF2
//!
//! A password file that leaks must not give the passwords away cheaply, so each
//! entry is a *salted, slow* hash: the random salt makes equal passwords hash
//! differently and precomputed tables useless, and the iteration count makes every
//! guess cost the attacker what a login costs us. PBKDF2-HMAC-SHA256 is the one
//! such function in `ring`, the audited crypto crate we already depend on (rustls's
//! ring provider uses it too), and its `verify` compares in constant time. Memory-hard functions
//! (scrypt, Argon2) resist GPUs better but would mean another crypto dependency.
//! The iteration count is stored per line, so [`DEFAULT_ITERATIONS`] can be raised
//! later without invalidating existing entries: re-running `switchboard passwd`
//! upgrades one user at a time.
//!
//! # Why verification runs off the reactor thread
//!
//! Slow is the point: one [`PasswordFile::verify`] costs tens of milliseconds of
//! CPU on purpose (see [`DEFAULT_ITERATIONS`]). The server is a single-threaded
//! poll loop, so hashing there would stall every connection for that long per
//! `PASS`, and a burst of logins (or an attacker sending wrong passwords) would
//! freeze the whole server. The reactor therefore hands `(user, password)` to a
//! small worker pool that shares the loaded `PasswordFile` (it is read-only and
//! `Sync`), and picks the answer up as an event. The pool size also bounds how
//! much CPU password guessing can take.
//!
//! Unknown users cost the same hashing work as known ones (against a dummy entry),
//! so the time a `PASS` takes does not reveal which user names exist.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

/// Iteration count [`run_command`] uses for new and replaced entries.
///
/// Chosen by measurement: one [`PasswordFile::verify`] at this count took 29 ms
/// (28.6-31.0 ms over three runs, the same for right, wrong and unknown-user
/// checks) in a `--release` build on the development machine, an AMD EPYC with
/// the SHA extensions; 100 000 took 19 ms. `cargo test --release --lib passwd --
/// --ignored --nocapture` prints the figure for the machine at hand. That is
/// inside the 20-50 ms target: slow enough to make offline guessing expensive,
/// fast enough that each verify worker serves over 30 logins per second. (OWASP's
/// 2023 figure for PBKDF2-SHA256 is 600 000; raise this when logins can afford
/// it, since the count is stored per line.)
pub const DEFAULT_ITERATIONS: u32 = 150_000;

/// Largest iteration count accepted on load or by [`PasswordFile::set`].
///
/// A corrupt or hostile line with a count near `u32::MAX` would otherwise pin a
/// verify worker for many minutes per login attempt. 100 times the default (about
/// 3 s per verify, measured as above) leaves ample room to raise the default
/// later.
pub const MAX_ITERATIONS: u32 = DEFAULT_ITERATIONS * 100;

/// The scheme name in the second field of every line.
const SCHEME: &str = "pbkdf2-sha256";
/// Salt length in bytes (128 bits, as NIST SP 800-132 recommends at least).
const SALT_LEN: usize = 16;
/// Derived hash length in bytes: one SHA-256 output, so one PBKDF2 block.
const HASH_LEN: usize = 32;
/// Longest user name (protocol.md section 3).
const MAX_USER_LEN: usize = 64;
static ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;

/// What can go wrong loading, changing or saving a password file.
#[derive(Debug)]
#[non_exhaustive]
pub enum PasswdError {
    /// Reading, writing or renaming `path` failed.
    Io {
        /// The file the operation was on (for [`PasswordFile::save`], possibly the
        /// temporary file next to the target).
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A line of the file is malformed.
    Parse {
        /// The file, when the text came from one ([`PasswordFile::load`]).
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: &'static str,
    },
    /// A user name is not 1 to 64 of `A-Z a-z 0-9 . _ -`.
    BadUserName,
    /// An iteration count is 0 or above [`MAX_ITERATIONS`].
    BadIterations,
    /// The password is empty (or standard input had no line).
    EmptyPassword,
    /// `--delete` named a user the file does not have.
    NoSuchUser {
        /// The password file.
        path: PathBuf,
        /// The user name as given.
        user: String,
    },
    /// Reading the password from standard input failed.
    Stdin(io::Error),
    /// The operating system's random number generator failed (salt generation).
    Random,
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => {
                write!(f, "password file {}: {source}", path.display())
            }
            Self::Parse {
                path: Some(path),
                line,
                reason,
            } => write!(f, "password file {}: line {line}: {reason}", path.display()),
            Self::Parse {
                path: None,
                line,
                reason,
            } => write!(f, "password file: line {line}: {reason}"),
            Self::BadUserName => f.write_str("bad user name (1 to 64 of A-Z a-z 0-9 . _ -)"),
            Self::BadIterations => {
                write!(f, "bad iteration count (1 to {MAX_ITERATIONS})")
            }
            Self::EmptyPassword => {
                f.write_str("empty password (give one line on standard input, or --password)")
            }
            Self::NoSuchUser { path, user } => {
                write!(f, "password file {}: no user {user}", path.display())
            }
            Self::Stdin(e) => write!(f, "reading the password from standard input: {e}"),
            Self::Random => f.write_str("the system random number generator failed"),
        }
    }
}

impl std::error::Error for PasswdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } | Self::Stdin(source) => Some(source),
            _ => None,
        }
    }
}

/// One user's line. `Debug` is written by hand so that salts and hashes never end
/// up in a log through `{:?}` of the whole file.
#[derive(Clone)]
struct Entry {
    /// The name as written in the file or given to `set` (case kept for display).
    name: String,
    iterations: NonZeroU32,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A loaded password file: user names mapped to salted PBKDF2 hashes.
///
/// Load it once at start-up ([`load`](Self::load)), share it read-only with the
/// verify workers, and call [`verify`](Self::verify) there for each `PASS`. The
/// `passwd` command edits it with [`set`](Self::set) / [`remove`](Self::remove)
/// and writes it back with [`save`](Self::save) (or just calls [`run_command`]).
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    /// Keyed by the ASCII-lowercased name, which is what makes lookups
    /// case-insensitive and keeps one entry per user; ordered so `to_text` is
    /// deterministic.
    entries: BTreeMap<String, Entry>,
    /// Iteration count of the dummy entry `verify` hashes against for unknown
    /// users: the most common count in the file, so that an unknown name costs
    /// what most known names cost. `None` (empty file) means the default.
    dummy_iterations: Option<NonZeroU32>,
}

impl PasswordFile {
    /// Reads and parses the password file at `path`.
    ///
    /// Call it once when the server starts with `--auth password` (a missing or
    /// bad file should stop the start), and before editing the file.
    ///
    /// # Errors
    ///
    /// [`PasswdError::Io`] if the file cannot be read (including when it does not
    /// exist: check `source.kind()` for [`io::ErrorKind::NotFound`]), and
    /// [`PasswdError::Parse`] naming `path` and the line if it is not valid UTF-8
    /// or a line is malformed (see [`parse`](Self::parse)).
    pub fn load(path: &Path) -> Result<Self, PasswdError> {
        let bytes = fs::read(path).map_err(|source| PasswdError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let with_path = |e: PasswdError| match e {
            PasswdError::Parse { line, reason, .. } => PasswdError::Parse {
                path: Some(path.to_path_buf()),
                line,
                reason,
            },
            other => other,
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e
                    .as_bytes()
                    .get(..e.utf8_error().valid_up_to())
                    .unwrap_or(&[]);
                let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(with_path(PasswdError::Parse {
                    path: None,
                    line,
                    reason: "not valid UTF-8",
                }));
            }
        };
        let file = Self::parse(&text).map_err(with_path)?;
        log::debug!("password file {}: {} users", path.display(), file.len());
        Ok(file)
    }

    /// Parses the text of a password file (see the [module docs](self) for the
    /// format). Blank lines and lines starting with `#` are skipped; surrounding
    /// whitespace and `\r\n` line ends are tolerated, and hex may be upper case.
    ///
    /// Use [`load`](Self::load) for files; this is for text from elsewhere and for
    /// tests.
    ///
    /// # Errors
    ///
    /// [`PasswdError::Parse`] (with `path: None`) for the first malformed line:
    /// wrong number of fields, a bad user name, an unknown scheme, an iteration
    /// count of 0, above [`MAX_ITERATIONS`] or not a number, a salt or hash of the
    /// wrong length or not hex, or a user that appears twice (in any case).
    pub fn parse(text: &str) -> Result<Self, PasswdError> {
        let mut file = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |reason| PasswdError::Parse {
                path: None,
                line: index + 1,
                reason,
            };
            let entry = parse_line(line).map_err(error)?;
            let key = entry.name.to_ascii_lowercase();
            if file.entries.insert(key, entry).is_some() {
                return Err(error("duplicate user"));
            }
        }
        file.update_dummy();
        Ok(file)
    }

    /// Checks `password` for `user`; `true` only if the user exists and the
    /// password matches.
    ///
    /// Call it for each `PASS` from a verify worker, never on the reactor thread:
    /// it deliberately takes tens of milliseconds (see the module docs). The
    /// comparison is constant-time, and an unknown or malformed user name costs
    /// the same hashing as a known one, so neither the result's timing nor its
    /// value tells a client whether the user exists.
    #[must_use = "ignoring the result of a password check lets everyone in"]
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let found = if valid_user_name(user) {
            self.entries.get(&user.to_ascii_lowercase())
        } else {
            None
        };
        match found {
            Some(entry) => pbkdf2::verify(
                ALGORITHM,
                entry.iterations,
                &entry.salt,
                password,
                &entry.hash,
            )
            .is_ok(),
            None => {
                // Same work as a real entry, result thrown away: the dummy salt
                // and hash are arbitrary, and no password can log in through it.
                let iterations = self.dummy_iterations.unwrap_or(DEFAULT_NONZERO);
                let _ = pbkdf2::verify(
                    ALGORITHM,
                    iterations,
                    &[0x5a; SALT_LEN],
                    password,
                    &[0xa5; HASH_LEN],
                );
                false
            }
        }
    }

    /// Adds `user` with a fresh random salt and the hash of `password`, or
    /// replaces the entry a user of the same name (compared case-insensitively)
    /// already has; the file keeps one entry per user, spelled as given here.
    ///
    /// Call it from the `passwd` command (normally through [`run_command`]) with
    /// [`DEFAULT_ITERATIONS`], then [`save`](Self::save). It hashes, so it takes
    /// as long as a `verify`.
    ///
    /// # Errors
    ///
    /// [`PasswdError::BadUserName`], [`PasswdError::EmptyPassword`],
    /// [`PasswdError::BadIterations`] (0 or above [`MAX_ITERATIONS`]), and
    /// [`PasswdError::Random`] if no salt could be generated. On error the file is
    /// unchanged.
    pub fn set(&mut self, user: &str, password: &[u8], iterations: u32) -> Result<(), PasswdError> {
        if !valid_user_name(user) {
            return Err(PasswdError::BadUserName);
        }
        if password.is_empty() {
            return Err(PasswdError::EmptyPassword);
        }
        let iterations = checked_iterations(iterations).ok_or(PasswdError::BadIterations)?;
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| PasswdError::Random)?;
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(ALGORITHM, iterations, &salt, password, &mut hash);
        let entry = Entry {
            name: user.to_owned(),
            iterations,
            salt,
            hash,
        };
        self.entries.insert(user.to_ascii_lowercase(), entry);
        self.update_dummy();
        Ok(())
    }

    /// Removes `user` (compared case-insensitively); returns whether it was there.
    ///
    /// Call it for `switchboard passwd --delete`, then [`save`](Self::save).
    pub fn remove(&mut self, user: &str) -> bool {
        let removed = self.entries.remove(&user.to_ascii_lowercase()).is_some();
        if removed {
            self.update_dummy();
        }
        removed
    }

    /// Whether `user` (compared case-insensitively) has an entry.
    ///
    /// For the `passwd` command's messages and for start-up checks. Not a login
    /// check, and not constant-time: use [`verify`](Self::verify) for logins.
    pub fn contains(&self, user: &str) -> bool {
        self.entries.contains_key(&user.to_ascii_lowercase())
    }

    /// Number of users; for logs and start-up warnings (an empty file with
    /// `--auth password` lets nobody in).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no users (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file's text: a comment header, then one line per user sorted by
    /// (lowercased) name, each ending in `\n`. [`parse`](Self::parse) reads it
    /// back to an equal file.
    ///
    /// [`save`](Self::save) writes this; call it directly only to show or test
    /// the content.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# switchboard password file: user:pbkdf2-sha256:iterations:salt:hash\n\
             # edit with `switchboard passwd FILE USER`\n",
        );
        for entry in self.entries.values() {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}:{SCHEME}:{}:", entry.name, entry.iterations);
            push_hex(&mut out, &entry.salt);
            out.push(':');
            push_hex(&mut out, &entry.hash);
            out.push('\n');
        }
        out
    }

    /// Writes the file to `path` atomically, readable by its owner only (mode
    /// `0600`).
    ///
    /// The text goes to a new temporary file in the same directory, created with
    /// mode `0600` so the hashes are never readable by others even briefly, is
    /// flushed to disk, and is then renamed over `path`. A reader (or a crash)
    /// therefore sees the old file or the new one, never half of one. If `path` is
    /// a symbolic link, the link itself is replaced.
    ///
    /// Call it after [`set`](Self::set) / [`remove`](Self::remove).
    ///
    /// # Errors
    ///
    /// [`PasswdError::Io`] if the temporary file cannot be created or written
    /// (naming it), or no random name for it could be drawn or the rename fails
    /// (naming `path`); the temporary file is removed and `path` is left as it
    /// was.
    pub fn save(&self, path: &Path) -> Result<(), PasswdError> {
        crate::atomic_file::replace(path, self.to_text().as_bytes(), 0o600).map_err(|e| {
            PasswdError::Io {
                path: e.path,
                source: e.source,
            }
        })
    }

    /// Recomputes `dummy_iterations`: the most common count, ties going to the
    /// larger one (erring towards the slower side). O(n log n), run only on edits.
    fn update_dummy(&mut self) {
        let mut counts: Vec<NonZeroU32> = self.entries.values().map(|e| e.iterations).collect();
        counts.sort_unstable();
        let mut best: Option<(usize, NonZeroU32)> = None;
        for run in counts.chunk_by(|a, b| a == b) {
            // Runs are in ascending order, so `>=` lets a later (larger) count win
            // a tie.
            let longest = best.is_none_or(|(len, _)| run.len() >= len);
            if let (true, Some(&value)) = (longest, run.first()) {
                best = Some((run.len(), value));
            }
        }
        self.dummy_iterations = best.map(|(_, value)| value);
    }
}

/// `DEFAULT_ITERATIONS` as the type `pbkdf2` wants.
const DEFAULT_NONZERO: NonZeroU32 = match NonZeroU32::new(DEFAULT_ITERATIONS) {
    Some(n) => n,
    None => panic!("DEFAULT_ITERATIONS must not be 0"),
};

/// Runs `switchboard passwd FILE USER [--password P] [--delete]` and returns the
/// one-line message to print, e.g. `added alice to /etc/switchboard/passwd`.
///
/// This is the whole command, so the CLI only parses flags, passes the process's
/// locked standard input, and prints the result or the error. `FILE` is created if
/// missing. With `delete`, `USER` is removed. Otherwise the password is `password`
/// if given, else one line read from `stdin` (its trailing `\n` or `\r\n`
/// stripped, nothing else), and `USER` is added or replaced with
/// [`DEFAULT_ITERATIONS`]. The file is written with [`PasswordFile::save`], so it
/// ends up readable by its owner only.
///
/// # Errors
///
/// [`PasswdError::BadUserName`]; anything [`PasswordFile::load`] returns other
/// than "not found"; [`PasswdError::NoSuchUser`] when deleting a user that is not
/// there (the file is then not written); [`PasswdError::Stdin`] or
/// [`PasswdError::EmptyPassword`] (also for end of input before any line); and
/// whatever [`PasswordFile::set`] and [`PasswordFile::save`] return.
pub fn run_command(
    file: &Path,
    user: &str,
    password: Option<&str>,
    delete: bool,
    stdin: &mut dyn io::BufRead,
) -> Result<String, PasswdError> {
    run_command_with(file, user, password, delete, stdin, DEFAULT_ITERATIONS)
}

/// [`run_command`] with the iteration count as a parameter, so tests can be fast.
fn run_command_with(
    file: &Path,
    user: &str,
    password: Option<&str>,
    delete: bool,
    stdin: &mut dyn io::BufRead,
    iterations: u32,
) -> Result<String, PasswdError> {
    if !valid_user_name(user) {
        return Err(PasswdError::BadUserName);
    }
    let mut passwords = match PasswordFile::load(file) {
        Ok(loaded) => loaded,
        Err(PasswdError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            PasswordFile::default()
        }
        Err(e) => return Err(e),
    };
    let shown = file.display();
    if delete {
        if !passwords.remove(user) {
            return Err(PasswdError::NoSuchUser {
                path: file.to_path_buf(),
                user: user.to_owned(),
            });
        }
        passwords.save(file)?;
        return Ok(format!("deleted {user} from {shown}"));
    }
    let read;
    let password = match password {
        Some(p) => p,
        None => {
            read = read_password_line(stdin)?;
            read.as_str()
        }
    };
    let existed = passwords.contains(user);
    passwords.set(user, password.as_bytes(), iterations)?;
    passwords.save(file)?;
    Ok(if existed {
        format!("replaced {user} in {shown}")
    } else {
        format!("added {user} to {shown}")
    })
}

/// Reads one line and strips exactly one trailing `\n` or `\r\n`: spaces and other
/// characters are part of the password.
fn read_password_line(stdin: &mut dyn io::BufRead) -> Result<String, PasswdError> {
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(PasswdError::Stdin)?;
    if let Some(rest) = line.strip_suffix('\n') {
        let rest = rest.strip_suffix('\r').unwrap_or(rest);
        line.truncate(rest.len());
    }
    if line.is_empty() {
        return Err(PasswdError::EmptyPassword);
    }
    Ok(line)
}

/// Parses one non-blank, non-comment line; the error is the `Parse` reason.
fn parse_line(line: &str) -> Result<Entry, &'static str> {
    let mut fields = line.split(':');
    let (Some(name), Some(scheme), Some(iterations), Some(salt), Some(hash), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err("expected user:pbkdf2-sha256:iterations:salt:hash");
    };
    if !valid_user_name(name) {
        return Err("bad user name");
    }
    if scheme != SCHEME {
        return Err("unknown hash scheme (expected pbkdf2-sha256)");
    }
    // `u32::from_str` alone would also take a leading `+`.
    let iterations = if iterations.bytes().all(|b| b.is_ascii_digit()) {
        iterations.parse().ok().and_then(checked_iterations)
    } else {
        None
    }
    .ok_or("bad iteration count")?;
    let salt = decode_hex(salt).ok_or("bad salt (expected 32 hex digits)")?;
    let hash = decode_hex(hash).ok_or("bad hash (expected 64 hex digits)")?;
    Ok(Entry {
        name: name.to_owned(),
        iterations,
        salt,
        hash,
    })
}

/// `Some` for `1..=MAX_ITERATIONS`.
fn checked_iterations(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n).filter(|n| n.get() <= MAX_ITERATIONS)
}

/// 1 to 64 of `A-Z a-z 0-9 . _ -` (protocol.md section 3).
fn valid_user_name(name: &str) -> bool {
    (1..=MAX_USER_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Appends `bytes` as lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        // Both indices are < 16: a nibble cannot be out of range.
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Decodes exactly `2 * N` hex digits (either case); `None` for anything else.
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (hex_value(*hi)? << 4) | hex_value(*lo)?;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// Small, so the tests are fast; the format and logic do not depend on it.
    const FAST: u32 = 1000;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "switchboard-passwd-test-{}-{n}-{nanos}",
                std::process::id()
            ));
            fs::create_dir(&dir).expect("create temp dir");
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `run_command` at the test iteration count.
    fn run(
        file: &Path,
        user: &str,
        password: Option<&str>,
        delete: bool,
        stdin: &mut dyn io::BufRead,
    ) -> Result<String, PasswdError> {
        run_command_with(file, user, password, delete, stdin, FAST)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn parse_error(text: &str) -> (usize, &'static str) {
        match PasswordFile::parse(text) {
            Err(PasswdError::Parse {
                path: None,
                line,
                reason,
            }) => (line, reason),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    const SALT: &str = "00112233445566778899aabbccddeeff";
    const HASH: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn round_trip_set_save_load_verify() {
        let dir = TempDir::new();
        let path = dir.path("passwd");
        let mut file = PasswordFile::default();
        file.set("alice", b"correct horse", FAST).unwrap();
        file.set("bob", b"battery staple", FAST).unwrap();
        file.save(&path).unwrap();

        let loaded = PasswordFile::load(&path).unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded.verify("alice", b"correct horse"));
        assert!(loaded.verify("bob", b"battery staple"));
        assert!(!loaded.verify("alice", b"battery staple"));
        assert_eq!(loaded.to_text(), file.to_text());

        // No clear-text password in the file, and the format is as documented.
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse"));
        let line = text.lines().find(|l| l.starts_with("alice:")).unwrap();
        let fields: Vec<&str> = line.split(':').collect();
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[1], "pbkdf2-sha256");
        assert_eq!(fields[2], "1000");
        assert_eq!(fields[3].len(), 32);
        assert_eq!(fields[4].len(), 64);
        assert!(fields[3..].iter().all(|f| {
            f.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }));
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn salts_differ_for_equal_passwords() {
        let mut file = PasswordFile::default();
        file.set("a", b"same", FAST).unwrap();
        file.set("b", b"same", FAST).unwrap();
        let text = file.to_text();
        let hashes: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_once(':').unwrap().1)
            .collect();
        assert_eq!(hashes.len(), 2);
        assert_ne!(hashes[0], hashes[1]);
    }

    #[test]
    fn wrong_password_and_unknown_user_are_false() {
        let mut file = PasswordFile::default();
        file.set("alice", b"secret", FAST).unwrap();
        assert!(!file.verify("alice", b"Secret"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("mallory", b"secret"));
        assert!(!file.verify("", b"secret"));
        assert!(!file.verify("not a name", b"secret"));
        assert!(!PasswordFile::default().verify("alice", b"secret"));
    }

    #[test]
    fn user_names_are_case_insensitive() {
        let mut file = PasswordFile::default();
        file.set("Alice", b"secret", FAST).unwrap();
        assert!(file.verify("alice", b"secret"));
        assert!(file.verify("ALICE", b"secret"));
        assert!(file.contains("aLiCe"));
        // Kept as spelled.
        assert!(file.to_text().contains("\nAlice:"));
    }

    #[test]
    fn replace_keeps_one_entry() {
        let mut file = PasswordFile::default();
        file.set("alice", b"old", FAST).unwrap();
        file.set("ALICE", b"new", FAST).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", b"new"));
        assert!(!file.verify("alice", b"old"));
        assert!(file.to_text().contains("\nALICE:"));
    }

    #[test]
    fn remove_entry() {
        let mut file = PasswordFile::default();
        file.set("alice", b"secret", FAST).unwrap();
        assert!(file.remove("ALICE"));
        assert!(!file.remove("alice"));
        assert!(file.is_empty());
        assert!(!file.verify("alice", b"secret"));
    }

    #[test]
    fn set_rejects_bad_input() {
        let mut file = PasswordFile::default();
        let long = "a".repeat(65);
        for name in ["", "a b", "al:ice", "é", long.as_str()] {
            assert!(matches!(
                file.set(name, b"pw", FAST),
                Err(PasswdError::BadUserName)
            ));
        }
        file.set(&"a".repeat(64), b"pw", FAST).unwrap();
        file.set("A-Z_a.z-09", b"pw", FAST).unwrap();
        assert!(matches!(
            file.set("alice", b"", FAST),
            Err(PasswdError::EmptyPassword)
        ));
        assert!(matches!(
            file.set("alice", b"pw", 0),
            Err(PasswdError::BadIterations)
        ));
        assert!(matches!(
            file.set("alice", b"pw", MAX_ITERATIONS + 1),
            Err(PasswdError::BadIterations)
        ));
        assert_eq!(file.len(), 2);
    }

    #[test]
    fn save_makes_mode_0600_even_over_a_wider_file() {
        let dir = TempDir::new();
        let path = dir.path("passwd");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let mut file = PasswordFile::default();
        file.set("alice", b"secret", FAST).unwrap();
        file.save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn save_to_missing_directory_names_the_file() {
        let dir = TempDir::new();
        let path = dir.path("missing").join("passwd");
        let err = PasswordFile::default().save(&path).unwrap_err();
        assert!(matches!(err, PasswdError::Io { .. }));
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn parse_skips_blank_lines_and_comments() {
        let text = format!(
            "# header\n\n   \n  # indented comment\r\nalice:pbkdf2-sha256:1000:{SALT}:{HASH}\r\n\
             Bob:pbkdf2-sha256:2000:{}:{}\n",
            SALT.to_uppercase(),
            HASH.to_uppercase()
        );
        let file = PasswordFile::parse(&text).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.contains("alice"));
        assert!(file.contains("bob"));
        // Written back in lowercase hex.
        assert!(
            file.to_text()
                .contains(&format!("Bob:pbkdf2-sha256:2000:{SALT}:{HASH}\n"))
        );
        assert_eq!(
            PasswordFile::parse(&file.to_text()).unwrap().to_text(),
            file.to_text()
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let good = format!("alice:pbkdf2-sha256:1000:{SALT}:{HASH}");
        let cases = [
            ("alice:pbkdf2-sha256:1000:00".to_owned(), "expected user"),
            (format!("{good}:extra"), "expected user"),
            ("just text".to_owned(), "expected user"),
            (
                format!("a b:pbkdf2-sha256:1000:{SALT}:{HASH}"),
                "bad user name",
            ),
            (
                format!(":pbkdf2-sha256:1000:{SALT}:{HASH}"),
                "bad user name",
            ),
            (format!("bob:md5:1000:{SALT}:{HASH}"), "unknown hash scheme"),
            (
                format!("bob:pbkdf2-sha256:0:{SALT}:{HASH}"),
                "bad iteration count",
            ),
            (
                format!("bob:pbkdf2-sha256:+5:{SALT}:{HASH}"),
                "bad iteration count",
            ),
            (
                format!("bob:pbkdf2-sha256:-5:{SALT}:{HASH}"),
                "bad iteration count",
            ),
            (
                format!("bob:pbkdf2-sha256::{SALT}:{HASH}"),
                "bad iteration count",
            ),
            (
                format!("bob:pbkdf2-sha256:99999999999:{SALT}:{HASH}"),
                "bad iteration count",
            ),
            (
                format!("bob:pbkdf2-sha256:{}:{SALT}:{HASH}", MAX_ITERATIONS + 1),
                "bad iteration count",
            ),
            (format!("bob:pbkdf2-sha256:1000:0011:{HASH}"), "bad salt"),
            (
                format!("bob:pbkdf2-sha256:1000:{}:{HASH}", "zz".repeat(16)),
                "bad salt",
            ),
            (
                format!("bob:pbkdf2-sha256:1000:{}:{HASH}", "é".repeat(16)),
                "bad salt",
            ),
            (format!("bob:pbkdf2-sha256:1000:{SALT}:{SALT}"), "bad hash"),
            (
                format!("ALICE:pbkdf2-sha256:1000:{SALT}:{HASH}"),
                "duplicate user",
            ),
        ];
        for (bad, expected) in cases {
            let text = format!("# comment\n{good}\n\n{bad}\n");
            let (line, reason) = parse_error(&text);
            assert_eq!(line, 4, "{bad}");
            assert!(reason.starts_with(expected), "{bad}: {reason}");
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = TempDir::new();
        let path = dir.path("passwd");
        fs::write(&path, "# ok\n\nalice:pbkdf2-sha256:x:00:00\n").unwrap();
        let err = PasswordFile::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "password file {}: line 3: bad iteration count",
                path.display()
            )
        );
        assert!(matches!(err, PasswdError::Parse { path: Some(ref p), line: 3, .. } if *p == path));

        fs::write(&path, b"# ok\n# \xff\n").unwrap();
        let err = PasswordFile::load(&path).unwrap_err();
        assert!(matches!(
            err,
            PasswdError::Parse {
                line: 2,
                reason: "not valid UTF-8",
                ..
            }
        ));

        let missing = dir.path("nope");
        match PasswordFile::load(&missing).unwrap_err() {
            PasswdError::Io { path, source } => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shareable_with_verify_workers() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PasswordFile>();
        assert_send_sync::<PasswdError>();
    }

    #[test]
    fn debug_does_not_show_hashes() {
        let text = format!("alice:pbkdf2-sha256:1000:{SALT}:{HASH}\n");
        let file = PasswordFile::parse(&text).unwrap();
        let debug = format!("{file:?}");
        assert!(debug.contains("alice"));
        assert!(
            !debug.contains("00112233") && !debug.contains("0, 17, 34"),
            "{debug}"
        );
    }

    #[test]
    fn dummy_uses_the_most_common_count() {
        let mut file = PasswordFile::default();
        assert_eq!(file.dummy_iterations, None);
        file.set("a", b"pw", 1000).unwrap();
        file.set("b", b"pw", 1000).unwrap();
        file.set("c", b"pw", 2000).unwrap();
        assert_eq!(file.dummy_iterations.map(NonZeroU32::get), Some(1000));
        file.remove("a");
        // Tie: the larger count.
        assert_eq!(file.dummy_iterations.map(NonZeroU32::get), Some(2000));
    }

    #[test]
    fn run_command_adds_replaces_and_deletes() {
        let dir = TempDir::new();
        let path = dir.path("passwd");
        let shown = path.display().to_string();
        let mut no_input = Cursor::new(Vec::new());

        let mut stdin = Cursor::new(b"pass word\r\nsecond line\n".to_vec());
        let msg = run(&path, "alice", None, false, &mut stdin).unwrap();
        assert_eq!(msg, format!("added alice to {shown}"));
        assert_eq!(mode(&path), 0o600);
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.verify("alice", b"pass word"));

        let msg = run(&path, "Alice", Some("new"), false, &mut no_input).unwrap();
        assert_eq!(msg, format!("replaced Alice in {shown}"));
        let mut stdin = Cursor::new(b"bobs".to_vec()); // no trailing newline
        run(&path, "bob", None, false, &mut stdin).unwrap();
        let file = PasswordFile::load(&path).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.verify("alice", b"new"));
        assert!(file.verify("bob", b"bobs"));

        let msg = run(&path, "ALICE", None, true, &mut no_input).unwrap();
        assert_eq!(msg, format!("deleted ALICE from {shown}"));
        let file = PasswordFile::load(&path).unwrap();
        assert!(!file.contains("alice"));
        assert!(file.contains("bob"));
    }

    #[test]
    fn run_command_uses_default_iterations() {
        let dir = TempDir::new();
        let path = dir.path("passwd");
        let mut eof = Cursor::new(Vec::new());
        run_command(&path, "carol", Some("pw"), false, &mut eof).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("\ncarol:pbkdf2-sha256:{DEFAULT_ITERATIONS}:")));
        run_command(&path, "carol", None, true, &mut eof).unwrap();
        assert!(PasswordFile::load(&path).unwrap().is_empty());
    }

    #[test]
    fn run_command_errors() {
        let dir = TempDir::new();
        let path = dir.path("passwd");
        let mut empty_line = Cursor::new(b"\n".to_vec());
        let mut eof = Cursor::new(Vec::new());

        assert!(matches!(
            run(&path, "alice", None, false, &mut empty_line),
            Err(PasswdError::EmptyPassword)
        ));
        assert!(matches!(
            run(&path, "alice", None, false, &mut eof),
            Err(PasswdError::EmptyPassword)
        ));
        assert!(matches!(
            run(&path, "alice", Some(""), false, &mut eof),
            Err(PasswdError::EmptyPassword)
        ));
        assert!(matches!(
            run(&path, "bad name", Some("pw"), false, &mut eof),
            Err(PasswdError::BadUserName)
        ));
        let err = run(&path, "alice", None, true, &mut eof).unwrap_err();
        assert!(matches!(err, PasswdError::NoSuchUser { .. }));
        assert_eq!(
            err.to_string(),
            format!("password file {}: no user alice", path.display())
        );
        // None of the failures created the file.
        assert!(!path.exists());

        // A malformed existing file is reported, not overwritten.
        fs::write(&path, "garbage\n").unwrap();
        assert!(matches!(
            run(&path, "alice", Some("pw"), false, &mut eof),
            Err(PasswdError::Parse { line: 1, .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage\n");
    }

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 4] = [0x00, 0x7f, 0x80, 0xff];
        let mut text = String::new();
        push_hex(&mut text, &bytes);
        assert_eq!(text, "007f80ff");
        assert_eq!(decode_hex::<4>("007F80fF"), Some(bytes));
        assert_eq!(decode_hex::<4>("007f80f"), None);
        assert_eq!(decode_hex::<4>("007f80fg"), None);
        assert_eq!(decode_hex::<2>("é1"), None);
    }

    /// Times `verify` at `DEFAULT_ITERATIONS` (known user, wrong password, unknown
    /// user). Run with
    /// `cargo test --release --lib passwd -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing measurement; meaningful only in --release"]
    fn measure_default_iterations() {
        let mut file = PasswordFile::default();
        file.set("alice", b"secret", DEFAULT_ITERATIONS).unwrap();
        let rounds: u32 = 20;
        for (label, user, password) in [
            ("known user, right password", "alice", &b"secret"[..]),
            ("known user, wrong password", "alice", &b"wrong"[..]),
            ("unknown user", "mallory", &b"secret"[..]),
        ] {
            let start = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(file.verify(user, password));
            }
            let per = start.elapsed() / rounds;
            println!(
                "verify at {DEFAULT_ITERATIONS} iterations, {label}: {:.1} ms",
                per.as_secs_f64() * 1000.0
            );
        }
    }
}
