//! Prometheus metrics (`GET /metrics`, text format 0.0.4). Counters are fed from the FTP
//! service's events and from the web handlers; gauges are read when scraped.

use logarchive_ftp::server::FtpEvent;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the search-time histogram buckets.
const SEARCH_BUCKETS: [f64; 8] = [0.005, 0.02, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    files_archived: AtomicU64,
    bytes_archived: AtomicU64,
    appends: AtomicU64,
    bytes_appended: AtomicU64,
    ftp_downloads: AtomicU64,
    ftp_bytes_downloaded: AtomicU64,
    ftp_logins: AtomicU64,
    ftp_login_failures: AtomicU64,
    ftp_transfer_failures: AtomicU64,
    pub web_logins: AtomicU64,
    pub web_login_failures: AtomicU64,
    search_buckets: [AtomicU64; SEARCH_BUCKETS.len()],
    searches: AtomicU64,
    search_micros: AtomicU64,
}

impl Metrics {
    /// Counts what the event did to the archive. Only catalogued files count as archived:
    /// an agent's status document (rewritten every few seconds under `.logarchive/`) and
    /// temporary uploads do not.
    pub fn on_ftp_event(&self, e: &FtpEvent) {
        use crate::catalog::catalogued;
        match e {
            FtpEvent::UploadCompleted {
                path,
                size,
                temp: false,
                ..
            } if catalogued(path) => {
                self.files_archived.fetch_add(1, Relaxed);
                self.bytes_archived.fetch_add(*size, Relaxed);
            }
            FtpEvent::Renamed {
                to,
                size,
                from_temp: true,
                ..
            } if catalogued(to) => {
                self.files_archived.fetch_add(1, Relaxed);
                self.bytes_archived.fetch_add(*size, Relaxed);
            }
            FtpEvent::Appended {
                path,
                offset,
                size,
                temp: false,
                ..
            } if catalogued(path) => {
                self.appends.fetch_add(1, Relaxed);
                self.bytes_appended
                    .fetch_add(size.saturating_sub(*offset), Relaxed);
            }
            FtpEvent::Downloaded { bytes, .. } => {
                self.ftp_downloads.fetch_add(1, Relaxed);
                self.ftp_bytes_downloaded.fetch_add(*bytes, Relaxed);
            }
            FtpEvent::LoggedIn { .. } => {
                self.ftp_logins.fetch_add(1, Relaxed);
            }
            FtpEvent::LoginFailed { .. } => {
                self.ftp_login_failures.fetch_add(1, Relaxed);
            }
            FtpEvent::TransferFailed { .. } => {
                self.ftp_transfer_failures.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    pub fn on_search(&self, seconds: f64) {
        self.searches.fetch_add(1, Relaxed);
        self.search_micros
            .fetch_add((seconds * 1e6) as u64, Relaxed);
        for (i, le) in SEARCH_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.search_buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// The exposition text: our own counters, then `counters` and `gauges` (name, help, value)
    /// read elsewhere at scrape time.
    pub fn render(&self, counters: &[(&str, &str, u64)], gauges: &[(&str, &str, f64)]) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut o,
            "logarchive_files_archived_total",
            "Files completed in the archive (uploaded, verified and renamed).",
            &self.files_archived,
        );
        counter(
            &mut o,
            "logarchive_bytes_archived_total",
            "Size of the files completed in the archive.",
            &self.bytes_archived,
        );
        counter(
            &mut o,
            "logarchive_appends_total",
            "Appends to archived files.",
            &self.appends,
        );
        counter(
            &mut o,
            "logarchive_bytes_appended_total",
            "Bytes appended to archived files.",
            &self.bytes_appended,
        );
        counter(
            &mut o,
            "logarchive_ftp_downloads_total",
            "Files downloaded over FTP.",
            &self.ftp_downloads,
        );
        counter(
            &mut o,
            "logarchive_ftp_bytes_downloaded_total",
            "Bytes downloaded over FTP.",
            &self.ftp_bytes_downloaded,
        );
        counter(
            &mut o,
            "logarchive_ftp_logins_total",
            "Successful FTP logins.",
            &self.ftp_logins,
        );
        counter(
            &mut o,
            "logarchive_ftp_login_failures_total",
            "Failed FTP logins.",
            &self.ftp_login_failures,
        );
        counter(
            &mut o,
            "logarchive_ftp_transfer_failures_total",
            "FTP transfers that failed.",
            &self.ftp_transfer_failures,
        );
        counter(
            &mut o,
            "logarchive_web_logins_total",
            "Successful web logins.",
            &self.web_logins,
        );
        counter(
            &mut o,
            "logarchive_web_login_failures_total",
            "Failed web logins.",
            &self.web_login_failures,
        );
        let _ = writeln!(o, "# HELP logarchive_search_seconds Time of content searches.\n# TYPE logarchive_search_seconds histogram");
        for (i, le) in SEARCH_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "logarchive_search_seconds_bucket{{le=\"{le}\"}} {}",
                self.search_buckets[i].load(Relaxed)
            );
        }
        let n = self.searches.load(Relaxed);
        let _ = writeln!(o, "logarchive_search_seconds_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            o,
            "logarchive_search_seconds_sum {}",
            self.search_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "logarchive_search_seconds_count {n}");
        for (name, help, v) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(path: &str) -> FtpEvent {
        FtpEvent::UploadCompleted {
            user: "agent01".into(),
            path: path.into(),
            size: 10,
            sha256: None,
            temp: false,
        }
    }

    #[test]
    fn only_catalogued_files_count_as_archived() {
        let m = Metrics::default();
        // An agent rewrites its status document every few seconds: never an archived file.
        for _ in 0..100 {
            m.on_ftp_event(&stored("/agent01/.logarchive/status.json"));
        }
        m.on_ftp_event(&stored("/agent01/Logs/a.log"));
        m.on_ftp_event(&FtpEvent::Renamed {
            user: "agent01".into(),
            from: "/agent01/Logs/.b.log.logarchive-tmp".into(),
            to: "/agent01/Logs/b.log".into(),
            size: 5,
            sha256: None,
            from_temp: true,
            addr: "127.0.0.1:1".parse().expect("an address"),
        });
        m.on_ftp_event(&FtpEvent::Appended {
            user: "agent01".into(),
            path: "/agent01/.logarchive/status.json".into(),
            offset: 0,
            size: 7,
            sha256: None,
            temp: false,
        });
        assert_eq!(m.files_archived.load(Relaxed), 2);
        assert_eq!(m.bytes_archived.load(Relaxed), 15);
        assert_eq!(m.appends.load(Relaxed), 0);
    }
}
