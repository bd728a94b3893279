//! `ftp://` and `ftps://` URLs of the agent's config and the CLI: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = logarchive_ftp::client::FtpUrl::parse(s);
});
