//! `server.toml`: parsing and resolving never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(f) = toml::from_str::<logarchive_server::config::ServerConfigFile>(s) {
        if let Ok(settings) = logarchive_server::config::ServerSettings::resolve(f, Default::default()) {
            let _ = logarchive_server::config::parse_port_range(&settings.ftp.passive_ports);
        }
    }
});
