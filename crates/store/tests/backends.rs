//! The `Storage` contract, run against every back-end: a local folder, a real SeaweedFS
//! (`weed mini`, started once for this binary) with its metadata in SQLite, and the same with
//! its metadata in a real PostgreSQL (started once too), as servers that share a bucket keep
//! it. The same test body for each, not a copy.

use logarchive_store::pg_harness::Postgres;
use logarchive_store::s3::seaweed::SeaweedFs;
use logarchive_store::s3::{S3Config, S3Storage, POSTGRES_SCHEMA};
use logarchive_store::sha::Sha256State;
use logarchive_store::{Download, LocalStorage, Storage, Upload, VirtualPath, WriteMode};
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

fn weed() -> &'static SeaweedFs {
    static WEED: OnceLock<SeaweedFs> = OnceLock::new();
    WEED.get_or_init(|| SeaweedFs::start().expect("SeaweedFS"))
}

fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| Postgres::start().expect("PostgreSQL"))
}

/// A new database with the metadata's tables; its connection settings.
fn metadata_database() -> postgres::Config {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pg = postgres();
    let url = pg
        .database(&format!("meta_{}_{n}", std::process::id()))
        .unwrap();
    let mut config: postgres::Config = url.parse().unwrap();
    let password = std::fs::read_to_string(pg.password_file()).unwrap();
    config.password(password.trim());
    // (The blocking client may not run on an async test's thread.)
    let c = config.clone();
    std::thread::spawn(move || {
        let mut c = c.connect(postgres::NoTls).unwrap();
        c.batch_execute(POSTGRES_SCHEMA).unwrap();
    })
    .join()
    .unwrap();
    config
}

/// An S3 configuration whose metadata is in PostgreSQL (`db`).
fn shared_config(prefix: &str, db: &postgres::Config) -> S3Config {
    let mut c = weed().config(prefix, "unused.db".into());
    c.postgres = Some(logarchive_store::s3::PgConnection::plain(db.clone()));
    c
}

struct Backend {
    name: &'static str,
    store: Arc<dyn Storage>,
    s3: Option<S3Storage>,
    _dir: tempfile::TempDir,
}

fn backends() -> Vec<Backend> {
    let local_dir = tempfile::tempdir().unwrap();
    let local = LocalStorage::open(&local_dir.path().join("archive")).unwrap();
    let s3_dir = tempfile::tempdir().unwrap();
    let prefix = format!("t{:016x}", rand_u64());
    let s3 = S3Storage::open(weed().config(&prefix, s3_dir.path().join("store.db"))).unwrap();
    let pg_prefix = format!("{prefix}-pg{}", rand_u64() % 1_000_000);
    let s3_pg = S3Storage::open(shared_config(&pg_prefix, &metadata_database())).unwrap();
    vec![
        Backend {
            name: "local",
            store: Arc::new(local),
            s3: None,
            _dir: local_dir,
        },
        Backend {
            name: "s3",
            store: Arc::new(s3.clone()),
            s3: Some(s3),
            _dir: s3_dir,
        },
        Backend {
            name: "s3+postgres",
            store: Arc::new(s3_pg.clone()),
            s3: Some(s3_pg),
            _dir: tempfile::tempdir().unwrap(),
        },
    ]
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// The two S3 back-ends (metadata in SQLite, in PostgreSQL).
fn s3_backends() -> Vec<Backend> {
    backends().into_iter().filter(|b| b.s3.is_some()).collect()
}

fn p(s: &str) -> VirtualPath {
    VirtualPath::parse(Path::new(s)).unwrap()
}

/// Writes `data` in steps of `step` bytes through an upload, as the engine does (on a blocking
/// thread), and finishes it with the hash the engine would have computed.
async fn upload(
    store: &Arc<dyn Storage>,
    path: &str,
    mode: WriteMode,
    data: Vec<u8>,
    step: usize,
) -> io::Result<logarchive_store::Meta> {
    let up = store.write(&p(path), mode).await?;
    tokio::task::spawn_blocking(move || {
        let mut up: Box<dyn Upload> = up;
        let mut hash = up.prefix_hash();
        for part in data.chunks(step.max(1)) {
            up.write(part)?;
            if let Some(h) = hash.as_mut() {
                h.update(part);
            }
        }
        up.finish(hash)
    })
    .await
    .unwrap()
}

async fn read_all(store: &Arc<dyn Storage>, path: &str, offset: u64) -> io::Result<Vec<u8>> {
    let d = store.read(&p(path), offset).await?;
    tokio::task::spawn_blocking(move || {
        let mut d: Box<dyn Download> = d;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 300_000];
        loop {
            let n = d.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap()
}

fn sha(data: &[u8]) -> String {
    let mut h = Sha256State::new();
    h.update(data);
    h.hex()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_files_and_names() {
    for b in backends() {
        let s = &b.store;
        let n = b.name;
        s.mkdir(&p("/agent01")).await.unwrap();
        s.mkdir(&p("/agent01/Logs")).await.unwrap();
        let e = s.mkdir(&p("/agent01/Logs")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{n}");
        let e = s.mkdir(&p("/nowhere/x")).await.unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::NotFound,
            "{n}: mkdir without parent"
        );

        let m = upload(
            s,
            "/agent01/Logs/a.log",
            WriteMode::CreateNew,
            b"one\n".to_vec(),
            2,
        )
        .await
        .unwrap();
        assert_eq!((m.size, m.is_file()), (4, true), "{n}");
        let e = upload(
            s,
            "/agent01/Logs/a.log",
            WriteMode::CreateNew,
            b"x".to_vec(),
            1,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::AlreadyExists,
            "{n}: create over a file"
        );
        assert_eq!(
            read_all(s, "/agent01/Logs/a.log", 0).await.unwrap(),
            b"one\n",
            "{n}"
        );
        // An empty file and a unicode name.
        upload(
            s,
            "/agent01/Logs/été 0.log",
            WriteMode::CreateNew,
            vec![],
            1,
        )
        .await
        .unwrap();
        let mut names: Vec<_> = s
            .list(&p("/agent01/Logs"))
            .await
            .unwrap()
            .into_iter()
            .map(|(name, m)| (name, m.size))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![("a.log".to_string(), 4), ("été 0.log".to_string(), 0)],
            "{n}"
        );
        assert!(s.stat(&p("/agent01")).await.unwrap().is_dir(), "{n}");
        // Below a file there is nothing: "not a folder", told apart from a missing name at any
        // depth (a path lookup answers both in one statement on PostgreSQL).
        for (path, kind) in [
            ("/agent01/Logs/a.log/x", io::ErrorKind::NotADirectory),
            ("/agent01/Logs/a.log/x/y/z", io::ErrorKind::NotADirectory),
            ("/agent01/Nothing/x/y", io::ErrorKind::NotFound),
            ("/nobody", io::ErrorKind::NotFound),
            ("/nobody/Logs/a.log", io::ErrorKind::NotFound),
        ] {
            let e = s.stat(&p(path)).await.unwrap_err();
            assert_eq!(e.kind(), kind, "{n}: stat {path}: {e}");
        }
        assert_eq!(
            s.stat(&p("/agent01/none")).await.unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "{n}"
        );
        // Rename-if-absent: never over an existing name, unless asked.
        upload(
            s,
            "/agent01/Logs/b.tmp",
            WriteMode::CreateNew,
            b"two\n".to_vec(),
            4,
        )
        .await
        .unwrap();
        let e = s
            .rename(&p("/agent01/Logs/b.tmp"), &p("/agent01/Logs/a.log"), false)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{n}");
        assert_eq!(
            read_all(s, "/agent01/Logs/a.log", 0).await.unwrap(),
            b"one\n",
            "{n}"
        );
        let m = s
            .rename(&p("/agent01/Logs/b.tmp"), &p("/agent01/Logs/b.log"), false)
            .await
            .unwrap();
        assert_eq!(m.size, 4, "{n}");
        assert_eq!(
            s.known_sha256(&p("/agent01/Logs/b.log"))
                .await
                .map(|h| h.hex()),
            Some(sha(b"two\n")),
            "{n}: the hash follows a rename"
        );
        s.rename(&p("/agent01/Logs/b.log"), &p("/agent01/Logs/a.log"), true)
            .await
            .unwrap();
        assert_eq!(
            read_all(s, "/agent01/Logs/a.log", 0).await.unwrap(),
            b"two\n",
            "{n}"
        );
        // A folder moves with what is in it.
        s.rename(&p("/agent01/Logs"), &p("/agent01/Old"), false)
            .await
            .unwrap();
        assert_eq!(
            read_all(s, "/agent01/Old/a.log", 0).await.unwrap(),
            b"two\n",
            "{n}"
        );
        let e = s.remove_dir(&p("/agent01/Old")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::DirectoryNotEmpty, "{n}");
        s.remove_file(&p("/agent01/Old/a.log")).await.unwrap();
        s.remove_file(&p("/agent01/Old/été 0.log")).await.unwrap();
        s.remove_dir(&p("/agent01/Old")).await.unwrap();
        assert!(s.list(&p("/agent01")).await.unwrap().is_empty(), "{n}");
        // Times set by MFMT.
        upload(s, "/agent01/t.log", WriteMode::CreateNew, b"t".to_vec(), 1)
            .await
            .unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        s.set_modified(&p("/agent01/t.log"), t).await.unwrap();
        assert_eq!(
            s.stat(&p("/agent01/t.log")).await.unwrap().modified,
            Some(t),
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_continue_the_kept_hash_and_rewrites_cut_the_rest() {
    for b in backends() {
        let s = &b.store;
        let n = b.name;
        let first = bytes(100_000, 1);
        upload(s, "/f.log", WriteMode::CreateNew, first.clone(), 7000)
            .await
            .unwrap();
        // Append: the kept state continues; no read of the file.
        let more = bytes(50_000, 2);
        let up = s
            .write(&p("/f.log"), WriteMode::Append { at: 100_000 })
            .await
            .unwrap();
        assert_eq!(up.offset(), 100_000, "{n}");
        assert_eq!(
            up.prefix_hash().map(|h| h.hex()),
            Some(sha(&first)),
            "{n}: the prefix state is kept"
        );
        drop(up);
        upload(
            s,
            "/f.log",
            WriteMode::Append { at: 100_000 },
            more.clone(),
            9999,
        )
        .await
        .unwrap();
        let whole = [first.clone(), more.clone()].concat();
        assert_eq!(read_all(s, "/f.log", 0).await.unwrap(), whole, "{n}");
        assert_eq!(
            s.sha256(&p("/f.log")).await.unwrap().hex(),
            sha(&whole),
            "{n}"
        );
        // A read from an offset.
        assert_eq!(
            read_all(s, "/f.log", 99_990).await.unwrap(),
            whole[99_990..],
            "{n}: ranged read"
        );
        // Append at the wrong size is refused.
        let e = s
            .write(&p("/f.log"), WriteMode::Append { at: 5 })
            .await
            .err()
            .expect("append at a wrong size");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{n}");
        // REST + STOR: rewrite from 120,000 on.
        let tail = bytes(10, 3);
        upload(
            s,
            "/f.log",
            WriteMode::Replace { at: 120_000 },
            tail.clone(),
            10,
        )
        .await
        .unwrap();
        let rewritten = [whole[..120_000].to_vec(), tail].concat();
        assert_eq!(read_all(s, "/f.log", 0).await.unwrap(), rewritten, "{n}");
        assert_eq!(s.stat(&p("/f.log")).await.unwrap().size, 120_010, "{n}");
        assert_eq!(
            s.sha256(&p("/f.log")).await.unwrap().hex(),
            sha(&rewritten),
            "{n}"
        );
    }
}

/// A file larger than a segment streams in and out whole; a cut upload keeps what arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_files_and_cut_uploads() {
    for b in backends() {
        let s = &b.store;
        let n = b.name;
        let big = bytes(20 << 20, 4);
        let m = upload(s, "/big.bin", WriteMode::CreateNew, big.clone(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(m.size, 20 << 20, "{n}");
        let back = read_all(s, "/big.bin", 0).await.unwrap();
        assert!(back == big, "{n}: 20 MiB came back different");
        assert_eq!(
            s.sha256(&p("/big.bin")).await.unwrap().hex(),
            sha(&big),
            "{n}"
        );

        // Cut after 3 MiB: abandon keeps it; the resume appends at its size.
        let part = big[..3 << 20].to_vec();
        let up = s.write(&p("/cut.bin"), WriteMode::CreateNew).await.unwrap();
        let kept = tokio::task::spawn_blocking(move || {
            let mut up = up;
            let mut h = up.prefix_hash();
            up.write(&part)?;
            if let Some(h) = h.as_mut() {
                h.update(&part);
            }
            up.abandon(h)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(kept.size, 3 << 20, "{n}");
        upload(
            s,
            "/cut.bin",
            WriteMode::Append { at: 3 << 20 },
            big[3 << 20..].to_vec(),
            1 << 20,
        )
        .await
        .unwrap();
        assert!(
            read_all(s, "/cut.bin", 0).await.unwrap() == big,
            "{n}: resumed file differs"
        );
        assert_eq!(
            s.known_sha256(&p("/cut.bin")).await.map(|h| h.hex()),
            Some(sha(&big)),
            "{n}"
        );
    }
}

/// S3: removed and replaced objects leave the bucket after the grace period, but a reader that
/// opened the file before still reads it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_of_removed_files_go_after_the_grace_period() {
    for b in s3_backends() {
        eprintln!("-- {}", b.name);
        let s3 = b.s3.clone().unwrap();
        let s = &b.store;
        let data = bytes(10 << 20, 5);
        upload(s, "/gone.bin", WriteMode::CreateNew, data.clone(), 1 << 20)
            .await
            .unwrap();
        let puts = s3.stats().puts();
        assert!(
            puts >= 2,
            "10 MiB should take two segments, took {puts} PUTs"
        );
        let reader = s.read(&p("/gone.bin"), 0).await.unwrap();
        s.remove_file(&p("/gone.bin")).await.unwrap();
        assert_eq!(
            s3.collect_garbage().await.unwrap(),
            0,
            "deleted before the grace period"
        );
        let got = tokio::task::spawn_blocking(move || {
            let mut d = reader;
            let mut out = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = d.read(&mut buf).unwrap();
                if n == 0 {
                    return out;
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap();
        assert!(got == data, "a reader in flight lost bytes");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        s3.collect_garbage().await.unwrap();
        // (The background collector may have taken them first: counted all the same.)
        assert!(
            s3.stats().deletes() >= 2,
            "the removed file's objects were not collected: {} deletes",
            s3.stats().deletes()
        );

        // An upload dropped mid-way (a killed session): its segment objects go too.
        let up = s
            .write(&p("/dropped.bin"), WriteMode::CreateNew)
            .await
            .unwrap();
        let before = s3.stats().deletes();
        tokio::task::spawn_blocking(move || {
            let mut up = up;
            up.write(&bytes(9 << 20, 6)).unwrap(); // one segment PUT under way
            drop(up);
        })
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while s3.stats().deletes() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the dropped upload's object was never collected"
            );
            s3.collect_garbage().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// S3: an upload that pauses longer than the grace period (a slow or throttled agent) keeps
/// its stored segments; the collector runs meanwhile and must not take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_slow_upload_outlives_the_grace_period() {
    for b in s3_backends() {
        eprintln!("-- {}", b.name);
        let s3 = b.s3.clone().unwrap();
        let data = bytes(9 << 20, 7);
        let up = b
            .store
            .write(&p("/slow.bin"), WriteMode::CreateNew)
            .await
            .unwrap();
        let first = data[..8 << 20].to_vec();
        let up = tokio::task::spawn_blocking(move || {
            let mut up = up;
            up.write(&first).unwrap(); // one segment's PUT starts
            up
        })
        .await
        .unwrap();
        // Past the grace period, with the collector run by hand too.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        s3.collect_garbage().await.unwrap();
        let rest = data[8 << 20..].to_vec();
        let whole = data.clone();
        tokio::task::spawn_blocking(move || {
            let mut up = up;
            up.write(&rest)?;
            let mut h = Sha256State::new();
            h.update(&whole);
            up.finish(Some(h))
        })
        .await
        .unwrap()
        .unwrap();
        s3.collect_garbage().await.unwrap();
        assert!(
            read_all(&b.store, "/slow.bin", 0).await.unwrap() == data,
            "a segment of the slow upload was collected"
        );
    }
}

/// S3: small files wait inline and are packed many to an object: 40 files of 10 KB cost a PUT
/// or two, not 40, and read back whole before and after; a shared object is deleted only when
/// the last file in it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_small_files_share_objects() {
    for b in s3_backends() {
        eprintln!("-- {}", b.name);
        let s3 = b.s3.clone().unwrap();
        let s = &b.store;
        let puts = s3.stats().puts();
        for i in 0..40u8 {
            upload(
                s,
                &format!("/small{i}.log"),
                WriteMode::CreateNew,
                bytes(10_000, i),
                4096,
            )
            .await
            .unwrap();
        }
        for i in 0..40u8 {
            assert!(
                read_all(s, &format!("/small{i}.log"), 0).await.unwrap() == bytes(10_000, i),
                "small{i} before packing"
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while s3.inline_bytes().unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "never packed");
            s3.pack_now().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let packed_puts = s3.stats().puts() - puts;
        assert!(packed_puts <= 2, "40 small files took {packed_puts} PUTs");
        for i in 0..40u8 {
            let p = format!("/small{i}.log");
            assert!(
                read_all(s, &p, 0).await.unwrap() == bytes(10_000, i),
                "{p} after packing"
            );
            assert_eq!(
                read_all(s, &p, 9_990).await.unwrap(),
                bytes(10_000, i)[9_990..],
                "{p}: a range of a packed file"
            );
        }
        // All but the first and the last removed: the shared object(s) stay.
        let deletes = s3.stats().deletes();
        for i in 1..39u8 {
            s.remove_file(&p(&format!("/small{i}.log"))).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        s3.collect_garbage().await.unwrap();
        assert_eq!(
            s3.stats().deletes(),
            deletes,
            "a shared object went while in use"
        );
        assert!(read_all(s, "/small0.log", 0).await.unwrap() == bytes(10_000, 0));
        assert!(read_all(s, "/small39.log", 0).await.unwrap() == bytes(10_000, 39));
        s.remove_file(&p("/small0.log")).await.unwrap();
        s.remove_file(&p("/small39.log")).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while s3.stats().deletes() == deletes {
            assert!(
                std::time::Instant::now() < deadline,
                "the emptied object was never collected"
            );
            s3.collect_garbage().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Two servers, one bucket, the metadata in one PostgreSQL: what one writes the other lists
/// and reads at once; an upload paused past the grace period on one keeps its segments while
/// the other's collector runs; small files are packed once although both packers run; the
/// bucket holds no object the metadata does not name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_two_servers_share_one_bucket_through_postgres() {
    let db = metadata_database();
    let prefix = format!("two{:x}", rand_u64() % 1_000_000);
    let config = || {
        let mut c = shared_config(&prefix, &db);
        // Both packers take inline bytes soon, so they meet.
        c.pack_after = std::time::Duration::from_millis(300);
        c
    };
    let (a, b) = (
        S3Storage::open(config()).unwrap(),
        S3Storage::open(config()).unwrap(),
    );
    let (sa, sb): (Arc<dyn Storage>, Arc<dyn Storage>) = (Arc::new(a.clone()), Arc::new(b.clone()));

    // Written on A, read on B; appended on B, read on A.
    sa.mkdir(&p("/agent01")).await.unwrap();
    let big = bytes(9 << 20, 1);
    upload(
        &sa,
        "/agent01/big.log",
        WriteMode::CreateNew,
        big.clone(),
        1 << 20,
    )
    .await
    .unwrap();
    let names: Vec<String> = sb
        .list(&p("/agent01"))
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["big.log"]);
    assert!(read_all(&sb, "/agent01/big.log", 0).await.unwrap() == big);
    let more = bytes(5000, 2);
    upload(
        &sb,
        "/agent01/big.log",
        WriteMode::Append {
            at: big.len() as u64,
        },
        more.clone(),
        1000,
    )
    .await
    .unwrap();
    let whole = [big.clone(), more].concat();
    assert!(read_all(&sa, "/agent01/big.log", 0).await.unwrap() == whole);
    assert_eq!(
        sa.sha256(&p("/agent01/big.log")).await.unwrap().hex(),
        sha(&whole),
        "the hash state continued on B is the file's"
    );
    // One name, two creators: one wins, the other is told the name is taken.
    let race = p("/agent01/race.log");
    let (x, y) = tokio::join!(
        sa.write(&race, WriteMode::CreateNew),
        sb.write(&race, WriteMode::CreateNew)
    );
    assert!(
        x.is_ok() != y.is_ok(),
        "both or neither created the file: {:?} / {:?}",
        x.as_ref().err(),
        y.as_ref().err()
    );
    let lost = x.err().or(y.err()).unwrap();
    assert_eq!(lost.kind(), io::ErrorKind::AlreadyExists, "{lost}");

    // Paused on A past the grace period, while B collects.
    let up = sa
        .write(&p("/agent01/slow.bin"), WriteMode::CreateNew)
        .await
        .unwrap();
    let data = bytes(9 << 20, 3);
    let first = data[..8 << 20].to_vec();
    let up = tokio::task::spawn_blocking(move || {
        let mut up = up;
        up.write(&first).unwrap(); // a segment's PUT starts; recorded at the next write
        up
    })
    .await
    .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        b.collect_garbage().await.unwrap();
    }
    let (rest, all) = (data[8 << 20..].to_vec(), data.clone());
    tokio::task::spawn_blocking(move || {
        let mut up = up;
        up.write(&rest)?;
        let mut h = Sha256State::new();
        h.update(&all);
        up.finish(Some(h))
    })
    .await
    .unwrap()
    .expect("the paused upload lost a segment to the other server's collector");
    assert!(read_all(&sb, "/agent01/slow.bin", 0).await.unwrap() == data);

    // Small files through A, both packers at work: each byte uploaded once.
    let puts = a.stats().puts() + b.stats().puts();
    for i in 0..40u8 {
        upload(
            &sa,
            &format!("/agent01/small{i}.log"),
            WriteMode::CreateNew,
            bytes(10_000, i),
            4096,
        )
        .await
        .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while a.inline_bytes().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "never packed");
        let (a2, b2) = (a.clone(), b.clone());
        let (x, y) = tokio::join!(
            tokio::spawn(async move { a2.pack_now().await }),
            tokio::spawn(async move { b2.pack_now().await })
        );
        x.unwrap().unwrap();
        y.unwrap().unwrap();
    }
    let packing = a.stats().puts() + b.stats().puts() - puts;
    assert!(
        packing <= 2,
        "40 small files took {packing} PUTs on two servers"
    );
    for i in 0..40u8 {
        assert!(
            read_all(&sb, &format!("/agent01/small{i}.log"), 0)
                .await
                .unwrap()
                == bytes(10_000, i),
            "small{i} after packing"
        );
    }

    // Removed on B: collected (by either), and the bucket matches the metadata.
    sb.remove_file(&p("/agent01/slow.bin")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    a.collect_garbage().await.unwrap();
    b.collect_garbage().await.unwrap();
    let check = b.check_objects().await.unwrap();
    assert!(
        check.missing.is_empty() && check.orphans.is_empty(),
        "missing {:?}, orphans {:?}",
        check.missing,
        check.orphans
    );
}
