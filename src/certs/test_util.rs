//! What the certificate unit tests share: temporary directories, openssl,
//! verifiers and small readers.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;

use super::{load_certs, load_roots};

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "switchboard-certs-{tag}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) const OPENSSL: &str = "/usr/bin/openssl";

pub(super) fn openssl(args: &[&str]) -> bool {
    if !Path::new(OPENSSL).exists() {
        eprintln!("SKIP: {OPENSSL} not found; test skipped");
        return false;
    }
    let out = Command::new(OPENSSL).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// `openssl req -x509`: a self-signed certificate for the existing key
/// `key`, valid one day.
pub(super) fn openssl_self_sign(key: &str, subj: &str, cert: &Path) -> bool {
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-subj",
        subj,
        "-days",
        "1",
        "-out",
        cert.to_str().unwrap(),
    ])
}

/// `openssl req -x509 -newkey ec`: a new P-256 key and a self-signed
/// certificate for it, valid `days`, with `extra` arguments.
pub(super) fn openssl_new_p256(
    key: &Path,
    cert: &Path,
    days: &str,
    subj: &str,
    extra: &[&str],
) -> bool {
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-days",
        days,
        "-subj",
        subj,
    ];
    args.extend_from_slice(extra);
    openssl(&args)
}

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn client_verifier(ca: &Path) -> Arc<dyn ClientCertVerifier> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(load_roots(ca).unwrap()),
        provider(),
    )
    .build()
    .unwrap()
}

pub(super) fn first_cert(path: &Path) -> CertificateDer<'static> {
    load_certs(path).unwrap().remove(0)
}

pub(super) fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub(super) fn clients(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
