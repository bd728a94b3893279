//! Unit tests of the tracker's decisions on real files and a real state DB. The server is a map
//! of remote paths to bytes; sends go through the worker's real local checks ([`prepare`]).

use super::*;
use crate::config::Source;
use crate::upload::{Outcome, Send, Work};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

const QUIET: i64 = 5000;

struct T {
    dir: tempfile::TempDir,
    t: Tracker,
    server: BTreeMap<String, Vec<u8>>,
    now: i64,
}

impl T {
    fn new(include: &[&str]) -> T {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        let mut m = Matcher::new(&Source {
            root: dir.path().join("src"),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: vec![],
            prefix: String::new(),
        })
        .unwrap();
        m.id = db.source_ids(&[(m.root.as_path(), "")]).unwrap()[0];
        let timing = Timing {
            quiet_ms: QUIET,
            interval_ms: 500,
            orphan_wait_ms: 0,
            max_backoff_ms: 1000,
        };
        let t = Tracker::new(db, vec![m], timing, dir.path().join("scratch"), 64).unwrap();
        T {
            dir,
            t,
            server: BTreeMap::new(),
            now: crate::run::now_ms(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join("src").join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        std::fs::write(self.p(rel), bytes).unwrap();
    }

    fn append(&self, rel: &str, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.p(rel))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    fn scan(&mut self) {
        let now = self.now;
        self.t.full_scan(now).unwrap();
        self.t.tick(now).unwrap();
    }

    fn look(&mut self, rel: &str) {
        let (p, now) = (self.p(rel), self.now);
        self.t.observe_path(&p, false, now).unwrap();
    }

    /// Lets time pass (quiet periods, append intervals).
    fn wait(&mut self, ms: i64) {
        self.now += ms;
    }

    /// Hands out and carries out every ready send; returns how many ran.
    fn deliver(&mut self) -> usize {
        let jobs = self.t.take_jobs(self.now, 100).unwrap();
        let n = jobs.len();
        for job in jobs {
            let outcome = match &job.work {
                Work::Send(s) => self.carry_out(s),
                Work::Names { .. } => Outcome::Named,
            };
            self.t.finished(&job, outcome, self.now).unwrap();
        }
        n
    }

    fn carry_out(&mut self, s: &Send) -> Outcome {
        let remote = self.server.entry(s.remote.clone()).or_default();
        assert_eq!(
            remote.len() as u64,
            s.archived_size,
            "{}: the server holds what the row says",
            s.remote
        );
        let mut buf = vec![0u8; (s.size - s.archived_size) as usize];
        s.file.read_exact_at(&mut buf, s.archived_size).unwrap();
        remote.extend_from_slice(&buf);
        Outcome::Archived {
            size: s.size,
            sha256: hex::encode(Sha256::digest(&remote[..])),
            sent: buf.len() as u64,
        }
    }

    /// Delivers until nothing is ready, letting quiet periods pass.
    fn settle(&mut self) {
        for _ in 0..10 {
            self.wait(QUIET + 1);
            self.scan();
            while self.deliver() > 0 {}
        }
    }

    fn remote(&self, p: &str) -> String {
        String::from_utf8_lossy(self.server.get(p).map_or(&[][..], |v| &v[..])).into_owned()
    }

    fn remotes(&self) -> Vec<&str> {
        self.server.keys().map(|k| k.as_str()).collect()
    }

    fn row(&self, rel: &str, generation: i64) -> FileRow {
        let r = self
            .t
            .db()
            .latest(self.t.matchers[0].id, rel)
            .unwrap()
            .unwrap();
        if r.generation == generation {
            return r;
        }
        let mut id = r.id;
        loop {
            id -= 1;
            let r = self.t.db().get(id).unwrap().unwrap();
            if r.rel == rel && r.generation == generation {
                return r;
            }
        }
    }
}

#[test]
fn a_growing_file_is_sent_in_whole_lines_without_waiting_to_be_quiet() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"one\n");
    t.scan();
    t.wait(QUIET + 1);
    assert_eq!(t.deliver(), 1);
    assert_eq!(t.remote("/app.log"), "one\n");
    // Written again and again, never quiet: whole lines go, the unterminated one waits.
    t.append("app.log", b"two\nthr");
    t.wait(10);
    t.look("app.log");
    t.wait(600);
    assert_eq!(
        t.deliver(),
        1,
        "ready after the append interval, not the quiet period"
    );
    assert_eq!(t.remote("/app.log"), "one\ntwo\n");
    t.wait(600);
    t.deliver();
    assert_eq!(t.remote("/app.log"), "one\ntwo\n", "nothing whole to send");
    t.wait(600);
    assert_eq!(t.deliver(), 0, "held back until it grows or is quiet");
    t.append("app.log", b"ee\n");
    t.look("app.log");
    t.wait(600);
    assert_eq!(t.deliver(), 1);
    assert_eq!(t.remote("/app.log"), "one\ntwo\nthree\n");
    // An unterminated last line goes once the file is quiet.
    t.append("app.log", b"four");
    t.look("app.log");
    t.wait(600);
    t.deliver();
    assert_eq!(t.remote("/app.log"), "one\ntwo\nthree\n");
    t.wait(QUIET);
    t.deliver();
    assert_eq!(t.remote("/app.log"), "one\ntwo\nthree\nfour");
}

#[test]
fn a_renamed_file_keeps_its_generation_and_the_new_one_is_the_next() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"first 1\n");
    t.settle();
    // logrotate (create): the file is renamed, a new one made; the writer goes on writing to the
    // renamed file for a while.
    std::fs::rename(t.p("app.log"), t.p("app.log.1")).unwrap();
    t.write("app.log", b"");
    t.append("app.log.1", b"first 2\n");
    t.look("app.log.1");
    t.look("app.log");
    t.wait(600);
    t.deliver();
    t.append("app.log", b"second 1\n");
    t.settle();
    assert_eq!(t.remote("/app.log"), "first 1\nfirst 2\n");
    assert_eq!(t.remote("/app.log.~2~"), "second 1\n");
    assert_eq!(
        t.remotes(),
        ["/app.log", "/app.log.~2~"],
        "nothing else, no empty stub"
    );
    let r = t.row("app.log", 1);
    assert_eq!(t.t.db().names(r.id).unwrap(), ["app.log.1"]);
    assert_eq!(r.path, t.p("app.log.1"));
}

#[test]
fn a_rotated_name_that_matches_the_patterns_is_not_a_new_file() {
    // dateext with `extension .log`: app.log -> app-20261201.log, which *.log matches.
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"day one\n");
    t.settle();
    std::fs::rename(t.p("app.log"), t.p("app-20261201.log")).unwrap();
    t.write("app.log", b"day two\n");
    t.settle();
    assert_eq!(t.remotes(), ["/app.log", "/app.log.~2~"]);
    assert_eq!(t.remote("/app.log.~2~"), "day two\n");
    assert!(t
        .t
        .db()
        .latest(t.t.matchers[0].id, "app-20261201.log")
        .unwrap()
        .is_none());
}

#[test]
fn copytruncate_continues_from_the_copy_and_the_truncated_file_is_the_next_generation() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"l1\nl2\n");
    t.settle();
    t.append("app.log", b"l3\n");
    t.look("app.log");
    // logrotate copytruncate: copy, then truncate in place; the writer (O_APPEND) goes on. The
    // copy is seen (and found uninteresting) before the truncation.
    std::fs::copy(t.p("app.log"), t.p("app.log.1")).unwrap();
    t.look("app.log.1");
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.p("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    t.append("app.log", b"l4\n");
    t.look("app.log");
    t.settle();
    assert_eq!(
        t.remote("/app.log"),
        "l1\nl2\nl3\n",
        "the missing line came from the copy"
    );
    assert_eq!(t.remote("/app.log.~2~"), "l4\n");
    assert_eq!(t.remotes().len(), 2);
    assert_eq!(t.t.db().totals(t.now).unwrap().lost, 0);
}

#[test]
fn lines_written_just_before_a_copytruncate_are_found_in_the_copy() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"l1\n");
    t.settle();
    t.append("app.log", b"l2\n");
    t.look("app.log");
    t.wait(600);
    t.deliver();
    // Written, copied and truncated at once: the agent never saw l3 before the truncation.
    t.append("app.log", b"l3\n");
    std::fs::copy(t.p("app.log"), t.p("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.p("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    t.look("app.log");
    t.look("app.log.1");
    t.append("app.log", b"l4\n");
    t.settle();
    assert_eq!(t.remote("/app.log"), "l1\nl2\nl3\n");
    assert_eq!(t.remote("/app.log.~2~"), "l4\n");
    let totals = t.t.db().totals(t.now).unwrap();
    assert_eq!((totals.lost, totals.backlog_files), (0, 0));
}

#[test]
fn a_copy_under_a_wanted_name_is_not_archived_twice() {
    let mut t = T::new(&["**/*.log*"]);
    let big: String = (0..400).map(|i| format!("line {i:05}\n")).collect();
    t.write("app.log", big.as_bytes());
    t.settle();
    t.append("app.log", b"late\n");
    t.look("app.log");
    std::fs::copy(t.p("app.log"), t.p("app.log.1")).unwrap();
    // The copy is seen before the truncation: held back as a possible copy.
    t.look("app.log.1");
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.p("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    t.look("app.log");
    t.append("app.log", b"after\n");
    t.look("app.log");
    t.settle();
    assert_eq!(t.remote("/app.log"), format!("{big}late\n"));
    assert_eq!(t.remote("/app.log.~2~"), "after\n");
    assert_eq!(
        t.remotes(),
        ["/app.log", "/app.log.~2~"],
        "the copy is the old generation's file, not a file of its own"
    );
}

#[test]
fn a_file_rewritten_past_the_archived_size_is_a_new_generation() {
    let mut t = T::new(&["**/*.log"]);
    let banner = "=".repeat(5000) + "\n";
    t.write("app.log", format!("{banner}old 1\nold 2\n").as_bytes());
    t.settle();
    // Truncated and written again past the old size between two looks (events lost): the head
    // is the same, the bytes before the archived size are not.
    t.write(
        "app.log",
        format!("{banner}new 1\nnew 2\nnew 3\n").as_bytes(),
    );
    t.settle();
    assert_eq!(t.remote("/app.log"), format!("{banner}old 1\nold 2\n"));
    assert_eq!(
        t.remote("/app.log.~2~"),
        format!("{banner}new 1\nnew 2\nnew 3\n")
    );
}

#[test]
fn an_empty_file_that_grows_is_one_generation() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"");
    // Closed at once (logrotate's create): still not sent while empty and young.
    let p = t.p("app.log");
    let now = t.now;
    t.t.observe_path(&p, true, now).unwrap();
    assert_eq!(t.deliver(), 0);
    t.wait(200);
    t.append("app.log", b"first\n");
    t.look("app.log");
    t.settle();
    assert_eq!(t.remotes(), ["/app.log"]);
    assert_eq!(t.remote("/app.log"), "first\n");
    // An empty file left alone is archived as such once quiet.
    t.write("empty.log", b"");
    t.settle();
    assert!(t.server.contains_key("/empty.log"));
}

#[test]
fn a_removed_file_is_finished_through_the_open_file() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"a\n");
    t.settle();
    // The writer still holds it; it is renamed, written to, and removed (rotate 1 / compress)
    // before the agent sent the new line.
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(t.p("app.log"))
        .unwrap();
    writer.write_all(b"b\n").unwrap();
    t.look("app.log");
    std::fs::remove_file(t.p("app.log")).unwrap();
    writer.write_all(b"c\n").unwrap();
    t.settle();
    assert_eq!(t.remote("/app.log"), "a\nb\nc\n");
    assert_eq!(t.t.db().totals(t.now).unwrap().lost, 0);
}

#[test]
fn a_removed_file_with_unsent_bytes_and_no_copy_is_counted_as_lost() {
    let mut t = T::new(&["**/*.log"]);
    t.write("app.log", b"a\n");
    t.settle();
    t.append("app.log", b"never sent\n");
    t.look("app.log");
    // Not held open (e.g. after a restart): the tracker forgets its files.
    t.t.open.close(t.row("app.log", 1).id);
    std::fs::remove_file(t.p("app.log")).unwrap();
    t.wait(10);
    t.scan();
    assert_eq!(t.row("app.log", 1).state, FileState::Orphaned);
    t.wait(10);
    t.scan();
    let r = t.row("app.log", 1);
    assert_eq!(r.state, FileState::Lost);
    assert_eq!(r.lost_bytes, 11);
    assert_eq!(t.t.db().totals(t.now).unwrap().lost_bytes, 11);
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Starts the inflater with answers collected for the test to hand to the tracker.
fn inflater(t: &mut T) -> std::sync::mpsc::Receiver<crate::rotated::Inflated> {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let i = crate::rotated::Inflater::start(move |a| {
        let _ = tx.lock().unwrap().send(a);
    })
    .unwrap();
    t.t.set_inflater(i);
    rx
}

#[test]
fn a_compressed_copy_of_an_archived_generation_is_not_stored_again() {
    let mut t = T::new(&["**/*.log", "**/*.gz"]);
    let rx = inflater(&mut t);
    let log: String = (0..300).map(|i| format!("entry {i}\n")).collect();
    t.write("app.log", log.as_bytes());
    t.settle();
    // delaycompress, later: app.log.1 (the renamed generation) becomes app.log.2.gz.
    std::fs::rename(t.p("app.log"), t.p("app.log.1")).unwrap();
    t.scan();
    // Its removal is seen first: the generation is no longer followed when its .gz is looked at.
    std::fs::remove_file(t.p("app.log.1")).unwrap();
    t.wait(QUIET + 1);
    t.scan();
    std::fs::write(t.p("app.log.2.gz"), gz(log.as_bytes())).unwrap();
    t.scan();
    let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let now = t.now;
    t.t.inflated(answer, now).unwrap();
    t.settle();
    assert_eq!(
        t.remotes(),
        ["/app.log"],
        "the .gz is not stored although *.gz is wanted"
    );
    let totals = t.t.db().totals(t.now).unwrap();
    assert_eq!(totals.already_archived, 1);
    let r = t.row("app.log", 1);
    assert!(t
        .t
        .db()
        .names(r.id)
        .unwrap()
        .contains(&"app.log.2.gz".to_string()));
}

#[test]
fn a_compressed_copy_gives_back_what_the_archive_lacks() {
    let mut t = T::new(&["**/*.log"]);
    let rx = inflater(&mut t);
    t.write("app.log", b"one\ntwo\n");
    t.settle();
    t.append("app.log", b"three\n");
    t.look("app.log");
    let id = t.row("app.log", 1).id;
    // The agent loses its open file (a restart) and the log is compressed and removed.
    t.t.open.close(id);
    std::fs::write(t.p("app.log.1.gz"), gz(b"one\ntwo\nthree\n")).unwrap();
    std::fs::remove_file(t.p("app.log")).unwrap();
    t.wait(10);
    t.scan();
    assert_eq!(t.row("app.log", 1).state, FileState::Orphaned);
    t.wait(10);
    t.scan();
    let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let now = t.now;
    t.t.inflated(answer, now).unwrap();
    t.settle();
    assert_eq!(t.remote("/app.log"), "one\ntwo\nthree\n");
    let r = t.row("app.log", 1);
    assert_eq!(r.state, FileState::Archived);
    assert_eq!(t.t.db().totals(t.now).unwrap().lost, 0);
    assert!(
        !t.dir
            .path()
            .join("scratch")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "the decompressed copy is removed once archived"
    );
}

#[test]
fn an_inode_given_to_another_file_is_not_taken_for_a_rename() {
    let mut t = T::new(&["**/*.log"]);
    t.write("a.log", b"aaaa\n");
    t.write("b.log", b"bbbb\n");
    t.settle();
    let (a, b) = (t.row("a.log", 1), t.row("b.log", 1));
    // a.log is removed and its inode handed to a new file elsewhere: simulated by giving a's
    // row b's identity while nothing holds either open.
    t.t.open.close(a.id);
    t.t.open.close(b.id);
    std::fs::remove_file(t.p("a.log")).unwrap();
    let mut fake = a.clone();
    fake.dev = b.dev;
    fake.ino = b.ino;
    t.t.db().update(&fake).unwrap();
    t.t.live.remove((a.dev, a.ino), a.id);
    t.t.live.remove((b.dev, b.ino), b.id);
    t.t.live.insert((b.dev, b.ino), a.id);
    t.write("b.log", b"bbbb\nmore\n");
    t.settle();
    assert_eq!(
        t.remote("/a.log"),
        "aaaa\n",
        "never appended to with another file's bytes"
    );
    assert!(t.remote("/b.log.~2~").starts_with("bbbb\n"));
}

#[test]
fn a_failed_read_of_a_head_is_no_rotation() {
    let mut t = T::new(&["**/*.log"]);
    t.write("small.log", b"ab\n");
    t.settle();
    let before = t.row("small.log", 1);
    // The file grows, and its size is read; by the time its head is read it is shorter (a
    // failed read, as far as the head goes). Nothing is decided on that look.
    t.append("small.log", b"cd\n");
    let stale = std::fs::metadata(t.p("small.log")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.p("small.log"))
        .unwrap()
        .set_len(3)
        .unwrap();
    t.t.open.close(before.id);
    let (p, now) = (t.p("small.log"), t.now);
    t.t.observe_file(&p, &stale, now).unwrap();
    let after = t.row("small.log", 1);
    assert_eq!(
        (after.id, after.size, after.tracked),
        (before.id, 3, true),
        "still the same file"
    );
    // A new file whose head cannot be read is looked at again later, not taken for anything.
    t.write("new.log", b"0123456789\n");
    let stale = std::fs::metadata(t.p("new.log")).unwrap();
    std::fs::write(t.p("new.log"), b"01\n").unwrap();
    let p = t.p("new.log");
    t.t.observe_file(&p, &stale, now).unwrap();
    assert!(t
        .t
        .db()
        .latest(t.t.matchers[0].id, "new.log")
        .unwrap()
        .is_none());
    t.settle();
    assert_eq!(t.remote("/small.log"), "ab\n");
    assert_eq!(t.remote("/new.log"), "01\n");
    assert_eq!(
        t.remotes(),
        ["/new.log", "/small.log"],
        "no generation from a failed read"
    );
}

#[test]
fn a_busy_log_that_begins_like_another_is_held_back_only_briefly() {
    let mut t = T::new(&["**/*.log"]);
    // A daemon that writes the same 5 KiB banner at the start of every log it opens.
    let banner = "#".repeat(5000) + "\n";
    t.write("a.log", banner.as_bytes());
    t.settle();
    t.write("b.log", format!("{banner}b 0\n").as_bytes());
    t.look("b.log");
    let mut sent_at = None;
    for i in 1..80 {
        // Written every 500 ms, never quiet.
        t.append("b.log", format!("b {i}\n").as_bytes());
        t.look("b.log");
        t.wait(500);
        t.deliver();
        if sent_at.is_none() && t.server.contains_key("/b.log") {
            sent_at = Some(i);
        }
    }
    let at = sent_at.expect("never sent while it kept growing");
    assert!((55..=65).contains(&at), "first sent after {} s", at / 2);
    assert!(
        t.remote("/b.log").ends_with("b 79\n"),
        "then streamed: {}",
        &t.remote("/b.log")[5000..]
    );
}
