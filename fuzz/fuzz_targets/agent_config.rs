//! `agent.toml`: parsing and validation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = logarchive_agent::config::AgentConfig::parse(s);
});
