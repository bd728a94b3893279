//! logarchive's `SITE` extensions, shared by the client and the server:
//!
//! - `SITE SHA256 <path>` → `213 <hex>`: the SHA-256 of a file (the server keeps it, so it is
//!   answered without reading the file again).
//! - `SITE ALIAS <path> <name>` → `200`: the file at `<path>` was also known as `<name>` where it
//!   came from (a rotated log, `service.log.1`); the archive's catalog finds it by that name.
//!   Both arguments are [`encode`]d, so either may hold spaces.

/// The longest name `SITE ALIAS` takes (bytes, decoded).
pub const MAX_ALIAS: usize = 1024;

/// Encodes one argument: `%`, spaces and control characters as `%XX`, everything else as is.
pub fn encode(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    for c in arg.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes one argument made by [`encode`]. `None` for a bad escape or bytes that are not UTF-8.
pub fn decode(arg: &str) -> Option<String> {
    let b = arg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        for s in [
            "plain",
            "with space",
            "100% sure",
            "tab\there",
            "ünï cødé",
            "",
        ] {
            let e = encode(s);
            assert!(!e.contains(' ') && !e.contains('\t'), "{e}");
            assert_eq!(decode(&e).as_deref(), Some(s));
        }
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%2"), None);
        assert_eq!(decode("%FF"), None, "not UTF-8");
    }
}
