//! Hot paths of the archive server (criterion): `cargo bench -p logarchive-server`.
//! - the viewer's page read at the end of a 64 MiB log, and by offset in its middle
//! - log level detection per line
//! - request path validation
//! - catalog name search over 100,000 rows (substring via the trigram index, and by agent),
//!   a folder listing and its sub-folders' totals
//! - zip framing (CRC-32 and records) per MiB

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use logarchive_ftp::server::Storage;
use logarchive_server::catalog::{Catalog, Entry, NameQuery};
use logarchive_server::web::archive::ArchivePath;
use logarchive_server::web::view::{level_of, read_page, At, LineCache};
use logarchive_server::web::zip::ZipWriter;
use std::io::Write;

fn viewer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = std::fs::File::create(dir.path().join("app.log")).unwrap();
    let line = "2024-07-23 10:00:00.000 INFO [http] req=0000abcd GET /api/orders 200 (12 ms)\n";
    let mut written = 0;
    while written < 64 << 20 {
        t.write_all(line.as_bytes()).unwrap();
        written += line.len();
    }
    t.flush().unwrap();
    // Opened as the web opens it: through the store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = logarchive_ftp::server::LocalStorage::open(dir.path()).unwrap();
    let path =
        logarchive_ftp::server::VirtualPath::parse(std::path::Path::new("/app.log")).unwrap();
    let f = rt.block_on(store.open_reader(&path)).unwrap();
    let f = &*f;
    let lines = LineCache::default();
    let mut g = c.benchmark_group("viewer");
    g.bench_function("end of 64 MiB (line count remembered)", |b| {
        b.iter(|| read_page(f, &lines, At::End).unwrap())
    });
    g.bench_function("offset in the middle of 64 MiB", |b| {
        b.iter(|| {
            read_page(
                f,
                &lines,
                At::Offset {
                    offset: 32 << 20,
                    line: Some(1),
                },
            )
            .unwrap()
        })
    });
    g.bench_function("end of 64 MiB, counting lines afresh", |b| {
        b.iter_batched(
            LineCache::default,
            |fresh| read_page(f, &fresh, At::End).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn text(c: &mut Criterion) {
    let lines = [
        "2024-07-23 10:00:00.000 ERROR [db] connection reset by peer",
        "ts=1 level=info msg=\"request done\" path=/api/orders status=200",
        "plain line without any level word in it at all, fairly long, like many log lines are",
    ];
    c.bench_function("level_of (3 lines)", |b| {
        b.iter(|| lines.iter().map(|l| level_of(l) as u8).sum::<u8>())
    });
    c.bench_function("ArchivePath::parse", |b| {
        b.iter(|| ArchivePath::parse("/agent01/Logs/App/20240723/server-error.log").unwrap())
    });
}

fn catalog(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&d.path().join("catalog.db")).unwrap();
    cat.batch(|cat| {
        for i in 0..100_000u64 {
            let agent = format!("agent{:02}", i % 20);
            cat.upsert(&Entry {
                path: format!("/{agent}/Logs/App/202407{:02}/svc-{i:06}.log", 1 + i % 28),
                agent,
                size: i,
                sha256: None,
                modified_ms: i as i64,
                archived_ms: i as i64,
                appended_ms: None,
            })?;
        }
        Ok(())
    })
    .unwrap();
    let mut g = c.benchmark_group("catalog, 100k rows");
    g.bench_function("substring (trigram index)", |b| {
        b.iter(|| {
            cat.search(&NameQuery {
                name: "svc-0123".into(),
                limit: 100,
                ..Default::default()
            })
            .unwrap()
        })
    });
    g.bench_function("agent, newest 100", |b| {
        b.iter(|| {
            cat.search(&NameQuery {
                agent: Some("agent07".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap()
        })
    });
    g.bench_function("list a folder", |b| {
        b.iter(|| cat.list("/agent07/Logs/App/20240708").unwrap())
    });
    // Browsing the root totals every file (the web's budget is 200,000 rows).
    g.bench_function("folder totals of the root (all 100k files)", |b| {
        b.iter(|| cat.dir_totals("/", 200_000).unwrap())
    });
    g.bench_function("folder totals of one agent (5k files)", |b| {
        b.iter(|| cat.dir_totals("/agent07", 200_000).unwrap())
    });
    g.finish();
}

fn zip(c: &mut Criterion) {
    let chunk = vec![b'x'; 1 << 20];
    let mut g = c.benchmark_group("zip");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("one 1 MiB entry (CRC-32 and records)", |b| {
        b.iter(|| {
            let mut z = ZipWriter::new();
            let (h, mut e) = z.start_file("Logs/a.log", 0);
            e.update(&chunk);
            let d = z.end_file(e);
            (h.len(), d.len(), z.finish().len())
        })
    });
    g.finish();
}

criterion_group!(benches, viewer, text, catalog, zip);
criterion_main!(benches);
