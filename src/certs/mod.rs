//! Certificates and keys: loading them for TLS, and making development ones.
//!
//! Where they come from:
//!
//! - `serve --cert FILE --key FILE`: the operator's own PEM chain (leaf first)
//!   and private key (PKCS#8, SEC1 or PKCS#1). [`load_certs`], [`load_key`] and
//!   [`check_key_matches`] read and check them before the server starts, so a
//!   bad file stops the start with one line naming the file.
//! - `serve` with neither: [`ensure_dev_certs`] makes (or reuses) a development
//!   CA and a `localhost` server certificate in `./certs/`; clients trust
//!   `certs/ca.pem`.
//! - `switchboard certs DIR [--client NAME]... [--force]`: [`generate`] writes
//!   that CA, the server certificate and one client certificate per `--client`
//!   (for `--auth cert`, where the subject CN is the user name).
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
//! - [`CertError::NotAKey`]: the file has no unencrypted private key block
//!   (`PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`), or one that the
//!   crypto provider cannot use. Encrypted keys are not supported.
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
mod load;
mod subject;
#[cfg(test)]
mod test_util;

pub use crate::conn::PeerIdentity;
pub use dev::{DevCerts, ensure_dev_certs, generate, issue_client_cert};
pub use load::{CertError, check_key_matches, load_certs, load_key, load_roots};
pub use subject::subject_of;
