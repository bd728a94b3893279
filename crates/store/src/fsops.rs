//! File operations confined to a home folder by the kernel.
//!
//! Every path a client names is opened with openat2(2) relative to the home's directory
//! descriptor with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: the kernel itself refuses any path
//! that would leave the home (`..` above it, absolute paths) or pass through a symlink, with no
//! window between a check and the use (no TOCTOU), and in one system call instead of a
//! canonicalisation walk. The archive holds plain files and folders only, so refusing symlinks
//! loses nothing. Needs Linux 5.6 or newer.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// A home folder, held open.
#[derive(Debug)]
pub struct HomeDir {
    fd: OwnedFd,
}

impl HomeDir {
    /// Opens `path` as the root that every later path stays inside.
    pub fn open(path: &Path) -> io::Result<HomeDir> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_dir()
            .open(path)?;
        Ok(HomeDir {
            fd: OwnedFd::from(f),
        })
    }

    /// Opens `rel` (relative, normalised, may be empty for the home itself) beneath the home.
    pub fn open_at(&self, rel: &Path, flags: i32, mode: u32) -> io::Result<File> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = cstr(rel)?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: if flags & libc::O_CREAT != 0 {
                mode as u64
            } else {
                0
            },
            resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        loop {
            // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and an open_how of
            // the size we pass; the returned fd is owned by the File.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if fd >= 0 {
                return Ok(unsafe { File::from_raw_fd(fd as RawFd) });
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                // A symlink on the way, or an attempt to leave the home.
                Some(libc::ELOOP) | Some(libc::EXDEV) => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "path leaves the home folder",
                    ))
                }
                _ => return Err(e),
            }
        }
    }

    /// Metadata of `rel` without following anything.
    pub fn stat(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        // No O_NOFOLLOW: with RESOLVE_NO_SYMLINKS a trailing symlink is then refused too.
        self.open_at(rel, libc::O_PATH, 0)?.metadata()
    }

    /// The parent folder of `rel` (opened) and the last component's name.
    fn parent(&self, rel: &Path) -> io::Result<(File, CString)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.open_at(parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((dir, cstr(Path::new(name))?))
    }

    /// Flushes the folder holding `rel` to disk (after a rename into it).
    pub fn sync_parent(&self, rel: &Path) -> io::Result<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.open_at(parent, libc::O_RDONLY | libc::O_DIRECTORY, 0)?
            .sync_all()
    }

    /// Makes a folder (one level) below the root.
    pub fn mkdir(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        // SAFETY: mkdirat on an fd we hold and a NUL-terminated single-component name.
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) })
    }

    /// Removes a file (`dir = false`) or an empty folder (`dir = true`).
    pub fn remove(&self, rel: &Path, dir: bool) -> io::Result<()> {
        let meta = self.stat(rel)?;
        if meta.is_dir() != dir {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                if dir { "not a folder" } else { "not a file" },
            ));
        }
        let (parent, name) = self.parent(rel)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: unlinkat on an fd we hold and a single-component name.
        cvt(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) })
    }

    /// Renames `from` to `to`; with `replace = false` an existing target is never replaced
    /// (atomically: RENAME_NOREPLACE) and the error is `AlreadyExists`.
    pub fn rename(&self, from: &Path, to: &Path, replace: bool) -> io::Result<()> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        let flags = if replace { 0 } else { libc::RENAME_NOREPLACE };
        // SAFETY: renameat2 on fds we hold and single-component names.
        cvt(unsafe {
            libc::renameat2(
                fdir.as_raw_fd(),
                fname.as_ptr(),
                tdir.as_raw_fd(),
                tname.as_ptr(),
                flags,
            )
        })
    }

    /// Lists a folder: (name, metadata) of its plain files and folders.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<(std::ffi::OsString, std::fs::Metadata)>> {
        let dir = self.open_at(rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        // Reading through our own descriptor: /proc/self/fd/N is that very folder.
        let mut out = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
            let entry = entry?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() || meta.is_dir() {
                out.push((entry.file_name(), meta));
            }
        }
        Ok(out)
    }
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

trait DirFlags {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirFlags for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_to_the_home() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join("sub")).unwrap();
        std::fs::write(d.path().join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path(), home.join("link")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), home.join("flink")).unwrap();
        let h = HomeDir::open(&home).unwrap();
        assert!(h.stat(Path::new("sub")).unwrap().is_dir());
        for bad in [
            "../outside",
            "link/outside",
            "flink",
            "sub/../../outside",
            "/etc/passwd",
        ] {
            assert!(
                h.open_at(Path::new(bad), libc::O_RDONLY, 0).is_err(),
                "{bad}"
            );
        }
        h.mkdir(Path::new("sub/new")).unwrap();
        std::fs::write(home.join("sub/a"), b"a").unwrap();
        std::fs::write(home.join("sub/b"), b"b").unwrap();
        assert_eq!(
            h.rename(Path::new("sub/a"), Path::new("sub/b"), false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        h.rename(Path::new("sub/a"), Path::new("sub/c"), false)
            .unwrap();
        let mut names: Vec<_> = h
            .list(Path::new("sub"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(names, vec!["b", "c", "new"]);
        h.remove(Path::new("sub/c"), false).unwrap();
        h.remove(Path::new("sub/new"), true).unwrap();
        assert!(h.remove(Path::new("sub"), false).is_err());
    }
}
