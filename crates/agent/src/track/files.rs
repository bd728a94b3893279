//! The tracker's two in-memory indexes: which tracked row each local identity (device, inode)
//! belongs to, and the files it holds open.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// Identity of a local file: (device, inode).
pub type Ident = (u64, u64);

/// Identity → tracked row. Keyed by inode number, so a directory entry's inode (known without a
/// `stat`) tells whether the file may be tracked at all; the rare same inode number on another
/// device goes to a small second map.
#[derive(Debug, Default)]
pub struct Identities {
    by_ino: HashMap<u64, (u64, i64)>,
    more: HashMap<Ident, i64>,
}

impl Identities {
    pub fn get(&self, id: Ident) -> Option<i64> {
        match self.by_ino.get(&id.1) {
            Some((dev, row)) if *dev == id.0 => Some(*row),
            Some(_) => self.more.get(&id).copied(),
            None => None,
        }
    }

    pub fn may_hold(&self, ino: u64) -> bool {
        self.by_ino.contains_key(&ino)
    }

    pub fn insert(&mut self, id: Ident, row: i64) {
        match self.by_ino.get_mut(&id.1) {
            None => {
                self.by_ino.insert(id.1, (id.0, row));
            }
            Some(e) if e.0 == id.0 => e.1 = row,
            Some(_) => {
                self.more.insert(id, row);
            }
        }
    }

    /// Forgets `id` if it is `row`'s (another row may have taken it meanwhile).
    pub fn remove(&mut self, id: Ident, row: i64) {
        if self.by_ino.get(&id.1) == Some(&(id.0, row)) {
            self.by_ino.remove(&id.1);
            // The same inode number on another device takes its place.
            if let Some((&other, &r)) = self.more.iter().find(|(k, _)| k.1 == id.1) {
                self.more.remove(&other);
                self.by_ino.insert(id.1, (other.0, r));
            }
        } else if self.more.get(&id) == Some(&row) {
            self.more.remove(&id);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ident, i64)> + '_ {
        self.by_ino
            .iter()
            .map(|(ino, (dev, row))| ((*dev, *ino), *row))
            .chain(self.more.iter().map(|(k, v)| (*k, *v)))
    }

    pub fn len(&self) -> usize {
        self.by_ino.len() + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }
}

/// Files held open, by row: a log that is renamed or removed while it still has bytes to send is
/// read through the open file (logrotate's `rotate 1` removes the oldest generation at once, and
/// `compress` removes the rotated file right after compressing it, while the writer may still be
/// writing to it). Bounded: beyond `cap`, rows are read by path as before.
#[derive(Debug)]
pub struct OpenFiles {
    files: HashMap<i64, Arc<File>>,
    cap: usize,
}

impl OpenFiles {
    pub fn new(cap: usize) -> Self {
        OpenFiles {
            files: HashMap::new(),
            cap,
        }
    }

    /// How many files this process may hold open for rows: half its descriptor limit (raised to
    /// the hard limit first), at most 8192.
    pub fn cap_from_rlimit() -> usize {
        let limit = logarchive_ftp::os::raise_open_files_limit();
        ((limit / 2) as usize).clamp(16, 8192)
    }

    pub fn get(&self, row: i64) -> Option<Arc<File>> {
        self.files.get(&row).cloned()
    }

    pub fn holds(&self, row: i64) -> bool {
        self.files.contains_key(&row)
    }

    /// Keeps `file` (already checked to be the row's) open for `row`, if there is room.
    pub fn keep(&mut self, row: i64, file: File) -> Option<Arc<File>> {
        if let Some(f) = self.files.get(&row) {
            return Some(Arc::clone(f));
        }
        if self.files.len() >= self.cap {
            return None;
        }
        let f = Arc::new(file);
        self.files.insert(row, Arc::clone(&f));
        Some(f)
    }

    /// Opens `path` for `row` if it is the file `ident` (and there is room).
    pub fn open(&mut self, row: i64, path: &Path, ident: Ident) -> Option<Arc<File>> {
        if let Some(f) = self.files.get(&row) {
            return Some(Arc::clone(f));
        }
        if self.files.len() >= self.cap {
            return None;
        }
        let f = crate::rotated::open_nofollow(path).ok()?;
        let m = f.metadata().ok()?;
        if (m.dev(), m.ino()) != ident {
            return None;
        }
        self.keep(row, f)
    }

    pub fn close(&mut self, row: i64) {
        self.files.remove(&row);
    }

    pub fn rows(&self) -> Vec<i64> {
        self.files.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_keep_the_same_inode_on_two_devices_apart() {
        let mut ids = Identities::default();
        ids.insert((1, 5), 10);
        ids.insert((2, 5), 11);
        assert!(ids.may_hold(5));
        assert_eq!(
            (ids.get((1, 5)), ids.get((2, 5)), ids.len()),
            (Some(10), Some(11), 2)
        );
        ids.remove((1, 5), 99);
        assert_eq!(ids.get((1, 5)), Some(10), "only the owner removes it");
        ids.remove((1, 5), 10);
        assert!(ids.may_hold(5), "the other device's file is still there");
        assert_eq!(ids.get((2, 5)), Some(11));
        ids.remove((2, 5), 11);
        assert!(!ids.may_hold(5));
        assert!(ids.is_empty());
        ids.insert((1, 7), 1);
        ids.insert((1, 7), 2);
        assert_eq!((ids.get((1, 7)), ids.len()), (Some(2), 1), "a new owner");
    }

    #[test]
    fn open_files_are_bounded_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"x").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let mut o = OpenFiles::new(1);
        assert!(
            o.open(1, &p, (m.dev(), m.ino() + 1)).is_none(),
            "not that file"
        );
        assert!(o.open(1, &p, (m.dev(), m.ino())).is_some());
        assert!(o.open(2, &p, (m.dev(), m.ino())).is_none(), "over the cap");
        o.close(1);
        assert!(o.open(2, &p, (m.dev(), m.ino())).is_some());
    }
}
