//! The files shipped in deploy/ stay valid: the example configurations load with the real
//! parsers, and the systemd units run the commands this binary has.

use std::path::PathBuf;

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
}

#[test]
fn example_configurations_load() {
    let s = logarchive_server::config::ServerConfigFile::load(&deploy("server.toml")).unwrap();
    let settings =
        logarchive_server::config::ServerSettings::resolve(s, Default::default()).unwrap();
    assert!(settings.tls.is_some());
    assert!(settings.ftp.tls_required);
    // (Building the FTP configuration would read the certificate, which lives on the server.)
    let a = logarchive_agent::config::AgentConfig::load(&deploy("agent.toml")).unwrap();
    assert_eq!(a.agent_id, "web-01");
}

#[test]
fn units_run_existing_commands() {
    for (unit, args) in [
        (
            "logarchive-server.service",
            "server --config /etc/logarchive/server.toml",
        ),
        (
            "logarchive-agent.service",
            "agent --config /etc/logarchive/agent.toml",
        ),
    ] {
        let text = std::fs::read_to_string(deploy(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/logarchive "))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        assert_eq!(exec, args, "{unit}");
        // The subcommand and its flags exist.
        let sub = args.split(' ').next().unwrap();
        let help = std::process::Command::new(env!("CARGO_BIN_EXE_logarchive"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(help.status.success());
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("--config"),
            "{unit}"
        );
    }
}
