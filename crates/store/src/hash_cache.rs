//! SHA-256 states of recently written files, so `SITE SHA256` after an upload (or a resumed or
//! appended one) answers without reading the file again.

use crate::sha::Sha256State;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

const CAPACITY: usize = 16 * 1024;

/// What identifies the file version a hash state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    pub ino: u64,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl FileVersion {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileVersion {
            ino: meta.ino(),
            size: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    state: Sha256State,
    version: FileVersion,
    tick: u64,
}

#[derive(Debug, Default)]
pub struct HashCache {
    inner: Mutex<(HashMap<PathBuf, Entry>, u64)>,
}

impl HashCache {
    /// The hash state of `path` if it was recorded for exactly this version of the file.
    pub fn state(&self, path: &Path, version: FileVersion) -> Option<Sha256State> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(path)
            .filter(|e| e.version == version)
            .map(|e| e.state.clone())
    }

    pub fn record(&self, path: &Path, state: Sha256State, version: FileVersion) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1 += 1;
        let tick = g.1;
        g.0.insert(
            path.to_path_buf(),
            Entry {
                state,
                version,
                tick,
            },
        );
        if g.0.len() > CAPACITY {
            // Drop the older half; cheap because it happens once per CAPACITY/2 inserts.
            let mut ticks: Vec<u64> = g.0.values().map(|e| e.tick).collect();
            ticks.sort_unstable();
            let cut = ticks[ticks.len() / 2];
            g.0.retain(|_, e| e.tick > cut);
        }
    }

    pub fn forget(&self, path: &Path) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.remove(path);
    }

    /// Forgets the states of every file under the folder `dir`.
    pub fn forget_under(&self, dir: &Path) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.retain(|p, _| !p.starts_with(dir));
    }

    /// Moves a state along with a rename (the bytes did not change).
    pub fn rename(&self, from: &Path, to: &Path, new_version: FileVersion) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.remove(to);
        if let Some(mut e) = g.0.remove(from) {
            if e.version.size == new_version.size && e.version.ino == new_version.ino {
                e.version = new_version;
                g.0.insert(to.to_path_buf(), e);
            }
        }
    }
}
