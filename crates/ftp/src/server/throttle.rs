//! Per-user speed limiters, shared by every session of that user and retuned at once when the
//! user's limits change (also for transfers already running).

use crate::users::{UserDb, UsersFile};
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

impl Throttles {
    /// The limiters of `user`, created on first use with the limits of the current record.
    pub fn for_user(&self, users: &UsersFile, user: &str) -> UserLimiters {
        let mut map = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        let l = map
            .entry(user.to_string())
            .or_insert_with(UserLimiters::new)
            .clone();
        apply(&l, users, user);
        l
    }

    /// Applies the limits of every account in `users` to the existing limiters.
    pub fn retune(&self, users: &UsersFile) {
        let map = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        for (name, l) in map.iter() {
            apply(l, users, name);
        }
    }

    /// Keeps the limiters in step with the user database until the runtime ends.
    pub fn follow(self: &Arc<Self>, db: Arc<UserDb>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let mut rx = db.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                me.retune(&db.snapshot());
            }
        })
    }
}

fn apply(l: &UserLimiters, users: &UsersFile, user: &str) {
    let (up, down) = match users.users.get(user) {
        Some(r) => (
            r.upload_limit.as_limiter_speed(),
            r.download_limit.as_limiter_speed(),
        ),
        None => (f64::INFINITY, f64::INFINITY),
    };
    if l.upload.speed_limit() != up {
        l.upload.set_speed_limit(up);
    }
    if l.download.speed_limit() != down {
        l.download.set_speed_limit(down);
    }
}
