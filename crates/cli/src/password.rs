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

/// Reads a line from the terminal with echo switched off.
fn prompt(text: &str) -> Result<String> {
    let mut err = std::io::stderr();
    write!(err, "{text}")?;
    err.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios calls on stdin with a zeroed struct that tcgetattr fills.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let have_term = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    if have_term {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have_term {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    writeln!(err)?;
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
