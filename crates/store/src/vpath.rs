//! Virtual paths: what a client names, confined to its home.
//!
//! A client path is resolved lexically first (`..` can never climb above the home: it stops at
//! the home's root, as in a chroot); the kernel then opens it beneath the home (see fsops.rs).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a client path is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// A NUL byte (or another character no name may hold).
    #[error("path contains a forbidden character")]
    BadCharacter,
    /// A name longer than a file system allows.
    #[error("name too long")]
    TooLong,
}

/// A path as normalised components (no `.`, `..` or empty parts): inside a home as a client
/// names it, or in the store once the home is joined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtualPath {
    parts: Vec<String>,
}

impl VirtualPath {
    /// Normalises a path from a command (the session's working folder already joined).
    /// `..` at the root stays at the root. NUL, control characters and backslashes are refused,
    /// as are components that are not UTF-8.
    pub fn parse(path: &Path) -> Result<VirtualPath, PathError> {
        let mut parts: Vec<String> = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    parts.pop();
                }
                Component::Normal(name) => {
                    let name = check_name(name)?;
                    if name == "..." || name.trim_matches('.').is_empty() {
                        // Names made only of dots are either `.`/`..` in disguise or confusing.
                        return Err(PathError::BadCharacter);
                    }
                    parts.push(name.to_string());
                }
            }
        }
        Ok(VirtualPath { parts })
    }

    /// Whether this is the home itself.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// Its components.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// `self` followed by `other` (a home and a path inside it).
    pub fn join(&self, other: &VirtualPath) -> VirtualPath {
        let mut parts = self.parts.clone();
        parts.extend(other.parts.iter().cloned());
        VirtualPath { parts }
    }

    /// `self` with one more component (already checked: a name from a listing or a path).
    pub fn child(&self, name: &str) -> VirtualPath {
        let mut parts = self.parts.clone();
        parts.push(name.to_string());
        VirtualPath { parts }
    }

    /// The last part of the path, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The path relative to the home, for joining onto the home's real folder.
    pub fn relative(&self) -> PathBuf {
        self.parts.iter().collect()
    }

    /// `/a/b` form.
    pub fn display(&self) -> String {
        format!("/{}", self.parts.join("/"))
    }
}

fn check_name(name: &OsStr) -> Result<&str, PathError> {
    let s = std::str::from_utf8(name.as_bytes()).map_err(|_| PathError::BadCharacter)?;
    if s.len() > 255 {
        return Err(PathError::TooLong);
    }
    if s.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::BadCharacter);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(s: &str) -> Result<String, PathError> {
        VirtualPath::parse(Path::new(s)).map(|v| v.display())
    }

    #[test]
    fn dot_dot_stops_at_the_home_root() {
        assert_eq!(vp("/a/b/../c").unwrap(), "/a/c");
        assert_eq!(vp("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(vp("a/./b//c").unwrap(), "/a/b/c");
        assert_eq!(vp("/").unwrap(), "/");
    }

    #[test]
    fn odd_names_are_refused() {
        assert_eq!(vp("/a\\..\\b"), Err(PathError::BadCharacter));
        assert_eq!(vp("/a\u{1}b"), Err(PathError::BadCharacter));
        assert_eq!(vp("/..."), Err(PathError::BadCharacter));
        assert_eq!(
            vp(&format!("/{}", "x".repeat(256))),
            Err(PathError::TooLong)
        );
    }
}
