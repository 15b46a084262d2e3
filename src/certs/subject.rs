//! The subject of a verified client certificate, for `--auth cert` and the
//! embedding API.

use rustls::pki_types::CertificateDer;
use x509_parser::x509::AttributeTypeAndValue;

use super::load::{CertError, parse_x509};
use crate::conn::PeerIdentity;

/// Reads the subject of a DER certificate (C, ST, L, O, OU and CN).
///
/// # Errors
///
/// [`CertError::Parse`] if `cert` is not a valid X.509 certificate.
pub fn subject_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, CertError> {
    let x509 = parse_x509(cert).map_err(CertError::Parse)?;
    let name = x509.subject();
    Ok(PeerIdentity {
        c: first_str(name.iter_country()),
        st: first_str(name.iter_state_or_province()),
        l: first_str(name.iter_locality()),
        o: first_str(name.iter_organization()),
        ou: first_str(name.iter_organizational_unit()),
        cn: first_str(name.iter_common_name()),
    })
}

/// The first value of an attribute, if it is a UTF-8 compatible string.
fn first_str<'a, 'b: 'a>(
    mut values: impl Iterator<Item = &'a AttributeTypeAndValue<'b>>,
) -> Option<String> {
    values
        .next()
        .and_then(|attr| attr.as_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::certs::generate;
    use crate::certs::test_util::{TempDir, clients, first_cert, openssl_new_p256};

    #[test]
    fn subject_of_generated_and_openssl_certificates() {
        let dir = TempDir::new("subject");
        generate(dir.path(), &clients(&["bob.smith-2"]), false).unwrap();
        let subject = subject_of(&first_cert(&dir.path().join("bob.smith-2.pem"))).unwrap();
        assert_eq!(
            subject,
            PeerIdentity {
                cn: Some("bob.smith-2".into()),
                ..PeerIdentity::default()
            }
        );
        assert_eq!(subject.to_string(), "CN=bob.smith-2");

        assert!(matches!(
            subject_of(&CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01])),
            Err(CertError::Parse(_))
        ));

        let key = dir.path().join("full.key");
        let cert = dir.path().join("full.pem");
        if !openssl_new_p256(
            &key,
            &cert,
            "1",
            "/C=FR/ST=Paris/L=Paris/O=Acme/OU=Dev/CN=alice",
            &[],
        ) {
            return;
        }
        let subject = subject_of(&first_cert(&cert)).unwrap();
        assert_eq!(
            subject,
            PeerIdentity {
                c: Some("FR".into()),
                st: Some("Paris".into()),
                l: Some("Paris".into()),
                o: Some("Acme".into()),
                ou: Some("Dev".into()),
                cn: Some("alice".into()),
            }
        );
        assert_eq!(
            subject.to_string(),
            "C=FR, ST=Paris, L=Paris, O=Acme, OU=Dev, CN=alice"
        );
    }
}
