//! TLS to PostgreSQL (`[catalog] url` with `sslmode=require`, `verify-ca` or `verify-full`):
//! rustls with ring, the same as FTPS and HTTPS, through tokio-postgres's connector traits.
//!
//! Kept here: a TLS connection is always verified — the server's certificate must chain to
//! `sslrootcert` (a PEM file named in the URL) or, without it, to the system's roots, and name
//! the host connected to. libpq's `require` does not verify; here it does (a certificate that
//! cannot be checked is a man-in-the-middle waiting to happen), so a self-signed server needs
//! its CA in `sslrootcert`.

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Makes verified TLS connections to PostgreSQL.
#[derive(Clone)]
pub struct PgTls(tokio_rustls::TlsConnector);

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTls")
    }
}

impl PgTls {
    /// Trusting the CAs of `root_cert` (PEM), or the system's.
    pub fn new(root_cert: Option<&Path>) -> Result<PgTls, String> {
        logarchive_ftp::client::tls_connector(root_cert, false)
            .map(PgTls)
            .map_err(|e| e.to_string())
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<PgTlsConnect> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} cannot be checked against a certificate: {e}"),
            )
        })?;
        Ok(PgTlsConnect {
            tls: self.0.clone(),
            name,
        })
    }
}

/// One connection's handshake, for the host it was made for.
pub struct PgTlsConnect {
    tls: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = self.tls.connect(self.name, stream).await?;
            Ok(PgTlsStream(Box::new(s)))
        })
    }
}

/// A TLS connection to PostgreSQL.
pub struct PgTlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    /// None: SCRAM without channel binding. (`tls-server-end-point` hashes the certificate
    /// with its signature's hash; one guessed wrong fails every login. The certificate is
    /// verified instead.)
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// Takes libpq's TLS words out of a `[catalog] url` that tokio-postgres does not know
/// (`sslrootcert=FILE`; `sslmode=verify-ca` and `verify-full`, which become `require`, verified
/// as every TLS connection here is). Returns the URL left and `sslrootcert`. Both URL
/// (`postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem`) and key-value
/// (`host=h sslmode=verify-full sslrootcert=/ca.pem`) forms. `sslmode=prefer` is refused: it
/// falls back to plain text whenever TLS fails, which is an attacker's choice.
pub fn take_tls_words(url: &str) -> Result<(String, Option<String>), String> {
    let mut root = None;
    let mut prefer = false;
    let mut keep = |pair: &str| -> Option<String> {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => {
                root = Some(v.to_string());
                None
            }
            Some(("sslmode", "verify-ca" | "verify-full")) => Some("sslmode=require".into()),
            Some(("sslmode", "prefer")) => {
                prefer = true;
                None
            }
            _ => Some(pair.to_string()),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let rest: Vec<String> = query.split('&').filter_map(&mut keep).collect();
                if rest.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", rest.join("&"))
                }
            }
        }
    } else {
        let rest: Vec<String> = url.split_whitespace().filter_map(&mut keep).collect();
        rest.join(" ")
    };
    if prefer {
        return Err(
            "sslmode=prefer may fall back to plain text; use sslmode=verify-full (with \
                    sslrootcert) or sslmode=disable"
                .into(),
        );
    }
    Ok((rest, root))
}

#[cfg(test)]
mod tests {
    use super::take_tls_words;

    #[test]
    fn libpq_tls_words_become_ours() {
        let words = |u: &str| take_tls_words(u).expect("no prefer");
        assert_eq!(
            words("postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            (
                "postgres://u@h/db?sslmode=require".into(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            words("postgresql://h/db?sslrootcert=/ca.pem"),
            ("postgresql://h/db".into(), Some("/ca.pem".into()))
        );
        assert_eq!(
            words("host=h dbname=d sslmode=verify-ca sslrootcert=/ca.pem"),
            (
                "host=h dbname=d sslmode=require".into(),
                Some("/ca.pem".into())
            )
        );
        assert_eq!(
            words("postgres://h/db?sslmode=disable"),
            ("postgres://h/db?sslmode=disable".into(), None)
        );
        assert_eq!(words("postgres://h/db"), ("postgres://h/db".into(), None));
        assert!(take_tls_words("host=h sslmode=prefer").is_err());
        assert!(take_tls_words("postgres://h/db?sslmode=prefer&x=1").is_err());
    }
}
