//! Listings and times as FTP writes them: `LIST` (like `ls -l`), `NLST` (names), `MLSD`/`MLST`
//! facts (RFC 3659: type, size, modify, perm), and the `YYYYMMDDHHMMSS` times of MDTM and MFMT.

use super::store::Meta;
use crate::rights::{Right, Rights};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The MLST facts a client may ask for (OPTS MLST), in FEAT order.
pub const FACTS: [&str; 4] = ["type", "size", "modify", "perm"];

/// Which facts MLST/MLSD show (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub on: [bool; 4],
}

impl Default for Facts {
    fn default() -> Self {
        Facts { on: [true; 4] }
    }
}

impl Facts {
    /// `OPTS MLST type;size;` → the facts asked for that exist (unknown ones are ignored).
    pub fn parse(list: &str) -> Facts {
        let mut on = [false; 4];
        for f in list.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            if let Some(i) = FACTS.iter().position(|k| k.eq_ignore_ascii_case(f)) {
                on[i] = true;
            }
        }
        Facts { on }
    }

    /// `type;size;` as the reply to OPTS MLST says it.
    pub fn names(&self) -> String {
        FACTS
            .iter()
            .zip(self.on)
            .filter(|(_, on)| *on)
            .map(|(f, _)| format!("{f};"))
            .collect()
    }

    /// For FEAT: `type*;size*;modify*;perm*;`.
    pub fn feat(&self) -> String {
        FACTS
            .iter()
            .zip(self.on)
            .map(|(f, on)| format!("{f}{};", if on { "*" } else { "" }))
            .collect()
    }
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian, UTC).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `YYYYMMDDHHMMSS` (UTC), as MDTM and MLST's `modify` write it.
pub fn ftp_time(t: SystemTime) -> String {
    let s = secs(t);
    let (y, mo, d) = civil(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    format!(
        "{y:04}{mo:02}{d:02}{:02}{:02}{:02}",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

/// Parses MFMT's `YYYYMMDDHHMMSS[.sss]` (UTC).
pub fn parse_ftp_time(s: &str) -> Option<SystemTime> {
    let (main, frac) = s.split_once('.').unwrap_or((s, ""));
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let n = |a: usize, b: usize| main[a..b].parse::<u32>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0, 4)?,
        n(4, 6)?,
        n(6, 8)?,
        n(8, 10)?,
        n(10, 12)?,
        n(12, 14)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    if civil(days) != (i64::from(y), mo, d) {
        return None; // 31 February
    }
    let t = days * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    let base = if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
    };
    Some(base + Duration::from_nanos(u64::from(nanos)))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One `LIST` line, like `ls -l`: recent files with the time, older ones with the year.
pub fn list_line(name: &str, m: &Meta, now: SystemTime) -> String {
    let t = m.modified.unwrap_or(UNIX_EPOCH);
    let s = secs(t);
    let (y, mo, d) = civil(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    let recent = (secs(now) - s).abs() < 180 * 86_400;
    let when = if recent {
        format!("{:02}:{:02}", r / 3600, r / 60 % 60)
    } else {
        format!(" {y}")
    };
    let (kind, mode) = if m.is_dir() {
        ('d', "rwxr-xr-x")
    } else {
        ('-', "rw-r--r--")
    };
    format!(
        "{kind}{mode} 1 ftp ftp {:>12} {} {d:>2} {when:>5} {name}\r\n",
        m.size,
        MONTHS[(mo - 1) as usize]
    )
}

/// RFC 3659 `perm` fact: what this account may do with the entry.
fn perm(m: &Meta, rights: &Rights) -> String {
    let has = |r| rights.contains(r);
    let mut p = String::new();
    if m.is_dir() {
        if has(Right::List) {
            p.push_str("el");
        }
        if has(Right::Write) {
            p.push('c');
        }
        if has(Right::Mkdir) {
            p.push('m');
        }
        if has(Right::Delete) {
            p.push_str("dp");
        }
    } else {
        if has(Right::Append) {
            p.push('a');
        }
        if has(Right::Delete) {
            p.push('d');
        }
        if has(Right::Rename) && has(Right::Delete) {
            p.push('f');
        }
        if has(Right::Read) {
            p.push('r');
        }
        if has(Right::Overwrite) {
            p.push('w');
        }
    }
    p
}

/// The facts of one entry followed by a space and its name (no line end).
pub fn mlst_facts(name: &str, m: &Meta, rights: &Rights, facts: Facts, kind: &str) -> String {
    let mut out = String::new();
    if facts.on[0] {
        out.push_str(&format!("type={kind};"));
    }
    if facts.on[1] {
        out.push_str(&format!("size={};", m.size));
    }
    if facts.on[2] {
        if let Some(t) = m.modified {
            out.push_str(&format!("modify={};", ftp_time(t)));
        }
    }
    if facts.on[3] {
        out.push_str(&format!("perm={};", perm(m, rights)));
    }
    format!("{out} {name}")
}

/// The type fact of an entry of a listing.
pub fn kind_fact(m: &Meta) -> &'static str {
    if m.is_dir() {
        "dir"
    } else {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Kind;

    #[test]
    fn times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_721_729_472); // 2024-07-23 10:11:12
        assert_eq!(ftp_time(t), "20240723101112");
        assert_eq!(parse_ftp_time("20240723101112"), Some(t));
        assert_eq!(
            parse_ftp_time("20240723101112.5"),
            Some(t + Duration::from_millis(500))
        );
        assert_eq!(ftp_time(UNIX_EPOCH), "19700101000000");
        assert_eq!(
            parse_ftp_time("19691231235959").map(ftp_time).as_deref(),
            Some("19691231235959")
        );
        for bad in [
            "2024072310111",
            "20241323101112",
            "20240231101112",
            "2024072310111x",
            "20240723101112.x",
            "",
        ] {
            assert_eq!(parse_ftp_time(bad), None, "{bad}");
        }
        assert_eq!(civil(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn list_and_mlst_lines() {
        let now = UNIX_EPOCH + Duration::from_secs(1_721_729_472);
        let m = Meta::new(Kind::File, 42, Some(now));
        assert_eq!(
            list_line("a b.log", &m, now),
            "-rw-r--r-- 1 ftp ftp           42 Jul 23 10:11 a b.log\r\n"
        );
        let old = Meta::new(Kind::Dir, 4096, Some(UNIX_EPOCH));
        assert!(list_line("d", &old, now).starts_with("drwxr-xr-x"));
        assert!(list_line("d", &old, now).contains("Jan  1  1970 d"));
        let rights = Rights::parse_list("list,read,append").unwrap();
        assert_eq!(
            mlst_facts("a.log", &m, &rights, Facts::default(), "file"),
            "type=file;size=42;modify=20240723101112;perm=ar; a.log"
        );
        let f = Facts::parse("type;SIZE;nonsense;");
        assert_eq!(f.names(), "type;size;");
        assert_eq!(f.feat(), "type*;size*;modify;perm;");
        assert_eq!(
            mlst_facts("a", &m, &rights, f, "file"),
            "type=file;size=42; a"
        );
    }
}
