//! The client's TLS settings: which CA the server must chain to, an optional
//! client certificate, and the caller's own look at the server certificate.
//!
//! The order of checks is the point: rustls verifies the chain and the name
//! first (webpki, against [`ClientTls::roots`]); only a certificate that
//! passed is shown to [`ClientTls::inspect`]; and the driver sends no byte of
//! the protocol (so no user name or password) before the handshake, and with
//! it both checks, has completed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ClientError;
use crate::certs;
use crate::conn::PeerIdentity;

/// A caller's check of a server certificate that already passed verification:
/// `true` accepts it, `false` aborts the connection with
/// [`ClientError::CertificateRejected`].
pub type InspectFn = dyn Fn(&ServerCert) -> bool + Send + Sync;

/// TLS settings of a [`Client`](super::Client).
pub struct ClientTls {
    /// The CA(s) the server certificate must chain to.
    pub roots: Arc<RootCertStore>,
    /// The name the server certificate must be valid for (a DNS name or an IP
    /// address); `None` uses the host of [`ClientConfig::addr`](super::ClientConfig::addr).
    pub server_name: Option<String>,
    /// A client certificate chain (leaf first) and its key, for mutual TLS
    /// (and `--auth cert`, where the certificate's CN is the user name).
    pub client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Called once per handshake, after normal verification succeeded, with
    /// the server's leaf certificate; returning `false` refuses it, and the
    /// connection is closed before any credential is sent (SocketPro's
    /// `DoSslServerAuthentication`). Runs on the client's I/O thread.
    pub inspect: Option<Arc<InspectFn>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|(c, _)| c.len()),
            )
            .field("inspect", &self.inspect.is_some())
            .finish()
    }
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        Self {
            roots: self.roots.clone(),
            server_name: self.server_name.clone(),
            client_cert: self
                .client_cert
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
            inspect: self.inspect.clone(),
        }
    }
}

impl ClientTls {
    /// Trusts the CA certificate(s) of a PEM file (the `--ca` flag), with no
    /// client certificate and no inspection.
    ///
    /// # Errors
    ///
    /// [`ClientError::Tls`] naming the file if it is missing, unreadable, or
    /// holds no usable CA certificate.
    pub fn from_ca_file(path: &Path) -> Result<Self, ClientError> {
        let roots = certs::load_roots(path).map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self::new(Arc::new(roots)))
    }

    /// Trusts `roots`, with no client certificate and no inspection.
    pub fn new(roots: Arc<RootCertStore>) -> Self {
        Self {
            roots,
            server_name: None,
            client_cert: None,
            inspect: None,
        }
    }

    /// Adds a client certificate (PEM chain, leaf first) and its PEM key, for
    /// mutual TLS.
    ///
    /// # Errors
    ///
    /// [`ClientError::Tls`] naming the file if either cannot be loaded.
    pub fn with_client_cert(mut self, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let chain = certs::load_certs(cert).map_err(|e| ClientError::Tls(e.to_string()))?;
        let key = certs::load_key(key).map_err(|e| ClientError::Tls(e.to_string()))?;
        self.client_cert = Some((chain, key));
        Ok(self)
    }

    /// Sets [`ClientTls::inspect`].
    pub fn with_inspect(
        mut self,
        inspect: impl Fn(&ServerCert) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.inspect = Some(Arc::new(inspect));
        self
    }

    /// Builds the rustls configuration (ring provider, TLS 1.3 and 1.2);
    /// the server's `ServerConfig::cluster_tls` for a `rediss://` cluster
    /// is one.
    ///
    /// # Errors
    ///
    /// [`ClientError::Tls`] if rustls refuses the client certificate's key.
    pub fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let tls_err = |e: rustls::Error| ClientError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = match &self.inspect {
            None => builder.with_root_certificates(self.roots.clone()),
            Some(inspect) => {
                let inner =
                    WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider)
                        .build()
                        .map_err(|e| ClientError::Tls(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(InspectingVerifier {
                        inner,
                        inspect: inspect.clone(),
                    }))
            }
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(tls_err)?,
        };
        Ok(Arc::new(config))
    }
}

/// The server certificate as [`ClientTls::inspect`] sees it.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The leaf certificate's subject.
    pub subject: PeerIdentity,
    /// The leaf certificate, DER.
    pub der: CertificateDer<'static>,
}

/// webpki's verifier, then the caller's inspection.
struct InspectingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    inspect: Arc<InspectFn>,
}

impl fmt::Debug for InspectingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InspectingVerifier")
    }
}

impl ServerCertVerifier for InspectingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let subject = certs::subject_of(end_entity).unwrap_or_default();
        let cert = ServerCert {
            subject,
            der: end_entity.clone().into_owned(),
        };
        if (self.inspect)(&cert) {
            Ok(verified)
        } else {
            // The driver maps exactly this error to CertificateRejected;
            // webpki never returns it.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Maps a rustls error to the client's error: the application's refusal is
/// [`ClientError::CertificateRejected`], anything else [`ClientError::Tls`].
pub(crate) fn map_tls_error(e: &rustls::Error) -> ClientError {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
            ClientError::CertificateRejected
        }
        other => ClientError::Tls(other.to_string()),
    }
}

/// The server name to verify: the configured one, or `host` (the address's
/// host, without brackets).
pub(crate) fn server_name(tls: &ClientTls, host: &str) -> Result<ServerName<'static>, ClientError> {
    let name = match &tls.server_name {
        Some(n) => n.clone(),
        None => host.to_owned(),
    };
    ServerName::try_from(name.clone())
        .map_err(|_| ClientError::Tls(format!("{name:?} is not a valid server name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspection_refusal_maps_to_rejected() {
        let e = rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        assert!(matches!(
            map_tls_error(&e),
            ClientError::CertificateRejected
        ));
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(matches!(map_tls_error(&e), ClientError::Tls(_)));
    }
}
