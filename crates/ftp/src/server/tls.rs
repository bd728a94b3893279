//! TLS configuration for FTPS, from PEM files.

use std::path::Path;
use std::sync::Arc;

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no certificate.
    #[error("no certificate found in {0}")]
    NoCert(String),
    /// The file holds no private key.
    #[error("no private key found in {0}")]
    NoKey(String),
    /// A PEM block of the file is damaged (a bad line, a cut-off block).
    #[error("{path}: a damaged PEM block: {source}")]
    Pem {
        /// The file.
        path: String,
        /// What the PEM reader found.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate or key.
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the rustls server configuration (ring provider, TLS 1.2 and 1.3, session resumption so
/// data connections resume the control connection's session cheaply).
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_bytes = read(cert_pem)?;
    let key_bytes = read(key_pem)?;
    server_config_from_pem(
        &cert_bytes,
        &key_bytes,
        &cert_pem.display().to_string(),
        &key_pem.display().to_string(),
    )
}

/// A TLS configuration from PEM bytes in memory (`cert_name` and `key_name` only name them in errors).
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // A damaged block is an error, not skipped: a chain missing its intermediate would load and
    // then fail in every client.
    let pem = |path: &str| {
        let path = path.to_string();
        move |source| TlsError::Pem { path, source }
    };
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert_name))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_name.to_string()));
    }
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key_name.to_string())),
        Err(e) => return Err(pem(key_name)(e)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_pem_block_is_an_error_naming_the_file_not_skipped() {
        for bad in [
            &b"-----BEGIN CERTIFICATE-----\n%%%% not base64 %%%%\n-----END CERTIFICATE-----\n"[..],
            &b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n"[..],
        ] {
            let e = server_config_from_pem(bad, b"", "cert.pem", "key.pem").unwrap_err();
            assert!(matches!(e, TlsError::Pem { .. }), "{e}");
            assert!(e.to_string().contains("cert.pem"), "{e}");
        }
        let e = server_config_from_pem(b"", b"", "cert.pem", "key.pem").unwrap_err();
        assert!(matches!(e, TlsError::NoCert(_)), "{e}");
    }
}
