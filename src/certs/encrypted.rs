//! Password-protected private keys: PKCS#8 `ENCRYPTED PRIVATE KEY` (RFC 5958,
//! PBES2 of RFC 8018), decrypted for `serve --key-password-file` and written
//! by `switchboard certs --key-password-file`; and the password file itself.
//!
//! The cryptography is the `pkcs8` crate's (RustCrypto): PBES2 with PBKDF2
//! (HMAC-SHA-224/256/384/512) or scrypt, and AES-128/192/256-CBC, which covers
//! what `openssl genpkey -aes-256-cbc`, `openssl pkcs8 -topk8 -v2 ...` and
//! most other tools write. Not supported, each with its own message: PBES1
//! (`openssl pkcs8 -v1 ...`, DES and RC2 era), PBKDF2 with HMAC-SHA-1 (OpenSSL
//! 1.0's default), and OpenSSL's legacy PEM encryption (`Proc-Type:
//! 4,ENCRYPTED` headers in an `RSA PRIVATE KEY` or `EC PRIVATE KEY` block).

use std::path::Path;

use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo, pkcs5};
use ring::rand::{SecureRandom as _, SystemRandom};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::load::{CertError, read_file};

/// The PEM label of an encrypted PKCS#8 key.
pub(super) const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// PBKDF2-HMAC-SHA256 iterations for keys that `switchboard certs` encrypts:
/// OWASP's 2023 figure for that hash. Decrypting costs this once per start
/// (0.2 s on the development machine); keys from other tools carry their own
/// count (OpenSSL's default is 2,048).
pub const KEY_ENCRYPTION_ITERATIONS: u32 = 600_000;

/// The encrypted PKCS#8 block of PEM text, as DER: `None` if there is none.
///
/// # Errors
///
/// A message if the block is there but its base64 or framing is damaged.
pub(super) fn encrypted_block(pem: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let text = String::from_utf8_lossy(pem);
    let begin = format!("-----BEGIN {ENCRYPTED_LABEL}-----");
    let end = format!("-----END {ENCRYPTED_LABEL}-----");
    let start = text.find(&begin)?;
    let Some(stop) = text[start..].find(&end).map(|i| start + i + end.len()) else {
        return Some(Err(format!("no `{end}` line")));
    };
    let block = &text[start..stop];
    Some(match pkcs8::der::pem::decode_vec(block.as_bytes()) {
        Ok((_, der)) => Ok(der),
        Err(e) => Err(format!("damaged PEM: {e}")),
    })
}

/// Whether PEM text holds a key with OpenSSL's legacy PEM encryption
/// (`Proc-Type: 4,ENCRYPTED`), which is not PKCS#8 and not supported.
pub(super) fn is_legacy_encrypted(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).contains("Proc-Type: 4,ENCRYPTED")
}

/// Whether the key file at `path` is password-protected (an `ENCRYPTED
/// PRIVATE KEY` block, or OpenSSL's legacy PEM encryption) and holds no
/// unencrypted key that [`load_key`](super::load_key) would use instead.
///
/// For deciding whether to ask for a password before
/// [`load_key_with_password`](super::load_key_with_password).
///
/// # Errors
///
/// [`CertError::Missing`] or [`CertError::Unreadable`].
pub fn is_encrypted_key(path: &Path) -> Result<bool, CertError> {
    use rustls::pki_types::pem::PemObject as _;
    let data = read_file(path)?;
    if PrivateKeyDer::from_pem_slice(&data).is_ok() {
        return Ok(false);
    }
    Ok(encrypted_block(&data).is_some() || is_legacy_encrypted(&data))
}

/// Decrypts an `EncryptedPrivateKeyInfo` (DER) with `password`; `path` is
/// only for the error.
pub(super) fn decrypt(
    der: &[u8],
    password: &[u8],
    path: &Path,
) -> Result<PrivateKeyDer<'static>, CertError> {
    let unsupported = |why: String| CertError::KeyEncryption {
        path: path.to_owned(),
        why,
    };
    let info = EncryptedPrivateKeyInfo::try_from(der)
        .map_err(|e| unsupported(format!("not a PKCS#8 encrypted key ({e})")))?;
    let plain = match info.decrypt(password) {
        Ok(doc) => doc,
        Err(pkcs8::Error::EncryptedPrivateKey(e)) => {
            return Err(match e {
                // A wrong password leaves bad padding, which pkcs5 0.7
                // reports as `EncryptFailed` when decrypting.
                pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed => {
                    CertError::KeyPassword {
                        path: path.to_owned(),
                    }
                }
                pkcs5::Error::NoPbes1CryptSupport => {
                    unsupported("PBES1 (`openssl pkcs8 -v1`) is not supported, only PBES2".into())
                }
                other => unsupported(other.to_string()),
            });
        }
        // Decrypted, but not DER: what a wrong password gives when the
        // padding happens to look right.
        Err(_) => {
            return Err(CertError::KeyPassword {
                path: path.to_owned(),
            });
        }
    };
    let bytes = plain.as_bytes();
    if PrivateKeyInfo::try_from(bytes).is_err() {
        return Err(CertError::KeyPassword {
            path: path.to_owned(),
        });
    }
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        bytes.to_vec(),
    )))
}

/// Encrypts a PKCS#8 key (DER) with `password`: PBES2 with PBKDF2-HMAC-SHA256
/// ([`KEY_ENCRYPTION_ITERATIONS`]) and AES-256-CBC, a random salt and IV; the
/// PEM `ENCRYPTED PRIVATE KEY` text, readable by OpenSSL and this module.
///
/// # Errors
///
/// [`CertError::Generate`] if the key is not PKCS#8 or the system random
/// number generator fails.
pub fn encrypt_key(pkcs8_der: &[u8], password: &[u8]) -> Result<String, CertError> {
    let generate = |why: String| CertError::Generate(format!("cannot encrypt the key: {why}"));
    let info = PrivateKeyInfo::try_from(pkcs8_der).map_err(|e| generate(e.to_string()))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    let rng = SystemRandom::new();
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut iv))
        .map_err(|_| generate("the system random number generator failed".into()))?;
    let params =
        pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(KEY_ENCRYPTION_ITERATIONS, &salt, &iv)
            .map_err(|e| generate(e.to_string()))?;
    let doc = info
        .encrypt_with_params(params, password)
        .map_err(|e| generate(e.to_string()))?;
    let pem = doc
        .to_pem(ENCRYPTED_LABEL, LineEnding::LF)
        .map_err(|e| generate(e.to_string()))?;
    Ok(pem.as_str().to_owned())
}

/// Reads a key password from a file: its first line, without the line end
/// (as `openssl ... -pass file:FILE` does).
///
/// # Errors
///
/// [`CertError::Missing`], [`CertError::Unreadable`], or
/// [`CertError::EmptyPassword`] if the first line is empty.
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, CertError> {
    let data = read_file(path)?;
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(CertError::EmptyPassword {
            path: path.to_owned(),
        });
    }
    Ok(line.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::certs::test_util::{TempDir, openssl};
    use crate::certs::{
        DevCerts, generate, generate_with_password, load_key, load_key_with_password,
    };

    #[test]
    fn encrypted_keys_round_trip_and_wrong_passwords_are_refused() {
        let dir = TempDir::new("encrypt");
        generate(dir.path(), &[], false).unwrap();
        let paths = DevCerts::in_dir(dir.path());
        let plain = load_key(&paths.server_key).unwrap();
        let PrivateKeyDer::Pkcs8(der) = &plain else {
            panic!("generated keys are PKCS#8");
        };
        let pem = encrypt_key(der.secret_pkcs8_der(), b"s3cret").unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            "{pem}"
        );
        let enc = dir.path().join("enc.key");
        fs::write(&enc, &pem).unwrap();

        assert!(is_encrypted_key(&enc).unwrap());
        assert!(!is_encrypted_key(&paths.server_key).unwrap());
        let key = load_key_with_password(&enc, Some(b"s3cret")).unwrap();
        assert_eq!(key.secret_der(), plain.secret_der());

        let err = load_key(&enc).unwrap_err();
        assert!(matches!(err, CertError::KeyEncrypted { .. }), "{err:?}");
        assert!(err.to_string().contains("--key-password-file"), "{err}");
        for wrong in [&b"s3creT"[..], b"", b"s3cret\n"] {
            let err = load_key_with_password(&enc, Some(wrong)).unwrap_err();
            assert!(matches!(err, CertError::KeyPassword { .. }), "{err:?}");
            assert!(err.to_string().contains("wrong password"), "{err}");
        }
        // An unencrypted key is used as it is, whatever the password.
        load_key_with_password(&paths.server_key, Some(b"unused")).unwrap();

        // A damaged encrypted block.
        let damaged = dir.path().join("damaged.key");
        fs::write(&damaged, pem.replace("\n-----END", "!!\n-----END")).unwrap();
        let err = load_key_with_password(&damaged, Some(b"s3cret")).unwrap_err();
        assert!(matches!(err, CertError::KeyEncryption { .. }), "{err:?}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn generate_with_a_password_encrypts_every_key_and_reuses_the_ca() {
        let dir = TempDir::new("gen-encrypted");
        let out = dir.path().join("out");
        let written =
            generate_with_password(&out, &["alice".to_owned()], false, Some(b"pw")).unwrap();
        for path in written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "key"))
        {
            assert!(is_encrypted_key(path).unwrap(), "{}", path.display());
            load_key_with_password(path, Some(b"pw")).unwrap();
        }
        // Adding a client decrypts the CA key: with the password only.
        let err = generate(&out, &["bob".to_owned()], false).unwrap_err();
        assert!(
            matches!(&err, CertError::KeyEncrypted { path } if path.ends_with("ca.key")),
            "{err:?}"
        );
        let err =
            generate_with_password(&out, &["bob".to_owned()], false, Some(b"no")).unwrap_err();
        assert!(matches!(err, CertError::KeyPassword { .. }), "{err:?}");
        assert!(!out.join("bob.pem").exists());
        generate_with_password(&out, &["bob".to_owned()], false, Some(b"pw")).unwrap();
        assert!(is_encrypted_key(&out.join("bob.key")).unwrap());

        // OpenSSL reads them.
        let key = out.join("server.key");
        let pass = dir.path().join("pass");
        fs::write(&pass, "pw\n").unwrap();
        openssl(&[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-passin",
            &format!("file:{}", pass.display()),
            "-noout",
        ]);
    }

    #[test]
    fn keys_encrypted_by_openssl() {
        let dir = TempDir::new("openssl-encrypted");
        let pass = dir.path().join("pass");
        fs::write(&pass, "correct horse\n").unwrap();
        let pass_arg = format!("file:{}", pass.display());
        let plain = dir.path().join("plain.key");
        if !openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            plain.to_str().unwrap(),
        ]) {
            return;
        }
        let password = read_password_file(&pass).unwrap();
        assert_eq!(password, b"correct horse");
        let want = load_key(&plain).unwrap();
        // PBES2 with each AES key size, PBKDF2 with SHA-256 and SHA-512, scrypt.
        let schemes: [&[&str]; 5] = [
            &["-v2", "aes-256-cbc"],
            &["-v2", "aes-128-cbc"],
            &["-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA512"],
            &["-v2", "aes-256-cbc", "-iter", "1000"],
            &["-v2", "aes-256-cbc", "-scrypt"],
        ];
        for (i, scheme) in schemes.iter().enumerate() {
            let out = dir.path().join(format!("enc{i}.key"));
            let mut args = vec![
                "pkcs8",
                "-topk8",
                "-in",
                plain.to_str().unwrap(),
                "-out",
                out.to_str().unwrap(),
                "-passout",
                &pass_arg,
            ];
            args.extend_from_slice(scheme);
            assert!(openssl(&args));
            assert!(is_encrypted_key(&out).unwrap(), "{scheme:?}");
            let key = load_key_with_password(&out, Some(&password))
                .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
            assert_eq!(key.secret_der(), want.secret_der(), "{scheme:?}");
            let err = load_key_with_password(&out, Some(b"wrong")).unwrap_err();
            assert!(
                matches!(err, CertError::KeyPassword { .. }),
                "{scheme:?}: {err:?}"
            );
        }

        // Not supported, each said so in one line: PBES1, and OpenSSL's
        // legacy PEM encryption.
        let pbes1 = dir.path().join("pbes1.key");
        assert!(openssl(&[
            "pkcs8",
            "-topk8",
            "-in",
            plain.to_str().unwrap(),
            "-out",
            pbes1.to_str().unwrap(),
            "-passout",
            &pass_arg,
            "-v1",
            "PBE-SHA1-3DES",
        ]));
        let err = load_key_with_password(&pbes1, Some(&password)).unwrap_err();
        assert!(matches!(err, CertError::KeyEncryption { .. }), "{err:?}");
        let legacy = dir.path().join("legacy.key");
        assert!(openssl(&[
            "ec",
            "-in",
            plain.to_str().unwrap(),
            "-out",
            legacy.to_str().unwrap(),
            "-aes256",
            "-passout",
            &pass_arg,
        ]));
        assert!(is_encrypted_key(&legacy).unwrap());
        let err = load_key_with_password(&legacy, Some(&password)).unwrap_err();
        assert!(
            matches!(&err, CertError::KeyEncryption { why, .. } if why.contains("legacy")),
            "{err:?}"
        );
        for e in [
            err,
            load_key_with_password(&pbes1, Some(&password)).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                !msg.contains('\n') && msg.contains("openssl pkcs8"),
                "{msg}"
            );
        }
    }

    #[test]
    fn password_files() {
        let dir = TempDir::new("password-file");
        let file = dir.path().join("pw");
        for (text, want) in [
            ("abc\n", &b"abc"[..]),
            ("abc", b"abc"),
            ("abc\r\nignored\n", b"abc"),
            (" spaced out \n", b" spaced out "),
        ] {
            fs::write(&file, text).unwrap();
            assert_eq!(read_password_file(&file).unwrap(), want, "{text:?}");
        }
        for empty in ["", "\n", "\r\nsecond line"] {
            fs::write(&file, empty).unwrap();
            let err = read_password_file(&file).unwrap_err();
            assert!(matches!(err, CertError::EmptyPassword { .. }), "{empty:?}");
        }
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_password_file(&missing),
            Err(CertError::Missing { .. })
        ));
    }
}
