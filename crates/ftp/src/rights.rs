//! FTP rights: what an account may do inside its home.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One FTP right. The set an account holds decides which commands succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// LIST, NLST, MLSD, MLST, SIZE, MDTM.
    List,
    /// RETR.
    Read,
    /// MKD.
    Mkdir,
    /// STOR of a name that does not exist yet.
    Write,
    /// Extend an existing file: APPE, or STOR after REST at the file's current end.
    Append,
    /// RNFR/RNTO to a name that does not exist yet.
    Rename,
    /// DELE, RMD, and renaming a final (non-temporary) name away.
    Delete,
    /// Replace or truncate existing bytes: STOR over a file, REST before the end, RNTO onto a file.
    Overwrite,
}

impl Right {
    /// Every right, in the order they are listed.
    pub const ALL: [Right; 8] = [
        Right::List,
        Right::Read,
        Right::Mkdir,
        Right::Write,
        Right::Append,
        Right::Rename,
        Right::Delete,
        Right::Overwrite,
    ];

    /// The right's name in the users file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::List => "list",
            Right::Read => "read",
            Right::Mkdir => "mkdir",
            Right::Write => "write",
            Right::Append => "append",
            Right::Rename => "rename",
            Right::Delete => "delete",
            Right::Overwrite => "overwrite",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Right {
    type Err = UnknownRight;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Right::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownRight(s.to_string()))
    }
}

/// A right name that does not exist (the unknown name).
#[derive(Debug, thiserror::Error)]
#[error("unknown right {0:?} (known: list, read, mkdir, write, append, rename, delete, overwrite)")]
pub struct UnknownRight(pub String);

/// A set of [`Right`]s, stored as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rights(u8);

impl Rights {
    /// No right at all.
    pub const NONE: Rights = Rights(0);
    /// Every right.
    pub const ALL: Rights = Rights(0xff);

    /// The agent preset: may add and extend files in its home, never delete or rewrite them.
    pub fn agent() -> Rights {
        [
            Right::List,
            Right::Read,
            Right::Mkdir,
            Right::Write,
            Right::Append,
            Right::Rename,
        ]
        .into_iter()
        .collect()
    }

    /// The viewer preset: read only.
    pub fn viewer() -> Rights {
        [Right::List, Right::Read].into_iter().collect()
    }

    /// Whether `right` is granted.
    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// The granted rights, in [`Right::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Parses a comma separated list such as `list,read,mkdir`. `all` and `none` are accepted.
    pub fn parse_list(s: &str) -> Result<Rights, UnknownRight> {
        match s.trim() {
            "all" => return Ok(Rights::ALL),
            "none" | "" => return Ok(Rights::NONE),
            _ => {}
        }
        s.split(',').map(Right::from_str).collect()
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Self {
        Rights(iter.into_iter().fold(0, |acc, r| acc | r.bit()))
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Right::as_str).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

impl Serialize for Rights {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Right::as_str))
    }
}

impl<'de> Deserialize<'de> for Rights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| n.parse::<Right>())
            .collect::<Result<Rights, _>>()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_preset_cannot_delete_or_overwrite() {
        let r = Rights::agent();
        assert!(r.contains(Right::Write) && r.contains(Right::Append) && r.contains(Right::Rename));
        assert!(!r.contains(Right::Delete));
        assert!(!r.contains(Right::Overwrite));
        assert_eq!(r.to_string(), "list,read,mkdir,write,append,rename");
    }

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        let r = Rights::parse_list("read, list,delete").unwrap();
        assert_eq!(r.to_string(), "list,read,delete");
        assert_eq!(Rights::parse_list("all").unwrap(), Rights::ALL);
        assert!(Rights::parse_list("list,fly").is_err());
    }
}
