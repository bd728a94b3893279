//! `archive migrate` over one bucket: the metadata of `DATA/store.db` copied into PostgreSQL.

use super::pool::{io_error, E};
use std::io;

/// What [`copy_metadata_to_postgres`](crate::s3::copy_metadata_to_postgres) carried over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetadataCopied {
    /// Folders and files.
    pub entries: u64,
    /// Their segments (inline bytes among them).
    pub segments: u64,
    /// Objects waiting for collection.
    pub garbage: u64,
    /// Entries the database held already (an earlier copy, or servers at work on it): then
    /// nothing was copied.
    pub already: u64,
}

/// Copies an archive's metadata from its SQLite file (`DATA/store.db`, with no server using
/// it) into PostgreSQL, if its tables hold nothing but the root (else it copies nothing and
/// says how much is there): one transaction, so a failure leaves the database as it was. Row
/// ids are kept, the sequence moved past them.
pub(crate) fn copy_from_sqlite(
    sqlite: &std::path::Path,
    postgres: &crate::s3::PgConnection,
) -> io::Result<MetadataCopied> {
    use rusqlite::OpenFlags;
    let sq = rusqlite::Connection::open_with_flags(sqlite, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| io::Error::other(format!("{}: {e}", sqlite.display())))?;
    let sql_error = |e: rusqlite::Error| io::Error::other(format!("{}: {e}", sqlite.display()));
    let mut client = postgres.connect().map_err(|e| io_error(E::Pg(e)))?;
    let mut tx = client.transaction().map_err(|e| io_error(E::Pg(e)))?;
    let pg = |e: postgres::Error| io_error(E::Pg(e));
    let held: i64 = tx
        .query_one("SELECT count(*) FROM s3_node WHERE id <> 1", &[])
        .map_err(pg)?
        .get(0);
    if held > 0 {
        return Ok(MetadataCopied {
            already: held as u64,
            ..MetadataCopied::default()
        });
    }
    let mut copied = MetadataCopied::default();
    // Nodes, parents before children is not needed (no foreign keys): in id order, in pages.
    let mut st = sq
        .prepare(
            "SELECT id, parent, name, dir, size, mtime_ms, sha FROM node WHERE id <> 1 ORDER BY id",
        )
        .map_err(sql_error)?;
    let mut rows = st.query([]).map_err(sql_error)?;
    loop {
        let (mut id, mut parent, mut name, mut dir, mut size, mut mtime, mut sha) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        while let Some(r) = rows.next().map_err(sql_error)? {
            id.push(r.get::<_, i64>(0).map_err(sql_error)?);
            parent.push(r.get::<_, i64>(1).map_err(sql_error)?);
            name.push(r.get::<_, String>(2).map_err(sql_error)?);
            dir.push(r.get::<_, bool>(3).map_err(sql_error)?);
            size.push(r.get::<_, i64>(4).map_err(sql_error)?);
            mtime.push(r.get::<_, i64>(5).map_err(sql_error)?);
            sha.push(r.get::<_, Option<Vec<u8>>>(6).map_err(sql_error)?);
            if id.len() == 10_000 {
                break;
            }
        }
        if id.is_empty() {
            break;
        }
        copied.entries += id.len() as u64;
        tx.execute(
            "INSERT INTO s3_node (id, parent, name, dir, size, mtime_ms, sha) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bool[], \
                                  $5::bigint[], $6::bigint[], $7::bytea[])",
            &[&id, &parent, &name, &dir, &size, &mtime, &sha],
        )
        .map_err(pg)?;
    }
    drop(rows);
    drop(st);
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('s3_node', 'id'), \
                       (SELECT max(id) FROM s3_node))",
        &[],
    )
    .map_err(pg)?;
    let mut st = sq
        .prepare("SELECT node, start, len, key, off, data, made_ms, zsize FROM segment")
        .map_err(sql_error)?;
    let mut rows = st.query([]).map_err(sql_error)?;
    loop {
        let (mut node, mut start, mut len, mut key) = (vec![], vec![], vec![], vec![]);
        let (mut off, mut data, mut made, mut zsize) = (vec![], vec![], vec![], vec![]);
        let mut bytes = 0;
        while let Some(r) = rows.next().map_err(sql_error)? {
            node.push(r.get::<_, i64>(0).map_err(sql_error)?);
            start.push(r.get::<_, i64>(1).map_err(sql_error)?);
            len.push(r.get::<_, i64>(2).map_err(sql_error)?);
            key.push(r.get::<_, String>(3).map_err(sql_error)?);
            off.push(r.get::<_, i64>(4).map_err(sql_error)?);
            let d = r.get::<_, Option<Vec<u8>>>(5).map_err(sql_error)?;
            bytes += d.as_ref().map_or(0, Vec::len);
            data.push(d);
            made.push(r.get::<_, i64>(6).map_err(sql_error)?);
            zsize.push(r.get::<_, Option<i64>>(7).map_err(sql_error)?);
            // Pages bounded in rows and in inline bytes.
            if node.len() == 10_000 || bytes > 16 << 20 {
                break;
            }
        }
        if node.is_empty() {
            break;
        }
        copied.segments += node.len() as u64;
        tx.execute(
            "INSERT INTO s3_segment (node, start, len, key, off, data, made_ms, zsize) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], \
                                  $5::bigint[], $6::bytea[], $7::bigint[], $8::bigint[])",
            &[&node, &start, &len, &key, &off, &data, &made, &zsize],
        )
        .map_err(pg)?;
    }
    drop(rows);
    drop(st);
    let mut st = sq
        .prepare("SELECT key, since_ms, deleted_ms FROM garbage")
        .map_err(sql_error)?;
    let all: Vec<(String, i64, Option<i64>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_error)?;
    for page in all.chunks(10_000) {
        let key: Vec<&str> = page.iter().map(|g| g.0.as_str()).collect();
        let since: Vec<i64> = page.iter().map(|g| g.1).collect();
        let deleted: Vec<Option<i64>> = page.iter().map(|g| g.2).collect();
        tx.execute(
            "INSERT INTO s3_garbage (key, since_ms, deleted_ms) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])",
            &[&key, &since, &deleted],
        )
        .map_err(pg)?;
    }
    copied.garbage = all.len() as u64;
    tx.commit().map_err(pg)?;
    Ok(copied)
}
