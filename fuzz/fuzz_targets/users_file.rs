//! The user record file (`users.toml`), edited by hand as often as by tools: never a panic, and
//! what parses says only what it may (valid names, normalised homes).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = logarchive_server::users::UsersFile::parse(s);
});
