//! S3 access keys: from a file of `AWS_ACCESS_KEY_ID=` / `AWS_SECRET_ACCESS_KEY=` lines (the
//! format of an env file; `#` comments, optional `export` and quotes), or from the process
//! environment. Never from the configuration itself, and never printed: `Debug` shows the key
//! id only.

use std::path::{Path, PathBuf};

/// An access key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why no credentials could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("cannot read S3 credentials from {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A variable is missing.
    #[error("{0} is not set (in the credentials file or the environment)")]
    Missing(&'static str),
}

impl Credentials {
    /// A key id and its secret.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// The secret key.
    pub fn secret(&self) -> &str {
        &self.secret_access_key
    }

    /// From `file` when given, else from the environment.
    pub fn load(file: Option<&Path>) -> Result<Credentials, CredentialsError> {
        match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Self::from_lookup(|name| env_file_value(&text, name))
            }
            None => Self::from_lookup(|name| std::env::var(name).ok()),
        }
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Credentials, CredentialsError> {
        let id = get("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty());
        let secret = get("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty());
        Ok(Credentials {
            access_key_id: id.ok_or(CredentialsError::Missing("AWS_ACCESS_KEY_ID"))?,
            secret_access_key: secret.ok_or(CredentialsError::Missing("AWS_SECRET_ACCESS_KEY"))?,
            session_token: get("AWS_SESSION_TOKEN").filter(|v| !v.is_empty()),
        })
    }
}

/// The value of `name` in env-file text (the last assignment wins).
fn env_file_value(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let (k, v) = line.split_once('=')?;
            (k.trim() == name).then(|| {
                let v = v.trim();
                let unquoted = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                unquoted.to_string()
            })
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_file_with_comments_exports_and_quotes() {
        let text = "# keys\nexport AWS_ACCESS_KEY_ID=\"AKID\"\nAWS_SECRET_ACCESS_KEY='s3cr=t'\n\nOTHER=1\n";
        let c = Credentials::from_lookup(|n| env_file_value(text, n)).unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret(), "s3cr=t");
        assert_eq!(c.session_token, None);
        assert!(!format!("{c:?}").contains("s3cr"), "the secret was printed");
    }

    #[test]
    fn a_missing_secret_is_named() {
        let e =
            Credentials::from_lookup(|n| env_file_value("AWS_ACCESS_KEY_ID=x\n", n)).unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }
}
