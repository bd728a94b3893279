//! `ftp://user@host:port/path` and `ftps://…` URLs.

use super::{ClientError, TlsMode};

/// A parsed FTP URL. Passwords are not accepted in URLs (they would show in `ps` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FtpUrl {
    /// `ftps://`: explicit FTPS (AUTH TLS).
    pub tls: bool,
    /// The user in the URL, if any.
    pub user: Option<String>,
    /// Server name or address.
    pub host: String,
    /// Control port (21 unless given).
    pub port: u16,
    /// Percent-decoded, absolute; `/` when the URL has no path.
    pub path: String,
}

impl FtpUrl {
    /// Parses `ftp://[user@]host[:port]` or `ftps://...`; a path is refused.
    pub fn parse(url: &str) -> Result<FtpUrl, ClientError> {
        let bad = |why: &str| ClientError::Invalid(format!("{url:?} is not an FTP URL: {why}"));
        let (tls, rest) = if let Some(r) = url.strip_prefix("ftps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ftp://") {
            (false, r)
        } else {
            return Err(bad("it must start with ftp:// or ftps://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (user, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if user.is_some_and(|u| u.contains(':')) {
            return Err(bad(
                "put no password in the URL; use --password-stdin or LOGARCHIVE_PASSWORD",
            ));
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let end = h.find(']').ok_or_else(|| bad("unclosed [ in the host"))?;
            let port = match &h[end + 1..] {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (h[..end].to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None => 21,
        };
        let user = user.map(percent_decode).transpose().map_err(|e| bad(&e))?;
        let path = percent_decode(path).map_err(|e| bad(&e))?;
        Ok(FtpUrl {
            tls,
            user,
            host,
            port,
            path,
        })
    }

    /// The client's TLS mode for this URL: none for `ftp://`, explicit for `ftps://`.
    pub fn tls_mode(&self, ca_file: Option<std::path::PathBuf>, insecure: bool) -> TlsMode {
        if self.tls {
            TlsMode::Explicit {
                ca_file,
                insecure_skip_verify: insecure,
            }
        } else {
            TlsMode::None
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| "not UTF-8 after decoding")?;
    if s.contains(['\r', '\n', '\0']) {
        return Err("line breaks and NUL are not allowed".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = FtpUrl::parse("ftps://agent01@archive.example:2121/Logs/a%20b.txt").unwrap();
        assert_eq!(
            u,
            FtpUrl {
                tls: true,
                user: Some("agent01".into()),
                host: "archive.example".into(),
                port: 2121,
                path: "/Logs/a b.txt".into()
            }
        );
        let u = FtpUrl::parse("ftp://[::1]:2121").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.user),
            ("::1", 2121, "/", None)
        );
        assert_eq!(FtpUrl::parse("ftp://h/x").unwrap().port, 21);
        assert!(FtpUrl::parse("http://h/").is_err());
        assert!(FtpUrl::parse("ftp://u:secret@h/").is_err());
        assert!(FtpUrl::parse("ftp://h/%0d%0aDELE x").is_err());
    }
}
