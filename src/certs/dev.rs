//! Development certificates: the CA, server and client certificates of
//! `switchboard certs` and of the first `serve` start without `--cert`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::ParsedExtension;

use super::encrypted::encrypt_key;
use super::load::{
    CertError, certs_from_pem, check_key_matches, load_certs, load_key_with_password, parse_x509,
};
use crate::atomic_file;
use crate::proto::command::is_valid_user;

/// One day, the clock skew every generated certificate tolerates.
const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Validity of the development CA: 10 years.
const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
/// Validity of server and client certificates: 825 days.
const LEAF_VALIDITY: Duration = Duration::from_secs(825 * 24 * 60 * 60);
/// Organisation of the development CA.
const CA_ORG: &str = "Switchboard";
/// Common name of the development CA.
const CA_CN: &str = "Switchboard development CA";

/// Paths of a CA + server certificate set.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate clients trust (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The CA private key (`ca.key`), used to sign more client certificates.
    pub ca_key: PathBuf,
    /// The server certificate (`server.pem`), signed by the CA.
    pub server_cert: PathBuf,
    /// The server private key (`server.key`).
    pub server_key: PathBuf,
}

impl DevCerts {
    /// The conventional paths in `dir`: `ca.pem`, `ca.key`, `server.pem`,
    /// `server.key`. Nothing is read or checked.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A CA able to sign, with what is needed to check and write what it signs.
struct Ca {
    /// Its certificate (to compare issuer names).
    cert: CertificateDer<'static>,
    /// Whether to write an authority key identifier in issued certificates
    /// (only when the CA has a subject key identifier to match).
    aki: bool,
    /// The rcgen issuer: name, key identifier and signing key.
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed development CA; also returns its PEM and key PEM.
    fn create(now: SystemTime) -> Result<(Self, String, String), CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, CA_ORG);
        params.distinguished_name.push(DnType::CommonName, CA_CN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, now - ONE_DAY, now + CA_VALIDITY)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let ca = Self {
            cert: cert.der().clone(),
            aki: true,
            // Same key_identifier_method as the CA's own SKI: AKI == SKI.
            issuer: Issuer::new(params, key),
        };
        Ok((ca, cert_pem, key_pem))
    }

    /// An existing CA from its certificate and PKCS#8 key. The key is assumed
    /// to match (callers check). rcgen reads the issuer name, key identifier
    /// and key usages from the certificate; as it re-encodes the name (one
    /// attribute per RDN, one value per attribute type), every issued
    /// certificate is checked to carry exactly the CA's subject bytes as its
    /// issuer.
    fn from_parts(
        cert: CertificateDer<'static>,
        key: &PrivateKeyDer<'_>,
    ) -> Result<Self, CertError> {
        let key = KeyPair::try_from(key).map_err(|e| {
            CertError::Generate(format!(
                "the CA key must be an ECDSA, Ed25519 or RSA PKCS#8 key: {e}"
            ))
        })?;
        let x509 =
            parse_x509(&cert).map_err(|e| CertError::Generate(format!("CA certificate: {e}")))?;
        // An authority key identifier only when there is a subject key
        // identifier for it to match (rcgen would otherwise make one up).
        let aki = x509.extensions().iter().any(|ext| {
            matches!(
                ext.parsed_extension(),
                ParsedExtension::SubjectKeyIdentifier(_)
            )
        });
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| CertError::Generate(format!("unsupported CA certificate: {e}")))?;
        Ok(Self { cert, aki, issuer })
    }

    /// Signs `params` for a new P-256 key; returns (cert PEM, key PEM).
    fn issue(&self, mut params: CertificateParams) -> Result<(String, String), CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        params.use_authority_key_identifier_extension = self.aki;
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = parse_x509(cert.der()).map_err(CertError::Generate)?;
        let ca = parse_x509(&self.cert).map_err(CertError::Generate)?;
        if issued.issuer().as_raw() != ca.subject().as_raw() {
            return Err(CertError::Generate(format!(
                "cannot reproduce the CA's subject name ({}) exactly",
                ca.subject()
            )));
        }
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Sets the validity of `params`, without panicking on out-of-range times.
fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), CertError> {
    if not_after < not_before {
        return Err(CertError::Generate("not_after is before not_before".into()));
    }
    // rcgen takes `time::OffsetDateTime`; reach it from rcgen's own epoch
    // value so that `time` need not be a dependency of ours.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // Whole seconds, rounded down, as X.509 stores them.
    let to_date = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => epoch.checked_add(Duration::from_secs(d.as_secs()).try_into().ok()?),
        Err(e) => {
            let d = e.duration();
            let secs = d.as_secs().checked_add(u64::from(d.subsec_nanos() > 0))?;
            epoch.checked_sub(Duration::from_secs(secs).try_into().ok()?)
        }
    };
    let convert = |t: SystemTime| {
        to_date(t).ok_or_else(|| CertError::Generate("validity date out of range".into()))
    };
    params.not_before = convert(not_before)?;
    params.not_after = convert(not_after)?;
    Ok(())
}

/// Parameters of the development server certificate: `localhost`,
/// `127.0.0.1` and `::1`, serverAuth.
fn server_params(now: SystemTime) -> Result<CertificateParams, CertError> {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, now - ONE_DAY, now + LEAF_VALIDITY)?;
    Ok(params)
}

/// Parameters of a client certificate: subject CN=`name`, clientAuth.
fn client_params(
    name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CertError> {
    check_client_name(name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, not_before, not_after)?;
    Ok(params)
}

/// A client name becomes a user name and a file name: the user-name rule.
fn check_client_name(name: &str) -> Result<(), CertError> {
    if is_valid_user(name.as_bytes()) {
        Ok(())
    } else {
        Err(CertError::Generate(format!(
            "invalid client name {name:?}: user names are 1 to 64 of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn occupied(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// A key PEM as it is written: as is, or encrypted with `password` (PKCS#8
/// `ENCRYPTED PRIVATE KEY`, see [`encrypt_key`]).
fn protect(key_pem: String, password: Option<&[u8]>) -> Result<String, CertError> {
    let Some(password) = password else {
        return Ok(key_pem);
    };
    match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => encrypt_key(der.secret_pkcs8_der(), password),
        _ => Err(CertError::Generate("a generated key is not PKCS#8".into())),
    }
}

/// A file to write: where, what, and whether it is a private key.
struct Output {
    path: PathBuf,
    data: String,
    private: bool,
}

/// Writes one file; a private key gets mode 0600. Without `overwrite` the
/// file must not exist; with it, the file is replaced through a rename.
fn write_output(out: &Output, overwrite: bool) -> Result<(), CertError> {
    let mode = if out.private { 0o600 } else { 0o644 };
    let data = out.data.as_bytes();
    let path = out.path.clone();
    if overwrite {
        atomic_file::replace(&out.path, data, mode).map_err(|e| CertError::Write {
            path,
            source: e.source,
        })
    } else {
        atomic_file::create_new(&out.path, data, mode).map_err(|source| {
            match source.kind() {
                // Appeared since the check; it is not ours to remove.
                io::ErrorKind::AlreadyExists => CertError::Exists { path },
                _ => CertError::Write { path, source },
            }
        })
    }
}

/// `switchboard certs DIR [--client NAME]... [--force]`.
///
/// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key` (server certificate
/// for DNS `localhost` and IP `127.0.0.1` and `::1`, signed by the CA) and
/// `NAME.pem`/`NAME.key` per client (subject CN=NAME, clientAuth, signed by the
/// CA), creating `dir` if needed. Keys are ECDSA P-256, PKCS#8; key files have
/// mode 0600. Returns the paths written, in order.
///
/// Without `force` nothing is overwritten, and every target is checked before
/// anything is written (all or nothing; files created before a write error are
/// removed again). If `ca.pem` and `ca.key` both exist (and match), that CA is
/// reused to sign the new certificates, so `certs DIR --client bob` run later
/// adds bob to the same CA; the server pair is then written only if neither
/// `server.pem` nor `server.key` exists. With `force` a new CA and every file
/// are made, replacing existing files.
///
/// # Errors
///
/// [`CertError::Generate`] for an invalid client name (the user-name rule, and
/// not `ca` or `server`, not twice); [`CertError::Exists`] for the first file
/// that would be overwritten; load errors for an existing CA that cannot be
/// reused (among them [`CertError::KeyEncrypted`] for a password-protected
/// `ca.key`: see [`generate_with_password`]); [`CertError::Write`].
pub fn generate(dir: &Path, clients: &[String], force: bool) -> Result<Vec<PathBuf>, CertError> {
    generate_with_password(dir, clients, force, None)
}

/// [`generate`], with every private key written encrypted with `password`
/// when it is given (`switchboard certs --key-password-file FILE`): PKCS#8
/// `ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC,
/// as `openssl genpkey -aes-256-cbc` writes. An existing encrypted `ca.key`
/// is decrypted with the same password to sign the new certificates.
///
/// # Errors
///
/// Those of [`generate`], and [`CertError::KeyPassword`] if `password` does not
/// decrypt an existing `ca.key`.
pub fn generate_with_password(
    dir: &Path,
    clients: &[String],
    force: bool,
    password: Option<&[u8]>,
) -> Result<Vec<PathBuf>, CertError> {
    for (i, name) in clients.iter().enumerate() {
        check_client_name(name)?;
        if name.eq_ignore_ascii_case("ca") || name.eq_ignore_ascii_case("server") {
            return Err(CertError::Generate(format!(
                "invalid client name {name:?}: its files would be the CA's or the server's"
            )));
        }
        if clients.iter().take(i).any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(CertError::Generate(format!(
                "client name {name:?} given twice"
            )));
        }
    }
    let paths = DevCerts::in_dir(dir);
    let now = SystemTime::now();
    let reuse_ca = !force && occupied(&paths.ca_cert) && occupied(&paths.ca_key);
    let mut outputs = Vec::new();
    let ca = if reuse_ca {
        let certs = load_certs(&paths.ca_cert)?;
        let key = load_key_with_password(&paths.ca_key, password)?;
        check_key_matches(&certs, &key, &paths.ca_cert, &paths.ca_key)?;
        let cert = certs
            .into_iter()
            .next()
            .ok_or_else(|| CertError::NotACertificate {
                path: paths.ca_cert.clone(),
            })?;
        Ca::from_parts(cert, &key)?
    } else {
        let (ca, cert_pem, key_pem) = Ca::create(now)?;
        outputs.push(Output {
            path: paths.ca_cert.clone(),
            data: cert_pem,
            private: false,
        });
        outputs.push(Output {
            path: paths.ca_key.clone(),
            data: protect(key_pem, password)?,
            private: true,
        });
        ca
    };
    let server_present = occupied(&paths.server_cert) && occupied(&paths.server_key);
    if !(reuse_ca && server_present) {
        let (cert_pem, key_pem) = ca.issue(server_params(now)?)?;
        outputs.push(Output {
            path: paths.server_cert.clone(),
            data: cert_pem,
            private: false,
        });
        outputs.push(Output {
            path: paths.server_key.clone(),
            data: protect(key_pem, password)?,
            private: true,
        });
    }
    for name in clients {
        let (cert_pem, key_pem) =
            ca.issue(client_params(name, now - ONE_DAY, now + LEAF_VALIDITY)?)?;
        outputs.push(Output {
            path: dir.join(format!("{name}.pem")),
            data: cert_pem,
            private: false,
        });
        outputs.push(Output {
            path: dir.join(format!("{name}.key")),
            data: protect(key_pem, password)?,
            private: true,
        });
    }
    let in_the_way = outputs.iter().find(|out| !force && occupied(&out.path));
    if let Some(out) = in_the_way {
        return Err(CertError::Exists {
            path: out.path.clone(),
        });
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::with_capacity(outputs.len());
    for out in &outputs {
        if let Err(e) = write_output(out, force) {
            if !force {
                // These did not exist before: leave the directory as it was.
                for path in &written {
                    let _ = fs::remove_file(path);
                }
            }
            return Err(e);
        }
        written.push(out.path.clone());
    }
    Ok(written)
}

/// For `serve` with no `--cert`/`--key`: the development certificates in `dir`.
///
/// If `ca.pem`, `server.pem` and `server.key` all exist they are reused, after
/// checking that they load and that the key matches (a failure is returned as
/// is: the operator should fix or remove the files, nothing is overwritten).
/// Otherwise they are made with [`generate`]`(dir, &[], false)`, which reuses
/// an existing `ca.pem`/`ca.key` pair and never overwrites. Clients should
/// trust the returned `ca_cert`; `ca_key` may not exist if only `ca.pem` was
/// kept.
///
/// # Errors
///
/// Those of [`load_certs`], [`load_key`](super::load_key),
/// [`check_key_matches`] and [`generate`].
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts, CertError> {
    ensure_dev_certs_with_password(dir, None)
}

/// [`ensure_dev_certs`] for a directory whose keys may be password-protected
/// (made by `switchboard certs DIR --key-password-file FILE`): existing keys
/// are decrypted with `password`, and keys made now are encrypted with it, as
/// [`generate_with_password`] does.
///
/// # Errors
///
/// Those of [`ensure_dev_certs`] and [`load_key_with_password`].
pub fn ensure_dev_certs_with_password(
    dir: &Path,
    password: Option<&[u8]>,
) -> Result<DevCerts, CertError> {
    let paths = DevCerts::in_dir(dir);
    if occupied(&paths.ca_cert) && occupied(&paths.server_cert) && occupied(&paths.server_key) {
        load_certs(&paths.ca_cert)?;
        let certs = load_certs(&paths.server_cert)?;
        let key = load_key_with_password(&paths.server_key, password)?;
        check_key_matches(&certs, &key, &paths.server_cert, &paths.server_key)?;
        let stale = certs
            .first()
            .and_then(|c| parse_x509(c).ok())
            .is_some_and(|leaf| !leaf.validity().is_valid());
        if stale {
            log::warn!(
                "development certificate {} is expired or not yet valid; \
                 remove {} to make new ones",
                paths.server_cert.display(),
                dir.display()
            );
        }
        return Ok(paths);
    }
    generate_with_password(dir, &[], false, password)?;
    log::info!("development certificates written to {}", dir.display());
    Ok(paths)
}

/// The per-user directory for development certificates, for a server whose
/// `./certs` cannot be written: `$XDG_DATA_HOME/switchboard/certs`, or
/// `$HOME/.local/share/switchboard/certs` when `XDG_DATA_HOME` is unset, empty
/// or relative (the XDG Base Directory rule). `None` without a usable `HOME`
/// either. Nothing is created or checked.
pub fn user_certs_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let data = absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("share")))?;
    Some(data.join("switchboard").join("certs"))
}

/// Issues a client certificate (subject CN=`name`, clientAuth, new ECDSA P-256
/// key) from an existing CA, with explicit validity: for tests of expired or
/// not-yet-valid certificates, and for tools. Returns (certificate PEM, PKCS#8
/// key PEM).
///
/// Validity is taken as [`SystemTime`] (`rcgen` wants `time::OffsetDateTime`,
/// which is not a dependency of ours); it is stored to the second.
///
/// `ca_key_pem` must be a PKCS#8 key (what [`generate`] writes).
///
/// # Errors
///
/// [`CertError::Parse`] if `ca_cert_pem` holds no valid certificate;
/// [`CertError::Generate`] for an invalid name, `not_after` before
/// `not_before`, a CA key that is not PKCS#8 or does not match the CA
/// certificate, or an rcgen failure.
pub fn issue_client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(String, String), CertError> {
    let params = client_params(name, not_before, not_after)?;
    let cert = certs_from_pem(ca_cert_pem.as_bytes())
        .and_then(|certs| certs.into_iter().next())
        .ok_or_else(|| {
            CertError::Parse("no valid PEM CERTIFICATE block in the CA certificate".into())
        })?;
    let key = PrivateKeyDer::from_pem_slice(ca_key_pem.as_bytes())
        .map_err(|_| CertError::Generate("no PEM private key in the CA key".into()))?;
    let cert_path = Path::new("CA certificate");
    let key_path = Path::new("CA key");
    check_key_matches(std::slice::from_ref(&cert), &key, cert_path, key_path)
        .map_err(|e| CertError::Generate(e.to_string()))?;
    Ca::from_parts(cert, &key)?.issue(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    use crate::certs::test_util::{
        TempDir, client_verifier, clients, first_cert, mode, openssl_new_p256, provider,
    };
    use crate::certs::{load_key, load_roots, subject_of};

    #[test]
    fn generate_writes_a_set_that_loads_and_matches() {
        let dir = TempDir::new("gen");
        let written = generate(dir.path(), &clients(&["alice"]), false).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca.key",
                "server.pem",
                "server.key",
                "alice.pem",
                "alice.key"
            ]
        );
        let paths = DevCerts::in_dir(dir.path());
        for (cert, key) in [
            (&paths.ca_cert, &paths.ca_key),
            (&paths.server_cert, &paths.server_key),
            (&dir.path().join("alice.pem"), &dir.path().join("alice.key")),
        ] {
            let certs = load_certs(cert).unwrap();
            assert_eq!(certs.len(), 1);
            let key_der = load_key(key).unwrap();
            assert!(matches!(key_der, PrivateKeyDer::Pkcs8(_)));
            check_key_matches(&certs, &key_der, cert, key).unwrap();
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }

        // The server certificate verifies against the CA for each name.
        let roots = Arc::new(load_roots(&paths.ca_cert).unwrap());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .unwrap();
        let server = first_cert(&paths.server_cert);
        for name in ["localhost", "127.0.0.1", "::1"] {
            verifier
                .verify_server_cert(
                    &server,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            verifier
                .verify_server_cert(
                    &server,
                    &[],
                    &ServerName::try_from("example.com").unwrap(),
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );

        // The client certificate verifies as a client certificate.
        client_verifier(&paths.ca_cert)
            .verify_client_cert(
                &first_cert(&dir.path().join("alice.pem")),
                &[],
                UnixTime::now(),
            )
            .unwrap();

        let ca = subject_of(&first_cert(&paths.ca_cert)).unwrap();
        assert_eq!(
            ca.to_string(),
            "O=Switchboard, CN=Switchboard development CA"
        );
        let x509_ca = first_cert(&paths.ca_cert);
        let (_, x509_ca) = x509_parser::parse_x509_certificate(&x509_ca).unwrap();
        assert!(x509_ca.is_ca());
        let srv = subject_of(&server).unwrap();
        assert_eq!(srv.cn.as_deref(), Some("localhost"));
    }

    #[test]
    fn validity_periods() {
        let dir = TempDir::new("validity");
        generate(dir.path(), &clients(&["v"]), false).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let day = 86_400;
        for (file, days) in [("ca.pem", 3650), ("server.pem", 825), ("v.pem", 825)] {
            let der = first_cert(&dir.path().join(file));
            let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
            let nb = x.validity().not_before.timestamp();
            let na = x.validity().not_after.timestamp();
            assert!(
                (now - day - 60..=now - day + 60).contains(&nb),
                "{file} not_before"
            );
            let want = now + days * day;
            assert!((want - 60..=want + 60).contains(&na), "{file} not_after");
        }
    }

    #[test]
    fn generate_refuses_to_overwrite_and_writes_nothing() {
        let dir = TempDir::new("noclobber");
        let out = dir.path().join("out");
        generate(&out, &[], false).unwrap();
        let before: Vec<_> = ["ca.pem", "ca.key", "server.pem", "server.key"]
            .iter()
            .map(|f| fs::read(out.join(f)).unwrap())
            .collect();

        // Fresh CA wanted (ca.key gone) but ca.pem and server files exist.
        fs::remove_file(out.join("ca.key")).unwrap();
        let err = generate(&out, &clients(&["carol"]), false).unwrap_err();
        assert!(
            matches!(&err, CertError::Exists { path } if path.ends_with("ca.pem")),
            "{err:?}"
        );
        assert!(err.to_string().contains("--force"));
        assert!(!out.join("ca.key").exists());
        assert!(!out.join("carol.pem").exists() && !out.join("carol.key").exists());
        fs::write(out.join("ca.key"), &before[1]).unwrap();

        // The CA is reused, but carol.key is in the way: nothing is written.
        fs::write(out.join("carol.key"), b"mine").unwrap();
        let err = generate(&out, &clients(&["dave", "carol"]), false).unwrap_err();
        assert!(
            matches!(&err, CertError::Exists { path } if path.ends_with("carol.key")),
            "{err:?}"
        );
        assert!(!out.join("dave.pem").exists() && !out.join("carol.pem").exists());
        assert_eq!(fs::read(out.join("carol.key")).unwrap(), b"mine");
        for (f, b) in ["ca.pem", "ca.key", "server.pem", "server.key"]
            .iter()
            .zip(&before)
        {
            assert_eq!(&fs::read(out.join(f)).unwrap(), b, "{f}");
        }

        // With force everything is replaced, keys still 0600.
        fs::set_permissions(out.join("carol.key"), Permissions::from_mode(0o644)).unwrap();
        let written = generate(&out, &clients(&["carol"]), true).unwrap();
        assert_eq!(written.len(), 6);
        assert_ne!(fs::read(out.join("ca.pem")).unwrap(), before[0]);
        assert_eq!(mode(&out.join("carol.key")), 0o600);
        assert_eq!(mode(&out.join("ca.key")), 0o600);
        let entries = fs::read_dir(&out).unwrap().count();
        assert_eq!(entries, 6, "no temporary files left behind");
    }

    #[test]
    fn client_names_are_checked() {
        let dir = TempDir::new("names");
        let out = dir.path().join("out");
        for bad in [
            "",
            "a/b",
            "../x",
            "has space",
            "ca",
            "Server",
            &"x".repeat(65),
        ] {
            let err = generate(&out, &clients(&[bad]), false).unwrap_err();
            assert!(matches!(err, CertError::Generate(_)), "{bad:?}: {err:?}");
        }
        assert!(matches!(
            generate(&out, &clients(&["bob", "BOB"]), false),
            Err(CertError::Generate(_))
        ));
        assert!(!out.exists(), "nothing created for invalid names");
        generate(&out, &clients(&[&"x".repeat(64)]), false).unwrap();
    }

    #[test]
    fn later_clients_reuse_the_ca() {
        let dir = TempDir::new("reuse");
        generate(dir.path(), &clients(&["alice"]), false).unwrap();
        let paths = DevCerts::in_dir(dir.path());
        let ca_before = fs::read(&paths.ca_cert).unwrap();
        let server_before = fs::read(&paths.server_cert).unwrap();

        let written = generate(dir.path(), &clients(&["bob"]), false).unwrap();
        assert_eq!(
            written,
            [dir.path().join("bob.pem"), dir.path().join("bob.key")]
        );
        assert_eq!(fs::read(&paths.ca_cert).unwrap(), ca_before);
        assert_eq!(fs::read(&paths.server_cert).unwrap(), server_before);
        assert_eq!(mode(&dir.path().join("bob.key")), 0o600);

        let bob = first_cert(&dir.path().join("bob.pem"));
        client_verifier(&paths.ca_cert)
            .verify_client_cert(&bob, &[], UnixTime::now())
            .unwrap();
        // Issuer bytes equal the CA subject, and the AKI is the CA's SKI.
        let ca_der = first_cert(&paths.ca_cert);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&bob).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        let ski = ca
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        assert!(ski.is_some());
        assert_eq!(ski, aki);

        // A client from another CA does not verify against this one.
        let other = TempDir::new("reuse-other");
        generate(other.path(), &clients(&["mallory"]), false).unwrap();
        let mallory = first_cert(&other.path().join("mallory.pem"));
        assert!(
            client_verifier(&paths.ca_cert)
                .verify_client_cert(&mallory, &[], UnixTime::now())
                .is_err()
        );

        // Reusing a CA whose key does not match is refused.
        fs::copy(other.path().join("ca.key"), &paths.ca_key).unwrap();
        let err = generate(dir.path(), &clients(&["eve"]), false).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
        assert!(!dir.path().join("eve.pem").exists());
    }

    #[test]
    fn ensure_dev_certs_creates_then_reuses() {
        let dir = TempDir::new("ensure");
        let certs_dir = dir.path().join("certs");
        let first = ensure_dev_certs(&certs_dir).unwrap();
        let files = [
            &first.ca_cert,
            &first.ca_key,
            &first.server_cert,
            &first.server_key,
        ];
        let before: Vec<_> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(mode(&first.server_key), 0o600);

        let second = ensure_dev_certs(&certs_dir).unwrap();
        assert_eq!(second.ca_cert, first.ca_cert);
        let after: Vec<_> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(before, after);

        // Server pair gone: remade, signed by the same CA.
        fs::remove_file(&first.server_cert).unwrap();
        fs::remove_file(&first.server_key).unwrap();
        ensure_dev_certs(&certs_dir).unwrap();
        assert_eq!(fs::read(&first.ca_cert).unwrap(), before[0]);
        assert_ne!(fs::read(&first.server_cert).unwrap(), before[2]);

        // A damaged server key is reported, not replaced.
        fs::write(&first.server_key, b"junk").unwrap();
        assert!(matches!(
            ensure_dev_certs(&certs_dir),
            Err(CertError::NotAKey { .. })
        ));
        assert_eq!(fs::read(&first.server_key).unwrap(), b"junk");
    }

    #[test]
    fn issue_client_cert_with_explicit_validity() {
        let dir = TempDir::new("issue");
        generate(dir.path(), &[], false).unwrap();
        let paths = DevCerts::in_dir(dir.path());
        let ca_pem = fs::read_to_string(&paths.ca_cert).unwrap();
        let ca_key = fs::read_to_string(&paths.ca_key).unwrap();
        let now = SystemTime::now();
        let day = ONE_DAY;

        let (cert_pem, key_pem) =
            issue_client_cert(&ca_pem, &ca_key, "old", now - 30 * day, now - 2 * day).unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(x.validity().not_after.timestamp() < now_secs);
        assert_eq!(subject_of(&cert).unwrap().cn.as_deref(), Some("old"));
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        check_key_matches(
            std::slice::from_ref(&cert),
            &key,
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();
        let verifier = client_verifier(&paths.ca_cert);
        assert!(
            verifier
                .verify_client_cert(&cert, &[], UnixTime::now())
                .is_err()
        );

        let (future, _) =
            issue_client_cert(&ca_pem, &ca_key, "future", now + 2 * day, now + 30 * day).unwrap();
        let future = CertificateDer::from_pem_slice(future.as_bytes()).unwrap();
        assert!(
            verifier
                .verify_client_cert(&future, &[], UnixTime::now())
                .is_err()
        );

        let (good, _) = issue_client_cert(&ca_pem, &ca_key, "good", now - day, now + day).unwrap();
        let good = CertificateDer::from_pem_slice(good.as_bytes()).unwrap();
        verifier
            .verify_client_cert(&good, &[], UnixTime::now())
            .unwrap();

        // Errors: bad name, reversed validity, wrong key, no CA certificate.
        assert!(matches!(
            issue_client_cert(&ca_pem, &ca_key, "a b", now, now + day),
            Err(CertError::Generate(_))
        ));
        assert!(matches!(
            issue_client_cert(&ca_pem, &ca_key, "x", now + day, now),
            Err(CertError::Generate(_))
        ));
        let server_key = fs::read_to_string(&paths.server_key).unwrap();
        assert!(matches!(
            issue_client_cert(&ca_pem, &server_key, "x", now, now + day),
            Err(CertError::Generate(_))
        ));
        assert!(matches!(
            issue_client_cert(&ca_key, &ca_key, "x", now, now + day),
            Err(CertError::Parse(_))
        ));
    }

    #[test]
    fn issue_client_cert_from_an_openssl_ca() {
        let dir = TempDir::new("openssl-ca");
        let key = dir.path().join("ca.key");
        let cert = dir.path().join("ca.pem");
        if !openssl_new_p256(
            &key,
            &cert,
            "2",
            "/C=FR/O=Acme Corp/CN=Acme Root",
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ) {
            return;
        }
        let now = SystemTime::now();
        let (pem, _) = issue_client_cert(
            &fs::read_to_string(&cert).unwrap(),
            &fs::read_to_string(&key).unwrap(),
            "zoe",
            now - ONE_DAY,
            now + ONE_DAY,
        )
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        client_verifier(&cert)
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .unwrap();
    }

    /// CAs whose names rcgen cannot reproduce are refused rather than
    /// signing leaves that would not chain; a CA without a subject key
    /// identifier signs leaves without an authority key identifier.
    #[test]
    fn openssl_cas_with_unusual_names_or_no_ski() {
        let dir = TempDir::new("openssl-ca-edges");
        let ca = |tag: &str, subj: &str, extra: &[&str]| {
            let key = dir.path().join(format!("{tag}.key"));
            let cert = dir.path().join(format!("{tag}.pem"));
            let mut args = vec!["-addext", "basicConstraints=critical,CA:TRUE"];
            args.extend_from_slice(extra);
            openssl_new_p256(&key, &cert, "2", subj, &args).then_some((cert, key))
        };
        let issue = |(cert, key): &(PathBuf, PathBuf)| {
            let now = SystemTime::now();
            issue_client_cert(
                &fs::read_to_string(cert).unwrap(),
                &fs::read_to_string(key).unwrap(),
                "zoe",
                now - ONE_DAY,
                now + ONE_DAY,
            )
        };
        let Some(no_ski) = ca(
            "no-ski",
            "/CN=No SKI",
            &[
                "-addext",
                "subjectKeyIdentifier=none",
                "-addext",
                "authorityKeyIdentifier=none",
            ],
        ) else {
            return;
        };
        let (pem, _) = issue(&no_ski).unwrap();
        let leaf = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let has_aki = x.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )
        });
        assert!(!has_aki);
        client_verifier(&no_ski.0)
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .unwrap();

        // Two values of one attribute type: rcgen keeps one.
        let dup = ca("dup", "/O=A/O=B/CN=Dup", &[]).unwrap();
        let err = issue(&dup).unwrap_err();
        assert!(matches!(err, CertError::Generate(_)), "{err:?}");
        assert!(err.to_string().contains("cannot reproduce"), "{err}");

        // A multi-valued RDN: rcgen cannot read it.
        let multi = ca("multi", "/O=A+CN=Multi", &[]).unwrap();
        let err = issue(&multi).unwrap_err();
        assert!(matches!(err, CertError::Generate(_)), "{err:?}");
        assert!(
            err.to_string().contains("unsupported CA certificate"),
            "{err}"
        );
    }
}
