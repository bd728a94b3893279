//! An FTP server inside a program of your own: accounts kept in memory, files in a folder.
//!
//! ```text
//! cargo run -p logarchive-ftp --example embedded_server -- /tmp/ftp-root 127.0.0.1:2121
//! lftp -u alice,wonderland -e 'mkdir -p a/b; put Cargo.toml -o a/b/x; ls a/b; quit' 127.0.0.1:2121
//! ```
//!
//! What it shows: the [`Accounts`] trait (where the server finds accounts; logarchive's own is
//! the users file in its server crate), [`LocalStorage`] as the store, the
//! server's events (one per upload, rename, delete: what logarchive's catalog is built from),
//! a change of an account applied to a running server, and an orderly shutdown on Ctrl-C.

use logarchive_ftp::rights::Rights;
use logarchive_ftp::server::{
    self, Account, Accounts, FtpEvent, FtpServerConfig, LocalStorage, Storage,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Accounts in memory. A real program keeps password hashes (argon2, say), not passwords.
struct MemoryAccounts {
    accounts: RwLock<HashMap<String, (String, Account)>>,
    /// Bumped on every change so the server applies new speed limits to running transfers.
    generation: watch::Sender<u64>,
}

impl MemoryAccounts {
    fn new() -> Self {
        MemoryAccounts {
            accounts: RwLock::default(),
            generation: watch::channel(0).0,
        }
    }

    fn set(&self, password: &str, account: Account) {
        if let Ok(mut a) = self.accounts.write() {
            a.insert(account.name.clone(), (password.to_string(), account));
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Accounts for MemoryAccounts {
    fn verify(&self, name: &str, password: &str) -> Option<Account> {
        let a = self.accounts.read().ok()?;
        let (pw, account) = a.get(name)?;
        // Compare in constant time so the answer's timing tells nothing of the password.
        let same = pw.len() == password.len()
            && pw
                .bytes()
                .zip(password.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
        same.then(|| account.clone())
    }

    fn get(&self, name: &str) -> Option<Account> {
        self.accounts.read().ok()?.get(name).map(|(_, a)| a.clone())
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.generation.subscribe())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| "ftp-root".into()));
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:2121").parse()?;
    std::fs::create_dir_all(root.join("alice"))?;

    let accounts = Arc::new(MemoryAccounts::new());
    // Alice may do everything inside /alice; her uploads are limited to 10 MiB/s.
    let mut alice = Account::new("alice", "/alice", Rights::ALL);
    alice.upload_limit = 10 * 1024 * 1024;
    accounts.set("wonderland", alice.clone());
    // Bob reads everything and writes nothing.
    accounts.set("builder1", Account::new("bob", "/", Rights::viewer()));

    let store: Arc<dyn Storage> = Arc::new(LocalStorage::open(&root)?);
    let config = FtpServerConfig::new(listen, &root);
    let handle = server::start_with(config, accounts.clone(), store).await?;
    println!("FTP on {} serving {}", handle.local_addr(), root.display());

    // Lift Alice's limit while the server runs: transfers in flight get the new rate.
    alice.upload_limit = 0;
    accounts.set("wonderland", alice);

    let mut events = handle.subscribe();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => match ev {
                Ok(FtpEvent::UploadCompleted { user, path, size, sha256, .. }) => {
                    println!("{user} uploaded {path} ({size} bytes, sha256 {sha256:?})");
                }
                Ok(other) => println!("{other:?}"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("missed {n} events");
                }
                Err(_) => break,
            },
        }
    }
    let report = handle.shutdown().await;
    println!("stopped: {report:?}");
    Ok(())
}
