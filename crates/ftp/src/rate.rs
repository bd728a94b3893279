//! Speed limits as configured: bytes per second, written as a number or a size such as `2MiB`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A speed limit in bytes per second; 0 means unlimited. Written as an integer or a size string
/// such as `"2MiB"` (per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct ByteRate(pub u64);

impl ByteRate {
    /// No limit.
    pub const UNLIMITED: ByteRate = ByteRate(0);

    /// Whether this is no limit at all.
    pub fn is_unlimited(self) -> bool {
        self.0 == 0
    }

    /// The rate as the limiter wants it: infinity for unlimited.
    pub fn as_limiter_speed(self) -> f64 {
        if self.0 == 0 {
            f64::INFINITY
        } else {
            self.0 as f64
        }
    }
}

impl FromStr for ByteRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_end_matches("/s");
        if t.is_empty()
            || t == "0"
            || t.eq_ignore_ascii_case("none")
            || t.eq_ignore_ascii_case("unlimited")
        {
            return Ok(ByteRate(0));
        }
        if let Ok(n) = t.parse::<u64>() {
            return Ok(ByteRate(n));
        }
        t.parse::<bytesize::ByteSize>()
            .map(|b| ByteRate(b.as_u64()))
            .map_err(|e| format!("invalid speed {s:?}: {e} (examples: 0, 512KiB, 2MiB, 1048576)"))
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB` (binary units, one
/// decimal). (bytesize 1's binary units print as `kiB`.)
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let (mut v, mut unit) = (n as f64 / 1024.0, 0);
    while v >= 1023.95 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("unlimited")
        } else {
            write!(f, "{}/s", human_bytes(self.0))
        }
    }
}

impl Serialize for ByteRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteRate(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod human_tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(20 << 20), "20.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
