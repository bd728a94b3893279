//! Replies: a code and text, one line or several (RFC 959 §4.2). Texts never contain a line end
//! from a client: whatever comes from outside is cleaned first ([`clean`]).

use std::borrow::Cow;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// One or more lines.
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// A reply of several lines: `code-first`, ` middle`..., `code last`.
    pub fn multi(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply { code, lines }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_to(&mut out);
        out
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let n = self.lines.len();
        if n <= 1 {
            let text = self.lines.first().map_or("", |l| l.as_ref());
            let _ = write!(out, "{} {}\r\n", self.code, text);
            return;
        }
        for (i, l) in self.lines.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{}-{}\r\n", self.code, l);
            } else if i + 1 == n {
                let _ = write!(out, "{} {}\r\n", self.code, l);
            } else {
                // Continuation lines start with a space, so none can look like an end line.
                let _ = write!(out, " {l}\r\n");
            }
        }
    }
}

/// Text from outside (a file name, an error) made safe for a reply line: no line ends or other
/// control characters.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A path in a 257 reply: quoted, with quotes inside doubled (RFC 959 appendix II).
pub fn quote_path(path: &str) -> String {
    format!("\"{}\"", clean(path).replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        assert_eq!(Reply::new(200, "OK").to_bytes(), b"200 OK\r\n");
        let r = Reply::multi(211, vec!["Features:".into(), "SIZE".into(), "End".into()]);
        assert_eq!(r.to_bytes(), b"211-Features:\r\n SIZE\r\n211 End\r\n");
    }

    #[test]
    fn outside_text_cannot_inject_lines() {
        assert_eq!(clean("a\r\n226 fake"), "a  226 fake");
        assert_eq!(quote_path("/a \"b\"\n"), "\"/a \"\"b\"\" \"");
    }
}
