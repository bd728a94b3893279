//! What a process holding many connections or files asks of the operating system. The
//! system calls that need `unsafe` live here, in the library, so the agent, server and binary
//! crates can forbid `unsafe` code.

/// Whether a file can be created in `dir`, or, where `dir` does not exist yet, in its nearest
/// existing parent (which would take the folder): a probe file made and removed again.
/// `Err` names the folder that refused. For `--check`s, which change nothing else on disk.
pub fn can_create_in(dir: &std::path::Path) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let existing = dir
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .unwrap_or(std::path::Path::new("."));
    let probe = existing.join(format!(".logarchive-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| (existing.to_path_buf(), e))
}

/// Large buffers (argon2's 19 MiB, transfer buffers) go straight to mmap and back to the system
/// when freed, instead of glibc raising its mmap threshold and keeping them in the heap for
/// good. A no-op where the C library is not glibc (musl has no `mallopt`).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Raises this process's soft limit of open files to its hard limit (at most 1,048,576, as
/// systemd's default hard limit is) and returns the soft limit now in force. Debian's default
/// soft limit, 1024, is far below what a server with hundreds of sessions, or an agent
/// following thousands of files, holds; the hard limit is what the administrator allows.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a properly sized struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max.min(1 << 20),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let now = super::raise_open_files_limit();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, now);
        assert_eq!(now, lim.rlim_max.min(1 << 20));
    }
}
