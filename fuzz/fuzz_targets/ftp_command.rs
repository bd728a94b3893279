//! FTP command lines: any bytes are a command or a parse error, never a panic; a parsed line's
//! arguments carry no line end (a reply built from them could not be split).
#![no_main]
use libfuzzer_sys::fuzz_target;
use logarchive_ftp::server::command::{parse, Command};

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = parse(data) {
        let text = format!("{cmd:?}");
        assert!(!text.is_empty());
        if let Command::Site(verb, _) | Command::Unknown(verb) = &cmd {
            assert!(verb.len() <= 16 && !verb.contains(['\r', '\n']));
        }
    }
});
