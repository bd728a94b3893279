//! Name search over a catalog of N generated rows: p50/p95 of substring, glob and agent+time
//! queries. `cargo run --release -p logarchive-server --example catalog_search [ROWS]`

use logarchive_server::catalog::{Catalog, Entry, NameQuery};
use std::time::Instant;

fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Catalog::open(&dir.path().join("catalog.db")).expect("catalog");
    let t = Instant::now();
    c.batch(|c| {
        for i in 0..rows {
            let agent = format!("agent{:02}", i % 50);
            let kind = ["app", "access", "error", "audit", "gc"][(i % 5) as usize];
            c.upsert(&Entry {
                path: format!("/{agent}/Logs/{kind}/2024{:04}/{kind}-{i:07}.log", i % 365),
                agent,
                size: i % 100_000,
                sha256: None,
                modified_ms: 1_700_000_000_000 + i as i64 * 1000,
                archived_ms: 1_700_000_000_000 + i as i64 * 1000,
                appended_ms: None,
            })?;
        }
        Ok(())
    })
    .expect("fill");
    println!("filled {rows} rows in {:.1} s", t.elapsed().as_secs_f64());
    let queries: Vec<(&str, NameQuery)> = vec![
        (
            "substring 'error-00123'",
            NameQuery {
                name: "error-00123".into(),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "substring 'gc-' (many hits)",
            NameQuery {
                name: "gc-".into(),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "glob 'audit-*99.log'",
            NameQuery {
                name: "audit-*99.log".into(),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "agent + archived range",
            NameQuery {
                agent: Some("agent07".into()),
                archived_from_ms: Some(1_700_000_000_000 + 400_000_000),
                archived_to_ms: Some(1_700_000_000_000 + 500_000_000),
                limit: 100,
                ..Default::default()
            },
        ),
    ];
    for (what, q) in queries {
        let mut times: Vec<f64> = (0..40)
            .map(|_| {
                let t = Instant::now();
                let hits = c.search(&q).expect("search");
                std::hint::black_box(hits);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{what}: p50 {:.2} ms, p95 {:.2} ms",
            times[times.len() / 2],
            times[times.len() * 95 / 100]
        );
    }
}
