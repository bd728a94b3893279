//! FTP command lines: read with a bound, parsed into [`Command`]s. Pure functions over bytes: what
//! a hostile client sends ends here as a `Command` or a [`ParseError`], never as a panic (fuzzed:
//! `fuzz/fuzz_targets/ftp_command.rs`).

/// The longest command line taken (without its line end). A longer one closes the session.
pub const MAX_LINE: usize = 4096;

/// A command as the client sent it; paths are as given (resolved later against the working
/// folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(String),
    Acct,
    /// `AUTH TLS` / `AUTH SSL` (the mechanism, upper case).
    Auth(String),
    Pbsz(String),
    /// `PROT C|S|E|P`.
    Prot(char),
    Ccc,
    Quit,
    Noop,
    Syst,
    Feat,
    /// `OPTS <option> [args]`: the rest of the line.
    Opts(String),
    Host(String),
    Pwd,
    Cwd(String),
    Cdup,
    Mkd(String),
    Rmd(String),
    Dele(String),
    Rnfr(String),
    Rnto(String),
    /// `TYPE A|I|L 8` (A and I are taken; the bytes are never converted).
    Type(char),
    Mode(char),
    Stru(char),
    Pasv,
    /// `EPSV`, `EPSV 1|2`, `EPSV ALL`.
    Epsv(Option<String>),
    Port,
    Eprt,
    Rest(u64),
    Retr(String),
    Stor(String),
    Appe(String),
    Stou,
    Allo,
    Abor,
    Size(String),
    Mdtm(String),
    /// `MFMT <YYYYMMDDHHMMSS> <path>`.
    Mfmt(String, String),
    Mlst(Option<String>),
    Mlsd(Option<String>),
    List(Option<String>),
    Nlst(Option<String>),
    Stat(Option<String>),
    Help,
    /// `SITE <verb> <arguments>` (verb upper case).
    Site(String, String),
    /// A verb we do not know (upper case, at most 16 characters kept).
    Unknown(String),
}

/// Why a line is not a command we can carry out (answered 500/501, the session goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// 500: nothing, or not a command.
    Empty,
    /// 501: the line is not UTF-8.
    NotUtf8,
    /// 501: the arguments are missing or malformed.
    Syntax(&'static str),
}

impl ParseError {
    pub fn reply(&self) -> (u16, &'static str) {
        match self {
            ParseError::Empty => (500, "Empty command"),
            ParseError::NotUtf8 => (501, "Command line is not UTF-8"),
            ParseError::Syntax(why) => (501, why),
        }
    }
}

/// Strips Telnet IAC sequences (`IAC IP`, `IAC DM`, ... as clients send before `ABOR`) and the
/// line end from a raw line.
fn clean(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            0xFF => {
                // IAC IAC is a literal 0xFF; IAC <command> is dropped with its command byte.
                if line.get(i + 1) == Some(&0xFF) {
                    out.push(0xFF);
                }
                i += 2;
            }
            b'\r' | b'\n' if i + 1 >= line.len() || line[i + 1..].iter().all(|b| *b == b'\n') => {
                break
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    while out.last().is_some_and(|b| *b == b'\r' || *b == b'\n') {
        out.pop();
    }
    out
}

fn required(arg: &str, what: &'static str) -> Result<String, ParseError> {
    if arg.is_empty() {
        Err(ParseError::Syntax(what))
    } else {
        Ok(arg.to_string())
    }
}

fn optional(arg: &str) -> Option<String> {
    (!arg.is_empty()).then(|| arg.to_string())
}

/// `LIST -la dir`: options in the style of `ls` are dropped (clients send them, servers ignore
/// them); what remains is the path.
fn list_arg(arg: &str) -> Option<String> {
    let mut rest = arg.trim_start();
    while rest.starts_with('-') {
        match rest.find(' ') {
            Some(i) => rest = rest[i..].trim_start(),
            None => rest = "",
        }
    }
    optional(rest)
}

fn one_char(arg: &str, allowed: &str, what: &'static str) -> Result<char, ParseError> {
    let mut chars = arg.chars();
    match (chars.next(), chars.as_str().trim()) {
        (Some(c), rest) if allowed.contains(c.to_ascii_uppercase()) => {
            let c = c.to_ascii_uppercase();
            // `TYPE L 8` and `TYPE A N` are the only forms with a second word.
            if rest.is_empty()
                || (c == 'L' && rest == "8")
                || (c == 'A' && rest.eq_ignore_ascii_case("N"))
            {
                Ok(c)
            } else {
                Err(ParseError::Syntax(what))
            }
        }
        _ => Err(ParseError::Syntax(what)),
    }
}

/// Parses one command line (with or without its line end).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = clean(line);
    let text = std::str::from_utf8(&line).map_err(|_| ParseError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (verb, arg) = match text.find(' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    if verb.is_empty() || verb.len() > 16 || !verb.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ParseError::Empty);
    }
    let verb = verb.to_ascii_uppercase();
    // Paths keep their spaces (names may begin or end with one); other arguments are trimmed.
    let path = arg;
    let word = arg.trim();
    Ok(match verb.as_str() {
        "USER" => Command::User(required(word, "USER needs a name")?),
        "PASS" => Command::Pass(arg.to_string()),
        "ACCT" => Command::Acct,
        "AUTH" => Command::Auth(required(word, "AUTH needs a mechanism")?.to_ascii_uppercase()),
        "PBSZ" => Command::Pbsz(required(word, "PBSZ needs a size")?),
        "PROT" => Command::Prot(one_char(word, "CSEP", "PROT takes C, S, E or P")?),
        "CCC" => Command::Ccc,
        "QUIT" => Command::Quit,
        "NOOP" => Command::Noop,
        "SYST" => Command::Syst,
        "FEAT" => Command::Feat,
        "OPTS" => Command::Opts(required(word, "OPTS needs an option")?),
        "HOST" => Command::Host(required(word, "HOST needs a name")?),
        "PWD" | "XPWD" => Command::Pwd,
        "CWD" | "XCWD" => Command::Cwd(required(path, "CWD needs a folder")?),
        "CDUP" | "XCUP" => Command::Cdup,
        "MKD" | "XMKD" => Command::Mkd(required(path, "MKD needs a name")?),
        "RMD" | "XRMD" => Command::Rmd(required(path, "RMD needs a name")?),
        "DELE" => Command::Dele(required(path, "DELE needs a name")?),
        "RNFR" => Command::Rnfr(required(path, "RNFR needs a name")?),
        "RNTO" => Command::Rnto(required(path, "RNTO needs a name")?),
        "TYPE" => Command::Type(one_char(word, "AIL", "TYPE takes A, I or L 8")?),
        "MODE" => Command::Mode(one_char(word, "SBC", "MODE takes S, B or C")?),
        "STRU" => Command::Stru(one_char(word, "FRP", "STRU takes F, R or P")?),
        "PASV" => Command::Pasv,
        "EPSV" => Command::Epsv(optional(word)),
        "PORT" => Command::Port,
        "EPRT" => Command::Eprt,
        "REST" => Command::Rest(
            word.parse()
                .map_err(|_| ParseError::Syntax("REST needs a byte offset"))?,
        ),
        "RETR" => Command::Retr(required(path, "RETR needs a name")?),
        "STOR" => Command::Stor(required(path, "STOR needs a name")?),
        "APPE" => Command::Appe(required(path, "APPE needs a name")?),
        "STOU" => Command::Stou,
        "ALLO" => Command::Allo,
        "ABOR" => Command::Abor,
        "SIZE" => Command::Size(required(path, "SIZE needs a name")?),
        "MDTM" => Command::Mdtm(required(path, "MDTM needs a name")?),
        "MFMT" => {
            let (time, p) = word
                .split_once(' ')
                .ok_or(ParseError::Syntax("MFMT needs a time and a name"))?;
            let p = arg.trim_start()[time.len()..]
                .strip_prefix(' ')
                .unwrap_or(p);
            Command::Mfmt(
                time.to_string(),
                required(p, "MFMT needs a time and a name")?,
            )
        }
        "MLST" => Command::Mlst(optional(path)),
        "MLSD" => Command::Mlsd(optional(path)),
        "LIST" => Command::List(list_arg(path)),
        "NLST" => Command::Nlst(list_arg(path)),
        "STAT" => Command::Stat(list_arg(path)),
        "HELP" => Command::Help,
        "SITE" => {
            let w = word;
            let (v, rest) = match w.find(' ') {
                Some(i) => (&w[..i], w[i + 1..].trim_start()),
                None => (w, ""),
            };
            if v.is_empty() {
                return Err(ParseError::Syntax("SITE needs a command"));
            }
            Command::Site(v.to_ascii_uppercase(), rest.to_string())
        }
        _ => Command::Unknown(verb),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        parse(s.as_bytes())
    }

    #[test]
    fn commands_and_arguments() {
        assert_eq!(p("USER agent01\r\n"), Ok(Command::User("agent01".into())));
        assert_eq!(p("user agent01\n"), Ok(Command::User("agent01".into())));
        assert_eq!(
            p("PASS  two  spaces "),
            Ok(Command::Pass(" two  spaces ".into()))
        );
        assert_eq!(p("PASS"), Ok(Command::Pass(String::new())));
        assert_eq!(p("STOR  lead.log"), Ok(Command::Stor(" lead.log".into())));
        assert_eq!(p("CWD a b/c d"), Ok(Command::Cwd("a b/c d".into())));
        assert_eq!(p("XPWD"), Ok(Command::Pwd));
        assert_eq!(p("TYPE I"), Ok(Command::Type('I')));
        assert_eq!(p("TYPE a n"), Ok(Command::Type('A')));
        assert_eq!(p("TYPE L 8"), Ok(Command::Type('L')));
        assert_eq!(p("REST 1234"), Ok(Command::Rest(1234)));
        assert_eq!(p("LIST -la /logs"), Ok(Command::List(Some("/logs".into()))));
        assert_eq!(p("LIST -a"), Ok(Command::List(None)));
        assert_eq!(p("NLST"), Ok(Command::Nlst(None)));
        assert_eq!(
            p("MFMT 20240723101112 /a b.log"),
            Ok(Command::Mfmt("20240723101112".into(), "/a b.log".into()))
        );
        assert_eq!(
            p("site sha256 /a b"),
            Ok(Command::Site("SHA256".into(), "/a b".into()))
        );
        assert_eq!(p("EPSV ALL"), Ok(Command::Epsv(Some("ALL".into()))));
        assert_eq!(p("FOO bar"), Ok(Command::Unknown("FOO".into())));
        assert_eq!(p("AUTH tls"), Ok(Command::Auth("TLS".into())));
        assert_eq!(p("PROT p"), Ok(Command::Prot('P')));
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        assert_eq!(p(""), Err(ParseError::Empty));
        assert_eq!(p("\r\n"), Err(ParseError::Empty));
        assert_eq!(p("   "), Err(ParseError::Empty));
        assert_eq!(parse(b"USER \xff\xfe\x80"), Err(ParseError::NotUtf8));
        assert!(matches!(p("SIZE"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("MDTM "), Err(ParseError::Syntax(_))));
        assert!(matches!(p("REST -1"), Err(ParseError::Syntax(_))));
        assert!(matches!(
            p("REST 99999999999999999999999"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(p("TYPE X"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("TYPE I extra"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("MFMT 2024"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("SITE"), Err(ParseError::Syntax(_))));
        assert_eq!(p("12 34"), Err(ParseError::Empty));
        assert_eq!(
            p("ABCDEFGHIJKLMNOPQ"),
            Err(ParseError::Empty),
            "verbs are short"
        );
    }

    #[test]
    fn telnet_interrupts_before_abor_are_dropped() {
        assert_eq!(parse(b"\xff\xf4\xff\xf2ABOR\r\n"), Ok(Command::Abor));
        assert_eq!(
            parse(b"\xff\xffABOR"),
            Err(ParseError::NotUtf8),
            "IAC IAC is a byte 0xFF"
        );
    }
}
