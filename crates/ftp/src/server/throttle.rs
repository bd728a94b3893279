//! Per-account speed limiters, shared by every session of that account and retuned at once when
//! its limits change (also for transfers already running).

use super::accounts::Accounts;
use async_speed_limit::Limiter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The upload and download limiter of one account.
#[derive(Debug, Clone)]
pub struct UserLimiters {
    pub upload: Limiter,
    pub download: Limiter,
}

impl UserLimiters {
    fn new() -> Self {
        UserLimiters {
            upload: Limiter::new(f64::INFINITY),
            download: Limiter::new(f64::INFINITY),
        }
    }
}

/// All limiters, keyed by account name.
#[derive(Debug, Default)]
pub struct Throttles {
    by_user: Mutex<HashMap<String, UserLimiters>>,
}

fn speed(bytes_per_second: u64) -> f64 {
    if bytes_per_second == 0 {
        f64::INFINITY
    } else {
        bytes_per_second as f64
    }
}

impl Throttles {
    /// The limiters of `user`, created on first use with its current limits.
    pub fn for_user(&self, accounts: &dyn Accounts, user: &str) -> UserLimiters {
        let l = {
            let mut map = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(user.to_string())
                .or_insert_with(UserLimiters::new)
                .clone()
        };
        apply(&l, accounts, user);
        l
    }

    /// Applies every known account's limits to its limiters.
    pub fn retune(&self, accounts: &dyn Accounts) {
        let map = self
            .by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, l) in map.iter() {
            apply(l, accounts, name);
        }
    }

    /// Keeps the limiters in step with the accounts until the runtime ends (`None` if accounts
    /// never change).
    pub fn follow(
        self: &Arc<Self>,
        accounts: Arc<dyn Accounts>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut rx = accounts.changes()?;
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                me.retune(&*accounts);
            }
        }))
    }
}

fn apply(l: &UserLimiters, accounts: &dyn Accounts, user: &str) {
    let (up, down) = match accounts.get(user) {
        Some(a) => (speed(a.upload_limit), speed(a.download_limit)),
        None => (f64::INFINITY, f64::INFINITY),
    };
    if l.upload.speed_limit() != up {
        l.upload.set_speed_limit(up);
    }
    if l.download.speed_limit() != down {
        l.download.set_speed_limit(down);
    }
}
