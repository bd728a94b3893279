//! The optional Prometheus endpoint (`metrics_listen`): `GET /metrics`, plain text, nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Default)]
pub struct Metrics {
    pub files_archived: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub upload_failures: AtomicU64,
    pub scans: AtomicU64,
    pub backlog_files: AtomicU64,
    pub backlog_bytes: AtomicU64,
    pub last_scan_ms: AtomicI64,
    pub max_lag_seconds: AtomicU64,
    pub max_lag_bytes: AtomicU64,
    /// The files furthest behind (path, bytes, seconds), from the last status.
    pub lagging: std::sync::Mutex<Vec<crate::state::Lag>>,
}

impl Metrics {
    /// Refreshes the gauges from the state DB's totals.
    pub fn set_totals(&self, t: &crate::state::Totals) {
        self.backlog_files.store(t.backlog_files, Ordering::Relaxed);
        self.backlog_bytes.store(t.backlog_bytes, Ordering::Relaxed);
        self.max_lag_seconds
            .store(t.max_lag_seconds, Ordering::Relaxed);
        self.max_lag_bytes.store(t.max_lag_bytes, Ordering::Relaxed);
        *self.lagging.lock().unwrap_or_else(|p| p.into_inner()) = t.lagging.clone();
    }

    pub fn render(&self, agent: &str) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let agent = agent.replace(['"', '\\', '\n'], "_");
        let mut s = String::new();
        for (name, kind, help, v) in [
            (
                "logarchive_agent_files_archived_total",
                "counter",
                "Files (or grown parts) archived and verified by this process.",
                g(&self.files_archived),
            ),
            (
                "logarchive_agent_bytes_sent_total",
                "counter",
                "Bytes sent to the server by this process.",
                g(&self.bytes_sent),
            ),
            (
                "logarchive_agent_upload_failures_total",
                "counter",
                "Upload attempts that failed (retried later).",
                g(&self.upload_failures),
            ),
            (
                "logarchive_agent_scans_total",
                "counter",
                "Full scans of the sources.",
                g(&self.scans),
            ),
            (
                "logarchive_agent_backlog_files",
                "gauge",
                "Files with bytes still to send.",
                g(&self.backlog_files),
            ),
            (
                "logarchive_agent_backlog_bytes",
                "gauge",
                "Bytes still to send.",
                g(&self.backlog_bytes),
            ),
            (
                "logarchive_agent_max_lag_seconds",
                "gauge",
                "How long the file furthest behind its writer has been behind.",
                g(&self.max_lag_seconds),
            ),
            (
                "logarchive_agent_max_lag_bytes",
                "gauge",
                "Bytes the file furthest behind its writer still has to send.",
                g(&self.max_lag_bytes),
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{agent=\"{agent}\"}} {v}\n"
            ));
        }
        let lagging = self
            .lagging
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help) in [
            (
                "logarchive_agent_file_lag_seconds",
                "Seconds behind its writer, per file (the 10 furthest behind).",
            ),
            (
                "logarchive_agent_file_lag_bytes",
                "Bytes behind its writer, per file (the 10 furthest behind).",
            ),
        ] {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for l in &lagging {
                let path = l.path.replace(['"', '\\', '\n'], "_");
                let v = if name.ends_with("seconds") {
                    l.seconds
                } else {
                    l.bytes
                };
                s.push_str(&format!(
                    "{name}{{agent=\"{agent}\",path=\"{path}\"}} {v}\n"
                ));
            }
        }
        let last = self.last_scan_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        s.push_str(&format!(
            "# HELP logarchive_agent_last_scan_seconds Unix time of the last full scan.\n# TYPE logarchive_agent_last_scan_seconds gauge\nlogarchive_agent_last_scan_seconds{{agent=\"{agent}\"}} {last}\n"
        ));
        s
    }
}

/// Serves `GET /metrics` on `addr` until the runtime ends.
pub async fn serve(
    addr: SocketAddr,
    agent: String,
    metrics: Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let (m, agent) = (Arc::clone(&metrics), agent.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                // Read the request head (bounded in size and time); the body, if any, is ignored.
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while got < buf.len() {
                        let n = sock.read(&mut buf[got..]).await?;
                        if n == 0 {
                            break;
                        }
                        got += n;
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..got]);
                let (status, body) =
                    if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                        ("200 OK", m.render(&agent))
                    } else {
                        ("404 Not Found", "not found\n".to_string())
                    };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    }))
}
