//! Compression at rest: on the local back-end a quiet file becomes `NAME.zst` (seekable zstd,
//! readable by `zstd -d`), on S3 one seekable-zstd object in place of its segments (a real
//! SeaweedFS); either store still shows, reads, hashes and extends it as `NAME`.

use logarchive_store::s3::seaweed::SeaweedFs;
use logarchive_store::s3::S3Storage;
use logarchive_store::sha::Sha256State;
use logarchive_store::{LocalStorage, Storage, Upload, VirtualPath, WriteMode};
use std::io;
use std::path::Path;
use std::time::Duration;

fn p(s: &str) -> VirtualPath {
    VirtualPath::parse(Path::new(s)).unwrap()
}

fn log(lines: usize, tag: &str) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            format!(
                "2026-12-02 10:{:02}:{:02} {tag} worker-{} request {:016x} took {} ms\n",
                i / 60 % 60,
                i % 60,
                i % 7,
                (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                i % 300
            )
        })
        .collect::<String>()
        .into_bytes()
}

async fn upload(store: &dyn Storage, path: &str, mode: WriteMode, data: &[u8]) -> io::Result<()> {
    let up = store.write(&p(path), mode).await?;
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut up: Box<dyn Upload> = up;
        let mut hash = up.prefix_hash();
        up.write(&data)?;
        if let Some(h) = hash.as_mut() {
            h.update(&data);
        }
        up.finish(hash).map(|_| ())
    })
    .await
    .unwrap()
}

async fn read_all(store: &dyn Storage, path: &str, offset: u64) -> Vec<u8> {
    let mut d = store.read(&p(path), offset).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 100_000];
        loop {
            let n = d.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap()
}

fn sha(data: &[u8]) -> String {
    let mut s = Sha256State::new();
    s.update(data);
    s.hex()
}

async fn pack(store: &LocalStorage) -> logarchive_store::PackReport {
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.compress_quiet(&p("/"), Duration::ZERO, &|path| {
            path.to_string_lossy().contains("skipme")
        })
    })
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn quiet_files_are_stored_compressed_and_read_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let store = LocalStorage::open(&root).unwrap();
    store.mkdir(&p("/a01")).await.unwrap();
    let data = log(40_000, "INFO");
    upload(&store, "/a01/app.log", WriteMode::CreateNew, &data)
        .await
        .unwrap();
    upload(&store, "/a01/tiny.log", WriteMode::CreateNew, b"one line\n")
        .await
        .unwrap();
    upload(
        &store,
        "/a01/old.log.gz",
        WriteMode::CreateNew,
        &data[..8192],
    )
    .await
    .unwrap();
    std::fs::create_dir(root.join("a01/skipme")).unwrap();
    std::fs::write(root.join("a01/skipme/x.log"), &data[..8192]).unwrap();
    let time = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    store.set_modified(&p("/a01/app.log"), time).await.unwrap();
    // A reader opened before the swap finishes with the same bytes.
    let before = store.open_reader(&p("/a01/app.log")).await.unwrap();

    let report = pack(&store).await;
    assert_eq!((report.files, report.skipped), (1, 0), "{report:?}");
    assert_eq!(report.raw_bytes, data.len() as u64);
    // A random id per line is 8 bytes no compressor shrinks: ~4× here.
    assert!(report.stored_bytes * 3 < report.raw_bytes, "{report:?}");
    // On disk: the operator's view.
    assert!(!root.join("a01/app.log").exists());
    let zst = root.join("a01/app.log.zst");
    let out = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(&zst)
        .output()
        .expect("the zstd command (apt install zstd)");
    assert!(out.status.success());
    assert_eq!(out.stdout, data, "zstd -d gives the original");
    assert!(root.join("a01/tiny.log").exists(), "small files stay");
    assert!(
        root.join("a01/old.log.gz").exists(),
        "compressed names stay"
    );
    assert!(root.join("a01/skipme/x.log").exists(), "skipped paths stay");

    // The store's view: as before.
    let m = store.stat(&p("/a01/app.log")).await.unwrap();
    assert_eq!((m.size, m.modified), (data.len() as u64, Some(time)));
    let mut names = store.list(&p("/a01")).await.unwrap();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<(&str, u64)> = names
        .iter()
        .map(|(n, m)| (n.as_str(), if m.is_dir() { 0 } else { m.size }))
        .collect();
    assert_eq!(
        names,
        [
            ("app.log", data.len() as u64),
            ("old.log.gz", 8192),
            ("skipme", 0),
            ("tiny.log", 9)
        ]
    );
    assert!(
        store.stat(&p("/a01/app.log.zst")).await.is_err(),
        "not under its own name"
    );
    assert_eq!(read_all(&store, "/a01/app.log", 0).await, data);
    assert_eq!(
        read_all(&store, "/a01/app.log", 1_234_567).await,
        &data[1_234_567..]
    );
    let r = store.open_reader(&p("/a01/app.log")).await.unwrap();
    let mut buf = vec![0u8; 5000];
    let n = r.read_at(&mut buf, 2_000_000).unwrap();
    assert_eq!(&buf[..n], &data[2_000_000..2_000_000 + n]);
    let n = before.read_at(&mut buf, 2_000_000).unwrap();
    assert_eq!(&buf[..n], &data[2_000_000..2_000_000 + n]);
    let known = store.known_sha256(&p("/a01/app.log")).await.unwrap();
    assert_eq!(known.hex(), sha(&data));
    assert_eq!(
        store.sha256(&p("/a01/app.log")).await.unwrap().hex(),
        sha(&data)
    );

    // The name stays taken.
    let e = upload(&store, "/a01/app.log", WriteMode::CreateNew, b"x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    let e = store.mkdir(&p("/a01/app.log")).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    let e = store
        .rename(&p("/a01/tiny.log"), &p("/a01/app.log"), false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    // A second pass has nothing to do.
    assert_eq!(pack(&store).await.files, 0);
}

#[tokio::test]
async fn a_compressed_file_grows_again_renames_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let store = LocalStorage::open(&root).unwrap();
    let data = log(20_000, "WARN");
    upload(&store, "/app.log", WriteMode::CreateNew, &data)
        .await
        .unwrap();
    assert_eq!(pack(&store).await.files, 1);

    // A log resumed after a quiet day: the append continues the kept hash, reads nothing.
    let more = log(500, "resumed");
    let reads = store.stats().full_hash_reads();
    upload(
        &store,
        "/app.log",
        WriteMode::Append {
            at: data.len() as u64,
        },
        &more,
    )
    .await
    .unwrap();
    let whole = [data.clone(), more].concat();
    assert_eq!(read_all(&store, "/app.log", 0).await, whole);
    assert_eq!(
        store.known_sha256(&p("/app.log")).await.unwrap().hex(),
        sha(&whole)
    );
    assert_eq!(
        store.stats().full_hash_reads(),
        reads,
        "no read back for the hash"
    );
    assert!(root.join("app.log").exists() && !root.join("app.log.zst").exists());

    // Compressed again, renamed and removed by its shown name.
    assert_eq!(pack(&store).await.files, 1);
    store
        .rename(&p("/app.log"), &p("/app.log.1"), false)
        .await
        .unwrap();
    assert!(root.join("app.log.1.zst").exists());
    assert_eq!(read_all(&store, "/app.log.1", 0).await, whole);
    assert!(store.stat(&p("/app.log")).await.is_err());
    store.remove_file(&p("/app.log.1")).await.unwrap();
    assert!(store.list(&p("/")).await.unwrap().is_empty());
}

#[tokio::test]
async fn files_being_written_or_changed_are_left_and_twins_resolve_to_the_raw_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let store = LocalStorage::open(&root).unwrap();
    let data = log(5_000, "INFO");
    upload(&store, "/busy.log", WriteMode::CreateNew, &data)
        .await
        .unwrap();
    // An upload in progress holds the file.
    let up = store
        .write(
            &p("/busy.log"),
            WriteMode::Append {
                at: data.len() as u64,
            },
        )
        .await
        .unwrap();
    assert_eq!(pack(&store).await.files, 0);
    drop(up);
    assert_eq!(pack(&store).await.files, 1);

    // A crash between the two steps of a swap leaves both names: the raw file is the file.
    std::fs::write(root.join("busy.log"), &data).unwrap();
    let names = store.list(&p("/")).await.unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(read_all(&store, "/busy.log", 0).await, data);
    pack(&store).await;
    assert!(root.join("busy.log.zst").exists(), "compressed again");
    assert!(!root.join("busy.log").exists());

    // Somebody's own .zst file (not ours) is an ordinary file under its own name.
    let foreign = zstd::bulk::compress(&data, 3).unwrap();
    upload(&store, "/other.zst", WriteMode::CreateNew, &foreign)
        .await
        .unwrap();
    assert_eq!(read_all(&store, "/other.zst", 0).await, foreign);
    assert!(store.stat(&p("/other")).await.is_err());
    // A damaged compressed file is an error to read, never other bytes.
    let zst = root.join("busy.log.zst");
    let mut bytes = std::fs::read(&zst).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&zst, &bytes).unwrap();
    let mut d = store.read(&p("/busy.log"), 0).await.unwrap();
    let err = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match d.read(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .unwrap();
    assert!(err.is_some(), "a damaged frame is an error");
}

fn weed() -> &'static SeaweedFs {
    static WEED: std::sync::OnceLock<SeaweedFs> = std::sync::OnceLock::new();
    WEED.get_or_init(|| SeaweedFs::start().expect("SeaweedFS"))
}

/// On S3 the segments of a quiet file (an upload's object, appends inline or packed with other
/// files' bytes) become one compressed object; readers before and after, ranged reads, the
/// hash, appends, a rewrite and the bucket's accounting all stay right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_quiet_file_becomes_one_compressed_object() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("z{}", std::process::id());
    let s3 = S3Storage::open(weed().config(&prefix, dir.path().join("store.db"))).unwrap();
    let store: &dyn Storage = &s3;
    let data = log(60_000, "INFO");
    let (head, rest) = data.split_at(3_000_000);
    upload(store, "/app.log", WriteMode::CreateNew, head)
        .await
        .unwrap();
    let mut at = head.len();
    for part in rest.chunks(200_000) {
        let mode = WriteMode::Append { at: at as u64 };
        upload(store, "/app.log", mode, part).await.unwrap();
        at += part.len();
    }
    s3.pack_now().await.unwrap();
    let before = store.open_reader(&p("/app.log")).await.unwrap();
    let stored_raw = s3.stored_bytes().unwrap()["/app.log"];

    let report = s3.compact_now(Duration::ZERO).await.unwrap();
    assert_eq!((report.files, report.failed), (1, 0), "{report:?}");
    assert_eq!(report.raw_bytes, data.len() as u64);
    let stored = s3.stored_bytes().unwrap()["/app.log"];
    assert!(stored * 3 < stored_raw, "{stored} of {stored_raw}");
    assert_eq!(
        s3.compact_now(Duration::ZERO).await.unwrap().files,
        0,
        "done once"
    );

    let m = store.stat(&p("/app.log")).await.unwrap();
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(read_all(store, "/app.log", 0).await, data);
    assert_eq!(
        read_all(store, "/app.log", 2_500_001).await,
        &data[2_500_001..]
    );
    let mut buf = vec![0u8; 3000];
    let r = store.open_reader(&p("/app.log")).await.unwrap();
    let (r, before, got) = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        for at in [1_234_567u64, 4_000_000, 10] {
            let n = r.read_at(&mut buf, at).unwrap();
            got.push((at, buf[..n].to_vec()));
            // The reader opened before the swap reads its old objects (a grace period long).
            let n = before.read_at(&mut buf, at).unwrap();
            got.push((at, buf[..n].to_vec()));
        }
        (r, before, got)
    })
    .await
    .unwrap();
    drop(before);
    for (at, bytes) in got {
        assert!(!bytes.is_empty());
        assert_eq!(bytes, &data[at as usize..at as usize + bytes.len()]);
    }
    let id = format!("{:016x}", 40_001u64.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // (A reader's methods block: on a blocking thread.)
    let runs = tokio::task::spawn_blocking(move || {
        let index = r.seek_index().expect("one compressed object");
        index.candidates(&logarchive_store::seekable::grams(id.as_bytes()))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        store.sha256(&p("/app.log")).await.unwrap().hex(),
        sha(&data)
    );

    // It grows again: the compressed object stays, the append follows it.
    let more = log(300, "resumed");
    let mode = WriteMode::Append {
        at: data.len() as u64,
    };
    upload(store, "/app.log", mode, &more).await.unwrap();
    let whole = [data.clone(), more].concat();
    assert_eq!(read_all(store, "/app.log", 0).await, whole);
    assert_eq!(
        store.known_sha256(&p("/app.log")).await.unwrap().hex(),
        sha(&whole)
    );
    let r = store.open_reader(&p("/app.log")).await.unwrap();
    let single = tokio::task::spawn_blocking(move || r.seek_index().is_some())
        .await
        .unwrap();
    assert!(!single, "a compressed object and an append after it");
    assert_eq!(s3.compact_now(Duration::ZERO).await.unwrap().files, 1);
    assert_eq!(read_all(store, "/app.log", 0).await, whole);

    // A rewrite from inside the compressed bytes (REST + STOR) keeps what is before it.
    let tail = b"rewritten tail\n";
    upload(store, "/app.log", WriteMode::Replace { at: 1000 }, tail)
        .await
        .unwrap();
    let cut = [&whole[..1000], &tail[..]].concat();
    assert_eq!(read_all(store, "/app.log", 0).await, cut);

    // The bucket holds exactly what the metadata names; the replaced objects go once their
    // grace period (1 s here) is over.
    let objects = s3.check_objects().await.unwrap().objects;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        s3.collect_garbage().await.unwrap();
        let check = s3.check_objects().await.unwrap();
        assert!(
            check.missing.is_empty() && check.orphans.is_empty(),
            "{check:?}"
        );
        if check.objects < objects {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replaced objects not collected within 30 s: {check:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
