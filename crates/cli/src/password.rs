//! Where passwords come from: `--password-stdin`, `LOGARCHIVE_PASSWORD`, or a prompt on the
//! terminal (echo off). Never from the command line, where `ps` would show it.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Write};

pub fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let p = line.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(p);
    }
    if let Ok(p) = std::env::var("LOGARCHIVE_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password given: use --password-stdin, LOGARCHIVE_PASSWORD, or run on a terminal");
    }
    let p = prompt("Password: ")?;
    if confirm && prompt("Repeat password: ")? != p {
        bail!("the passwords differ");
    }
    Ok(p)
}

/// Reads a line from the terminal with echo switched off, byte by byte: Enter ends it,
/// Backspace and Ctrl-U edit it, Ctrl-C and Ctrl-D give up. The terminal's settings come back
/// whatever happens, Ctrl-C included (the prompt takes it as a key instead of a signal, which
/// would end the process with echo still off).
fn prompt(text: &str) -> Result<String> {
    use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex};
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet
            .local_modes
            .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
        quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
        quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(&stdin, OptionalActions::Now, &quiet)
            .context("switching the terminal's echo off")?;
    }
    // Asked only once echo is off: what is typed at once is not shown either.
    let mut err = std::io::stderr();
    let asked = write!(err, "{text}").and_then(|()| err.flush());
    let read = match asked {
        Ok(()) => read_line_raw(&mut stdin.lock()),
        Err(e) => Err(e.into()),
    };
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(&stdin, OptionalActions::Now, t);
    }
    writeln!(err)?;
    read
}

/// A line typed with echo off, its editing keys applied.
fn read_line_raw(input: &mut impl std::io::Read) -> Result<String> {
    let mut line: Vec<u8> = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte).context("reading the password")? == 0 {
            break; // end of input
        }
        match byte[0] {
            b'\r' | b'\n' => break,
            0x03 => bail!("interrupted"),
            0x04 if line.is_empty() => bail!("no password given"),
            0x04 => break,
            0x15 => line.clear(),
            0x7f | 0x08 => {
                // A whole character: its continuation bytes, then its first.
                while line.last().is_some_and(|b| b & 0xc0 == 0x80) {
                    line.pop();
                }
                line.pop();
            }
            b => line.push(b),
        }
    }
    String::from_utf8(line).context("the password is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_keys_edit_the_line() {
        let read = |keys: &[u8]| read_line_raw(&mut &keys[..]);
        assert_eq!(read(b"secret\r").unwrap(), "secret");
        assert_eq!(read(b"sekx\x7f\x7fcret\n").unwrap(), "secret");
        assert_eq!(read("pässé\x7f\x7fe\r".as_bytes()).unwrap(), "päse");
        assert_eq!(read(b"wrong\x15right\r").unwrap(), "right");
        assert!(read(b"abc\x03")
            .unwrap_err()
            .to_string()
            .contains("interrupted"));
        assert!(read(b"\x04").is_err());
        assert_eq!(read(b"end of input").unwrap(), "end of input");
    }
}
