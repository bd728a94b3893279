//! Downloads: a file with `Range`, `ETag`/`If-None-Match`/`If-Range` and a
//! `Content-Disposition` that survives any name; a folder as a zip streamed while it is built.
//! Both are read by a worker thread (one of a bounded number, see [`super::workers`]) into a
//! small bounded channel: memory stays constant and a client that goes away stops the reading.

use super::archive::encode_component;
use super::archive::{Archive, ArchivePath, OpenFile};
use super::error::WebError;
use super::workers::{self, TransferPermit};
use super::zip::ZipWriter;
use crate::catalog::Catalog;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;
/// Most files a folder download may hold.
pub const MAX_ZIP_FILES: usize = 1_000_000;

type Chunk = Result<Bytes, std::io::Error>;

fn body_from(rx: mpsc::Receiver<Chunk>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }))
}

/// Reads `[start, start + len)` of `file` in chunks and hands each to `each`, which says whether
/// the client still wants more. `Ok(false)`: the client went away. A file that shrank under us
/// is an error: the body ends early rather than being padded.
fn read_chunks(
    file: &OpenFile,
    start: u64,
    len: u64,
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> std::io::Result<bool> {
    let (mut pos, end) = (start, start + len);
    while pos < end {
        let mut buf = vec![0u8; CHUNK.min((end - pos) as usize)];
        match file.read_at(&mut buf, pos) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))
            }
            Ok(n) => {
                buf.truncate(n);
                pos += n as u64;
                if !each(buf) {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads `[start, start + len)` of `file` on a worker thread, which holds `permit`.
fn stream_range(
    file: OpenFile,
    start: u64,
    len: u64,
    permit: TransferPermit,
) -> Result<Body, WebError> {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    workers::spawn("download", move || {
        let _permit = permit;
        let sent = read_chunks(&file, start, len, |buf| {
            tx.blocking_send(Ok(Bytes::from(buf))).is_ok()
        });
        if let Err(e) = sent {
            let _ = tx.blocking_send(Err(e));
        }
    })?;
    Ok(body_from(rx))
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded`
pub fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let v = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        encode_component(name)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// A strong validator from the file's identity, size and modification time.
fn etag(f: &OpenFile) -> String {
    let t = f
        .modified()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        f.identity(),
        f.len(),
        t.as_secs(),
        t.subsec_nanos()
    )
}

/// A `Range` that selects nothing of the file (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a single `bytes=` range against `size` into (start, length). `Ok(None)`: serve the
/// whole file (no header, several ranges, or another unit).
pub fn parse_range(v: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let e: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| Unsatisfiable)?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if size == 0 || start >= size || end < start {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end - start + 1)))
}

/// The response for a file download; its body is read on a worker thread of `workers`.
pub fn file_response(
    open: OpenFile,
    name: &str,
    headers: &HeaderMap,
    inline: bool,
    workers: &workers::Workers,
) -> Result<Response, WebError> {
    let size = open.len();
    let tag = etag(&open);
    let none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    // A range only applies if the client's copy is this version (If-Range).
    let range_applies = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == tag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if range_applies => parse_range(r, size),
        _ => Ok(None),
    };
    let mut builder = Response::builder()
        .header(header::ETAG, &tag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    builder = if inline {
        // Shown as text, never interpreted: a log holding HTML stays text.
        builder
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CONTENT_SECURITY_POLICY, "sandbox")
    } else {
        builder
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_DISPOSITION, content_disposition(name))
    };
    let r = match range {
        Err(Unsatisfiable) => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{size}"))
            .body(Body::empty()),
        Ok(Some((start, len))) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", start + len - 1),
            )
            .header(header::CONTENT_LENGTH, len)
            .body(stream_range(open, start, len, workers.transfer()?)?),
        Ok(None) => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size)
            .body(stream_range(open, 0, size, workers.transfer()?)?),
    };
    r.map_err(|e| WebError::Internal(format!("building a response: {e}")))
}

/// Files listed from the catalog at a time while a zip is written.
const ZIP_PAGE: usize = 1000;

/// A folder as a zip, streamed by a worker thread (which holds `permit`). The files are those
/// the catalog lists under it, read a page at a time: memory stays bounded however many there
/// are, and no catalog connection is held while files are sent.
pub fn zip_response(
    archive: Arc<Archive>,
    catalog: Arc<Catalog>,
    dir: &ArchivePath,
    permit: TransferPermit,
) -> Result<Response, WebError> {
    if catalog.count_under(&dir.display(), MAX_ZIP_FILES + 1)? > MAX_ZIP_FILES {
        return Err(WebError::BadRequest(format!(
            "{} holds more than {MAX_ZIP_FILES} files; download a sub-folder",
            dir.display()
        )));
    }
    let base = if dir.is_root() {
        "archive".to_string()
    } else {
        dir.name().to_string()
    };
    // Entries are `<base>/<path below the folder>`: the root's paths keep their leading slash.
    let strip = if dir.is_root() {
        0
    } else {
        dir.display().len()
    };
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let zip_base = base.clone();
    let dir_path = dir.display();
    workers::spawn("zip", move || {
        let _permit = permit;
        let send = |b: Vec<u8>| tx.blocking_send(Ok(Bytes::from(b))).is_ok();
        let fail = |e: String| {
            // The zip would be short: fail the download honestly.
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        };
        let mut zip = ZipWriter::new();
        let (mut after, mut sent_files) = (None::<String>, 0usize);
        loop {
            let page = match catalog.files_under(&dir_path, after.as_deref(), ZIP_PAGE) {
                Ok(page) => page,
                Err(e) => return fail(format!("listing {dir_path}: {e}")),
            };
            let Some(last) = page.last() else { break };
            after = Some(last.path.clone());
            for f in page {
                if sent_files == MAX_ZIP_FILES {
                    return fail(format!("{dir_path} grew past {MAX_ZIP_FILES} files"));
                }
                sent_files += 1;
                let Ok(p) = ArchivePath::parse(&f.path) else {
                    continue;
                };
                // A file that vanished since the catalog listed it is left out.
                let Ok(open) = archive.open_file_blocking(&p) else {
                    continue;
                };
                let name = format!("{zip_base}{}", &f.path[strip.min(f.path.len())..]);
                let (header, mut entry) = zip.start_file(&name, f.modified_ms);
                if !send(header) {
                    return;
                }
                // Exactly the size seen at open: a log growing meanwhile is cut there.
                let size = open.len();
                let sent = read_chunks(&open, 0, size, |buf| {
                    entry.update(&buf);
                    send(buf)
                });
                match sent {
                    Ok(true) => {}
                    Ok(false) => return, // client gone
                    Err(e) => return fail(format!("{}: {e}", f.path)),
                }
                if !send(zip.end_file(entry)) {
                    return;
                }
            }
        }
        send(zip.finish());
    })?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/zip")
        .header(
            header::CONTENT_DISPOSITION,
            content_disposition(&format!("{base}.zip")),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(body_from(rx))
        .map_err(|e| WebError::Internal(format!("building a response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(Some((900, 100))));
        assert_eq!(parse_range("bytes=-100", 1000), Ok(Some((900, 100))));
        assert_eq!(parse_range("bytes=990-5000", 1000), Ok(Some((990, 10))));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range("items=0-1", 1000), Ok(None));
        assert_eq!(parse_range("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=5-1", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=x-1", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-0", 0), Err(Unsatisfiable));
    }

    #[test]
    fn disposition_is_always_a_valid_header() {
        let v = content_disposition("a\"b\r\n\u{e9}.log");
        let s = v.to_str().unwrap();
        assert!(s.starts_with("attachment; filename=\"a_b___.log\""), "{s}");
        assert!(s.contains("filename*=UTF-8''a%22b%0D%0A%C3%A9.log"), "{s}");
    }
}
