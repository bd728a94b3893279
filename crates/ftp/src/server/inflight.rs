//! Uploads in flight, by file. A second upload to the same file waits for the first, and SIZE,
//! MLST and `SITE SHA256` of a file being written wait until its writer has finished: after a
//! cut connection the old transfer may still be flushing its last chunks while the client,
//! reconnected, asks for the size to resume from. Without this it could get a size that is about
//! to grow, and its resumed write would land before the end.

use super::vpath::VirtualPath;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Default)]
pub(crate) struct Inflight {
    files: Mutex<HashMap<VirtualPath, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a file is being written; dropping it lets waiters go on.
pub(crate) struct Writing<'a> {
    owner: &'a Inflight,
    key: VirtualPath,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Inflight {
    fn entry(&self, key: &VirtualPath) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.files.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(key.clone()).or_default())
    }

    /// Waits for any other writer of `key`, then marks it as being written.
    pub async fn write(&self, key: &VirtualPath) -> Writing<'_> {
        let guard = self.entry(key).lock_owned().await;
        Writing {
            owner: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    /// [`Inflight::write`], waiting at most `limit`; `None` if the file is still being written.
    pub async fn write_within(
        &self,
        key: &VirtualPath,
        limit: std::time::Duration,
    ) -> Option<Writing<'_>> {
        tokio::time::timeout(limit, self.write(key)).await.ok()
    }

    /// Waits until nobody is writing `key`, at most `limit`; `false` if it still is.
    pub async fn settled_within(&self, key: &VirtualPath, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, self.settled(key)).await.is_ok()
    }

    /// Waits until nobody is writing `key`.
    pub async fn settled(&self, key: &VirtualPath) {
        let existing = {
            let m = self.files.lock().unwrap_or_else(|p| p.into_inner());
            m.get(key).cloned()
        };
        if let Some(lock) = existing {
            drop(lock.lock().await);
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut m = self.owner.files.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the entry unless someone else holds or awaits it.
        if m.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            m.remove(&self.key);
        }
    }
}
