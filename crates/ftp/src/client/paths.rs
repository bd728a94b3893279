//! Remote path arithmetic, listing parsers and the TLS connector.

use super::{ClientError, Entry, EntryKind};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// `path` made absolute against `cwd`, with `.` and `..` resolved (never above `/`).
pub(crate) fn absolute(cwd: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `/a/b/c.txt` → (`/a/b`, `c.txt`).
pub fn split_remote(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Joins a remote folder and a name with exactly one `/`.
pub fn join_remote(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn entry_of(f: suppaftp::list::File) -> Entry {
    let kind = if f.is_directory() {
        EntryKind::Dir
    } else if f.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    let modified = Some(f.modified()).filter(|m| *m != SystemTime::UNIX_EPOCH);
    Entry {
        name: f.name().to_string(),
        kind,
        size: f.size() as u64,
        modified,
    }
}

/// One MLSD/MLST line.
pub(crate) fn parse_entry(line: &str) -> Option<Entry> {
    suppaftp::list::ListParser::parse_mlsd(line)
        .ok()
        .map(entry_of)
}

/// One LIST line (Unix or DOS style).
pub(crate) fn parse_list_line(line: &str) -> Option<Entry> {
    suppaftp::list::ListParser::parse_posix(line)
        .or_else(|_| suppaftp::list::ListParser::parse_dos(line))
        .ok()
        .map(entry_of)
}

/// Whether `tls` can be set up: its CA file (or the system's bundle) read and parsed. For a
/// check at start, before any connection would fail on it.
pub fn check_tls(tls: &super::TlsMode) -> Result<(), ClientError> {
    match tls {
        super::TlsMode::Explicit {
            ca_file,
            insecure_skip_verify,
        } => tls_connector(ca_file.as_deref(), *insecure_skip_verify).map(drop),
        _ => Ok(()),
    }
}

/// A rustls connector (ring) trusting `ca_file`, or the system's roots; `insecure`: trusting
/// any certificate (said at WARN).
pub fn tls_connector(
    ca_file: Option<&Path>,
    insecure: bool,
) -> Result<tokio_rustls::TlsConnector, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let config = if insecure {
        tracing::warn!("TLS certificate verification is OFF: anyone on the path can read and change this session");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(p) => {
                let pem = std::fs::read(p)
                    .map_err(|e| ClientError::io(format!("reading CA file {}", p.display()), e))?;
                for c in CertificateDer::pem_slice_iter(&pem) {
                    let c =
                        c.map_err(|e| ClientError::Tls(format!("CA file {}: {e}", p.display())))?;
                    roots
                        .add(c)
                        .map_err(|e| ClientError::Tls(format!("CA file {}: {e}", p.display())))?;
                }
                if roots.is_empty() {
                    return Err(ClientError::Tls(format!(
                        "no certificate in CA file {}",
                        p.display()
                    )));
                }
            }
            None => {
                // The system's store (rustls-native-certs: SSL_CERT_FILE/SSL_CERT_DIR, else the
                // distribution's bundle). One unusable certificate among hundreds is skipped
                // (and said at DEBUG); a store that gives none is an error.
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!("the system's CA store: {e}");
                }
                let (_, skipped) = roots.add_parsable_certificates(found.certs);
                if skipped > 0 {
                    tracing::debug!(
                        "{skipped} unusable certificates skipped in the system CA store"
                    );
                }
                if roots.is_empty() {
                    return Err(ClientError::Tls(
                        "no usable CA certificate in the system's store; install \
                         ca-certificates or give a CA file"
                            .into(),
                    ));
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths() {
        assert_eq!(absolute("/", "a/b"), "/a/b");
        assert_eq!(absolute("/x", "../../y"), "/y");
        assert_eq!(absolute("/x", "/z/./w/"), "/z/w");
        assert_eq!(split_remote("/a/b.txt"), ("/a", "b.txt"));
        assert_eq!(split_remote("/b.txt"), ("/", "b.txt"));
        assert_eq!(join_remote("/", "x"), "/x");
        assert_eq!(join_remote("/a", "x"), "/a/x");
    }

    #[test]
    fn parses_mlsd_lines() {
        let e = parse_entry("type=file;size=12;modify=20240723101112; a b.txt").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("a b.txt", EntryKind::File, 12)
        );
        let d = parse_entry("type=dir;modify=20240723101112; Logs").unwrap();
        assert_eq!(d.kind, EntryKind::Dir);
    }
}
