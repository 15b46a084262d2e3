//! Certificates and keys: loading them for TLS, and making development ones.
//!
//! Where they come from:
//!
//! - `serve --cert FILE --key FILE`: the operator's own PEM chain (leaf first)
//!   and private key (PKCS#8, SEC1 or PKCS#1). [`load_certs`], [`load_key`] and
//!   [`check_key_matches`] read and check them before the server starts, so a
//!   bad file stops the start with one line naming the file.
//! - `--key-password-file FILE` (or a prompt): a password-protected PKCS#8 key
//!   (`ENCRYPTED PRIVATE KEY`, PBES2) is decrypted by
//!   [`load_key_with_password`] with the first line of [`read_password_file`];
//!   [`is_encrypted_key`] tells whether to ask for one.
//! - `serve` with neither: [`ensure_dev_certs`] makes (or reuses) a development
//!   CA and a `localhost` server certificate in `./certs/`; clients trust
//!   `certs/ca.pem`. When `./certs` cannot be written, `serve` uses
//!   [`user_certs_dir`] instead (`~/.local/share/switchboard/certs`).
//! - `switchboard certs DIR [--client NAME]... [--force]
//!   [--key-password-file FILE]`: [`generate`] writes that CA, the server
//!   certificate and one client certificate per `--client` (for `--auth cert`,
//!   where the subject CN is the user name); [`generate_with_password`] writes
//!   every key encrypted ([`encrypt_key`]).
//! - `--client-ca FILE` (server) and `--ca FILE` (clients): [`load_roots`].
//! - `--auth cert` and the embedding API: [`subject_of`] reads the subject of a
//!   verified client certificate.
//!
//! What each [`CertError`] means to an operator:
//!
//! - [`CertError::Missing`]: the path is wrong (relative paths are relative to
//!   the server's working directory).
//! - [`CertError::Unreadable`]: the file exists but cannot be read (permissions,
//!   a directory, ...); the OS error says which.
//! - [`CertError::NotACertificate`]: the file has no `-----BEGIN CERTIFICATE-----`
//!   block (a key or a DER file was given instead), or a block that is not a
//!   valid X.509 certificate (truncated or edited).
//! - [`CertError::NotAKey`]: the file has no private key block (`PRIVATE KEY`,
//!   `ENCRYPTED PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`), or one
//!   that the crypto provider cannot use.
//! - [`CertError::KeyEncrypted`]: the key is password-protected and no password
//!   was given (`--key-password-file FILE`, or the prompt on a terminal).
//! - [`CertError::KeyPassword`]: the password does not decrypt the key.
//! - [`CertError::KeyEncryption`]: an encryption that is not supported (PBES1,
//!   OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` PEM, PBKDF2 with HMAC-SHA-1) or
//!   a damaged encrypted block; `openssl pkcs8 -topk8 -v2 aes-256-cbc`
//!   re-encrypts it in a supported form.
//! - [`CertError::EmptyPassword`]: the password file's first line is empty.
//! - [`CertError::KeyMismatch`]: `--cert` and `--key` are from different pairs.
//! - [`CertError::Exists`]: `switchboard certs` would overwrite a file; nothing
//!   was written. Use `--force`, or another directory.
//! - [`CertError::Write`]: a file or the directory could not be written.
//! - [`CertError::Generate`]: certificate generation failed, or a `--client`
//!   name is not a valid user name.
//! - [`CertError::Parse`]: a certificate handed to [`subject_of`] is not valid DER.
//!
//! Development certificates use ECDSA P-256 keys. The CA is valid for 10 years,
//! server and client certificates for 825 days (the longest that some TLS
//! clients accept); every certificate is valid from one day in the past, to
//! tolerate clock skew. Private key files are written with mode 0600.

mod dev;
mod encrypted;
mod load;
mod subject;
#[cfg(test)]
mod test_util;

pub use crate::conn::PeerIdentity;
pub use dev::{
    DevCerts, ensure_dev_certs, ensure_dev_certs_with_password, generate, generate_with_password,
    issue_client_cert, user_certs_dir,
};
pub use encrypted::{KEY_ENCRYPTION_ITERATIONS, encrypt_key, is_encrypted_key, read_password_file};
pub use load::{
    CertError, check_key_matches, load_certs, load_key, load_key_with_password, load_roots,
};
pub use subject::subject_of;
