//! Whole files in memory over any [`Storage`]: read one, write one, make a folder with its
//! parents. For small files (tests, tools); the engine streams.

use crate::sha::Sha256State;
use crate::store::{Storage, WriteMode};
use crate::vpath::VirtualPath;
use std::io;

/// The whole content of `path`.
pub async fn read(store: &dyn Storage, path: &VirtualPath) -> io::Result<Vec<u8>> {
    let mut download = store.read(path, 0).await?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(usize::try_from(download.len()).unwrap_or(0));
        let mut buf = vec![0; 256 << 10];
        loop {
            match download.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// Writes `bytes` to `path` as `mode` says (its folder must exist; see [`create_dirs`]), with
/// the SHA-256 of the whole file when the store knows the prefix's (or there is none).
pub async fn write(
    store: &dyn Storage,
    path: &VirtualPath,
    mode: WriteMode,
    bytes: &[u8],
) -> io::Result<()> {
    let mut upload = store.write(path, mode).await?;
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let hash = match (upload.offset(), upload.prefix_hash()) {
            (0, _) => Some(Sha256State::new()),
            (_, known) => known,
        }
        .map(|mut h| {
            h.update(&bytes);
            h
        });
        upload.write(&bytes)?;
        upload.finish(hash).map(|_| ())
    })
    .await
    .map_err(io::Error::other)?
}

/// Makes the folder `path` and any parents it lacks (none of them may be a file).
pub async fn create_dirs(store: &dyn Storage, path: &VirtualPath) -> io::Result<()> {
    let mut at = VirtualPath::default();
    for part in path.parts() {
        at = at.child(part);
        match store.mkdir(&at).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !store.stat(&at).await?.is_dir() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
