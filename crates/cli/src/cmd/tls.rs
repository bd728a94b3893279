//! `logarchive tls init`: a private CA and a server certificate signed by it, for FTPS and
//! HTTPS without openssl. The agents trust `ca.pem` (`ca_file`); the server uses `cert.pem` and
//! `key.pem`. (A self-signed server certificate used as its own CA is refused by rustls as
//! `CaUsedAsEndEntity`: hence two certificates.)

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(clap::Subcommand)]
enum TlsCommand {
    /// Write a private CA (ca.pem, ca-key.pem) and a server certificate and key signed by it
    /// (cert.pem, key.pem) for the names agents and browsers use to reach the server.
    Init {
        /// Folder for the four files.
        #[arg(long, default_value = "/etc/logarchive")]
        dir: PathBuf,
        /// The server's DNS names or IP addresses, as clients reach it: `a.example.org,10.0.0.5`
        /// (or the flag repeated).
        #[arg(long, required = true, value_delimiter = ',')]
        name: Vec<String>,
        /// Days the server certificate is valid (the CA: ten years).
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: TlsArgs) -> Result<()> {
    match args.command {
        TlsCommand::Init {
            dir,
            name,
            days,
            force,
        } => init(&dir, &name, days, force),
    }
}

fn init(dir: &Path, names: &[String], days: u32, force: bool) -> Result<()> {
    let files = ["ca.pem", "ca-key.pem", "cert.pem", "key.pem"].map(|f| dir.join(f));
    if !force {
        if let Some(f) = files.iter().find(|f| f.exists()) {
            bail!(
                "{} exists; --force replaces the CA and the certificate (agents must then trust \
                 the new ca.pem)",
                f.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let today = days_since_epoch();

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("logarchive CA for {}", names[0]),
    );
    valid(&mut ca, today - 1, today + 3650);
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;

    let key = KeyPair::generate().context("generating the server key")?;
    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("server names {names:?}"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    valid(&mut server, today - 1, today + i64::from(days));
    let cert = server
        .signed_by(&key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    let [ca_pem, ca_key_pem, cert_pem, key_pem] = &files;
    write(ca_pem, &ca_cert.pem(), 0o644)?;
    write(ca_key_pem, &ca_key.serialize_pem(), 0o600)?;
    write(cert_pem, &cert.pem(), 0o644)?;
    write(key_pem, &key.serialize_pem(), 0o600)?;
    println!(
        "Wrote {dir}/: ca.pem (give it to the agents as ca_file), cert.pem and key.pem (the \
         server's tls_cert and tls_key), ca-key.pem (keep it offline; it signs new certificates).",
        dir = dir.display()
    );
    if rustix::process::geteuid().is_root() {
        println!(
            "The key is readable by root only: let the service read it, e.g. \
             `chown logarchive {}`.",
            key_pem.display()
        );
    }
    Ok(())
}

/// Writes `text` to a new file (replacing one) created with `mode`.
fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn days_since_epoch() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

/// Valid from the start of day `from` to the start of day `to` (days since 1970-01-01, UTC).
fn valid(p: &mut CertificateParams, from: i64, to: i64) {
    let at = |days| {
        let (y, m, d) = logarchive_server::web::time::civil_from_days(days);
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    p.not_before = at(from);
    p.not_after = at(to);
}
