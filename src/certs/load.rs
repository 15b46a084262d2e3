//! Loading PEM certificates, keys and CA bundles, and [`CertError`], whose
//! one-line `Display` is the whole message of a failed start.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;

use super::encrypted::{decrypt, encrypted_block, is_legacy_encrypted};

/// Why a certificate or key could not be loaded, checked or made.
///
/// `Display` is one line naming the file and what is wrong, fit to be the
/// whole message of a failed start.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertError {
    /// The file does not exist.
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, ...).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// No PEM CERTIFICATE block, or a block that is not valid X.509 DER.
    NotACertificate {
        /// The file.
        path: PathBuf,
    },
    /// No PKCS#8, SEC1 or PKCS#1 private key block, or one that cannot be used.
    NotAKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is password-protected and no password was given.
    KeyEncrypted {
        /// The key file.
        path: PathBuf,
    },
    /// The password given does not decrypt the key.
    KeyPassword {
        /// The key file.
        path: PathBuf,
    },
    /// The key is encrypted in a way that is not supported (PBES1, OpenSSL's
    /// legacy PEM encryption, an unknown cipher), or its encrypted block is
    /// damaged.
    KeyEncryption {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A key password file whose first line is empty.
    EmptyPassword {
        /// The password file.
        path: PathBuf,
    },
    /// The key does not belong to the first (leaf) certificate.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// `switchboard certs` refuses to overwrite this file without `--force`.
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Certificate generation failed (or a client name is invalid).
    Generate(String),
    /// A certificate given to [`subject_of`](super::subject_of) is not valid DER.
    Parse(String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { path } => write!(f, "file {} does not exist", path.display()),
            Self::Unreadable { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            Self::NotACertificate { path } => write!(
                f,
                "certificate file {}: no valid PEM CERTIFICATE block found",
                path.display()
            ),
            Self::NotAKey { path } => write!(
                f,
                "key file {}: no usable PEM private key found \
                 (PRIVATE KEY, ENCRYPTED PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)",
                path.display()
            ),
            Self::KeyEncrypted { path } => write!(
                f,
                "key file {} is encrypted: give its password with --key-password-file FILE \
                 (or type it at the prompt when on a terminal)",
                path.display()
            ),
            Self::KeyPassword { path } => write!(
                f,
                "key file {}: wrong password (the key does not decrypt with it)",
                path.display()
            ),
            Self::KeyEncryption { path, why } => write!(
                f,
                "key file {}: {why}; re-encrypt it as PKCS#8 with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256`",
                path.display()
            ),
            Self::EmptyPassword { path } => write!(
                f,
                "password file {} is empty (the password is its first line)",
                path.display()
            ),
            Self::KeyMismatch { cert, key } => write!(
                f,
                "key file {} does not match certificate {}",
                key.display(),
                cert.display()
            ),
            Self::Exists { path } => write!(
                f,
                "{} already exists (nothing written; use --force to overwrite)",
                path.display()
            ),
            Self::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            Self::Generate(why) => write!(f, "cannot generate certificate: {why}"),
            Self::Parse(why) => write!(f, "cannot parse certificate: {why}"),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { source, .. } | Self::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e.to_string())
    }
}

/// Reads a whole file, telling a missing file from an unreadable one.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CertError::Missing {
            path: path.to_owned(),
        },
        _ => CertError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })
}

/// Parses DER as one X.509 certificate with nothing after it.
pub(super) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} bytes after the certificate", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// The certificates of PEM text, in order, each checked to be X.509.
/// `None` if there is none, a PEM syntax error, or a block that is not X.509.
pub(super) fn certs_from_pem(pem_bytes: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .ok()?;
    let valid = !certs.is_empty() && certs.iter().all(|c| parse_x509(c).is_ok());
    valid.then_some(certs)
}

/// Loads a PEM certificate chain, leaf first (`--cert`, `--client-ca`, `--ca`).
///
/// Other PEM blocks (a key in the same file, say) are ignored.
///
/// # Errors
///
/// [`CertError::Missing`], [`CertError::Unreadable`], or
/// [`CertError::NotACertificate`] if the file has no CERTIFICATE block, bad PEM
/// syntax, or a block that is not a valid X.509 certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let data = read_file(path)?;
    certs_from_pem(&data).ok_or_else(|| CertError::NotACertificate {
        path: path.to_owned(),
    })
}

/// Loads the first unencrypted PEM private key of a file: PKCS#8
/// (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
///
/// The key is not checked to be usable here; [`check_key_matches`] does that.
///
/// # Errors
///
/// [`CertError::Missing`], [`CertError::Unreadable`],
/// [`CertError::KeyEncrypted`] for a password-protected key (see
/// [`load_key_with_password`]), or [`CertError::NotAKey`] if there is no key
/// block (a certificate given as the key, say).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    load_key_with_password(path, None)
}

/// Like [`load_key`], and a password-protected PKCS#8 key (`ENCRYPTED PRIVATE
/// KEY`, PBES2) is decrypted with `password`. An unencrypted key in the file
/// is used as it is, whatever `password` is.
///
/// # Errors
///
/// Those of [`load_key`], and for an encrypted key: [`CertError::KeyEncrypted`]
/// if `password` is `None`, [`CertError::KeyPassword`] if it is wrong,
/// [`CertError::KeyEncryption`] for an encryption that is not supported
/// (PBES1, OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` PEM, HMAC-SHA-1) or a
/// damaged block.
pub fn load_key_with_password(
    path: &Path,
    password: Option<&[u8]>,
) -> Result<PrivateKeyDer<'static>, CertError> {
    let data = read_file(path)?;
    if let Ok(key) = PrivateKeyDer::from_pem_slice(&data) {
        return Ok(key);
    }
    let encrypted = |why: &str| CertError::KeyEncryption {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    match encrypted_block(&data) {
        Some(Ok(der)) => match password {
            Some(password) => decrypt(&der, password, path),
            None => Err(CertError::KeyEncrypted {
                path: path.to_owned(),
            }),
        },
        Some(Err(why)) => Err(encrypted(&format!("encrypted private key: {why}"))),
        None if is_legacy_encrypted(&data) => Err(encrypted(
            "OpenSSL's legacy PEM encryption (Proc-Type: 4,ENCRYPTED) is not supported",
        )),
        None => Err(CertError::NotAKey {
            path: path.to_owned(),
        }),
    }
}

/// Checks that `key` is usable by the ring provider and belongs to the first
/// certificate of `certs`. The paths are only for the error.
///
/// # Errors
///
/// [`CertError::NotACertificate`] (`cert_path`) if `certs` is empty or its
/// first certificate is rejected by rustls; [`CertError::NotAKey`] (`key_path`)
/// if the provider cannot load the key (an unsupported algorithm or curve, or
/// a damaged key); [`CertError::KeyMismatch`] if the public keys differ.
pub fn check_key_matches(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), CertError> {
    use rustls::{Error as TlsError, InconsistentKeys};

    let not_a_cert = || CertError::NotACertificate {
        path: cert_path.to_owned(),
    };
    if certs.is_empty() {
        return Err(not_a_cert());
    }
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| CertError::NotAKey {
            path: key_path.to_owned(),
        })?;
    let certified = rustls::sign::CertifiedKey::new(certs.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(TlsError::InconsistentKeys(_)) => {
            // The key cannot report its public key: nothing to compare.
            log::warn!(
                "cannot check that key {} matches certificate {}",
                key_path.display(),
                cert_path.display()
            );
            Ok(())
        }
        Err(_) => Err(not_a_cert()),
    }
}

/// Loads a PEM CA bundle as trust anchors (`--client-ca`, clients' `--ca`).
///
/// Certificates that cannot be trust anchors are skipped with a warning.
///
/// # Errors
///
/// As [`load_certs`], and [`CertError::NotACertificate`] if no certificate
/// could be added.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in load_certs(path)?.into_iter().enumerate() {
        if let Err(e) = roots.add(cert) {
            log::warn!(
                "{}: certificate {} skipped as a trust anchor: {e}",
                path.display(),
                i + 1
            );
        }
    }
    if roots.is_empty() {
        return Err(CertError::NotACertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::certs::test_util::{TempDir, clients, first_cert, openssl, openssl_self_sign};
    use crate::certs::{DevCerts, PeerIdentity, generate};

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let dir = TempDir::new("mismatch");
        generate(dir.path(), &clients(&["alice"]), false).unwrap();
        let paths = DevCerts::in_dir(dir.path());
        let certs = load_certs(&paths.server_cert).unwrap();
        let alice_key = dir.path().join("alice.key");
        let key = load_key(&alice_key).unwrap();
        let err = check_key_matches(&certs, &key, &paths.server_cert, &alice_key).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("alice.key") && msg.contains("server.pem"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        assert!(matches!(
            check_key_matches(&[], &key, &paths.server_cert, &alice_key),
            Err(CertError::NotACertificate { .. })
        ));
    }

    #[test]
    fn missing_unreadable_and_wrong_files() {
        let dir = TempDir::new("wrong");
        let missing = dir.path().join("nope.pem");
        let err = load_certs(&missing).unwrap_err();
        assert!(matches!(err, CertError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.pem"));
        assert!(matches!(load_key(&missing), Err(CertError::Missing { .. })));
        assert!(matches!(
            load_roots(&missing),
            Err(CertError::Missing { .. })
        ));

        // A directory cannot be read as a file.
        let err = load_certs(dir.path()).unwrap_err();
        assert!(matches!(err, CertError::Unreadable { .. }), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());

        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, b"\x00\x01 this is not PEM at all\n").unwrap();
        let err = load_certs(&garbage).unwrap_err();
        assert!(matches!(err, CertError::NotACertificate { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "certificate file {}: no valid PEM CERTIFICATE block found",
                garbage.display()
            )
        );
        assert!(matches!(load_key(&garbage), Err(CertError::NotAKey { .. })));
        assert!(matches!(
            load_roots(&garbage),
            Err(CertError::NotACertificate { .. })
        ));

        // A CERTIFICATE block whose content is not X.509.
        let bogus = dir.path().join("bogus.pem");
        fs::write(
            &bogus,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            load_certs(&bogus),
            Err(CertError::NotACertificate { .. })
        ));

        generate(dir.path(), &[], false).unwrap();
        let paths = DevCerts::in_dir(dir.path());
        // A key given as the certificate.
        let err = load_certs(&paths.server_key).unwrap_err();
        assert!(matches!(err, CertError::NotACertificate { .. }), "{err:?}");
        // A certificate given as the key.
        let err = load_key(&paths.server_cert).unwrap_err();
        assert!(matches!(err, CertError::NotAKey { .. }), "{err:?}");
        assert!(err.to_string().starts_with("key file "));

        // A chain file: leaf first, both kept; a key in the same file ignored.
        let chain = dir.path().join("chain.pem");
        let mut text = fs::read_to_string(&paths.server_cert).unwrap();
        text += &fs::read_to_string(&paths.server_key).unwrap();
        text += &fs::read_to_string(&paths.ca_cert).unwrap();
        fs::write(&chain, text).unwrap();
        let certs = load_certs(&chain).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], first_cert(&paths.server_cert));
        let key = load_key(&chain).unwrap();
        check_key_matches(&certs, &key, &chain, &chain).unwrap();
    }

    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_load() {
        let dir = TempDir::new("keyformats");
        let rsa_key = dir.path().join("rsa.key");
        let rsa_cert = dir.path().join("rsa.pem");
        let rsa_key_s = rsa_key.to_str().unwrap();
        if !openssl(&["genrsa", "-traditional", "-out", rsa_key_s, "2048"]) {
            return;
        }
        assert!(
            fs::read_to_string(&rsa_key)
                .unwrap()
                .contains("BEGIN RSA PRIVATE KEY")
        );
        let key = load_key(&rsa_key).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs1(_)));
        assert!(openssl_self_sign(rsa_key_s, "/CN=rsa", &rsa_cert));
        check_key_matches(&load_certs(&rsa_cert).unwrap(), &key, &rsa_cert, &rsa_key).unwrap();

        let ec_key = dir.path().join("ec.key");
        let ec_cert = dir.path().join("ec.pem");
        let ec_key_s = ec_key.to_str().unwrap();
        assert!(openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            ec_key_s
        ]));
        assert!(
            fs::read_to_string(&ec_key)
                .unwrap()
                .contains("BEGIN EC PRIVATE KEY")
        );
        let key = load_key(&ec_key).unwrap();
        assert!(matches!(key, PrivateKeyDer::Sec1(_)));
        assert!(openssl_self_sign(ec_key_s, "/CN=ec", &ec_cert));
        check_key_matches(&load_certs(&ec_cert).unwrap(), &key, &ec_cert, &ec_key).unwrap();
        // And across formats: the RSA key does not match the EC certificate.
        let rsa = load_key(&rsa_key).unwrap();
        assert!(matches!(
            check_key_matches(&load_certs(&ec_cert).unwrap(), &rsa, &ec_cert, &rsa_key),
            Err(CertError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn display_is_one_line() {
        let p = PathBuf::from("certs/server.pem");
        let errors = [
            CertError::Missing { path: p.clone() },
            CertError::Unreadable {
                path: p.clone(),
                source: io::Error::other("denied"),
            },
            CertError::NotACertificate { path: p.clone() },
            CertError::NotAKey { path: p.clone() },
            CertError::KeyMismatch {
                cert: p.clone(),
                key: p.clone(),
            },
            CertError::Exists { path: p.clone() },
            CertError::KeyEncrypted { path: p.clone() },
            CertError::KeyPassword { path: p.clone() },
            CertError::KeyEncryption {
                path: p.clone(),
                why: "PBES1".into(),
            },
            CertError::EmptyPassword { path: p.clone() },
            CertError::Write {
                path: p.clone(),
                source: io::Error::other("full"),
            },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.contains("certs/server.pem") && !s.contains('\n'), "{s}");
        }
        assert_eq!(
            CertError::NotACertificate { path: p }.to_string(),
            "certificate file certs/server.pem: no valid PEM CERTIFICATE block found"
        );
        assert_eq!(PeerIdentity::default().to_string(), "");
    }
}
