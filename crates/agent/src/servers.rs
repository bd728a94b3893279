//! The archive servers an agent may upload to (`server` = one URL or a list), and which one it
//! uses. Invariants, kept here:
//! - Every new connection goes to the server in use first; when it cannot be made (refused, timed
//!   out, refused at login), the next servers of the list are tried in order, and the first that
//!   answers becomes the one in use for every worker.
//! - After `failback_after` on a server other than the first, one connection (one at a time, then
//!   again after `failback_after`) tries the first; when it answers, it is in use again, and
//!   connections to another server are dropped at their next job and made again.
//! - With one URL nothing of this applies: every connection goes to it.
//!
//! What a send does on a server is unchanged by this: the agent asks the server's size before
//! an append unless it just sent the file's previous bytes on the same connection, so a file
//! continued on another server resumes at the size that server's archive has committed.

use logarchive_ftp::client::{Client, ClientConfig, ClientError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Servers {
    list: Vec<(String, ClientConfig)>,
    failback: Duration,
    state: Mutex<State>,
}

struct State {
    /// The index of the server in use.
    current: usize,
    /// Since when it is in use, or since the last try of the first.
    since: Instant,
}

impl Servers {
    /// `list`: each URL with its client configuration, in the configured order (not empty).
    pub fn new(list: Vec<(String, ClientConfig)>, failback: Duration) -> Servers {
        Servers {
            list,
            failback,
            state: Mutex::new(State {
                current: 0,
                since: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The URL of the server in use.
    pub fn in_use(&self) -> &str {
        &self.list[self.state().current].0
    }

    /// Whether a connection to server `i` should be left for a new one: another server is in
    /// use now, or it is time to try the first again.
    pub fn leave(&self, i: usize) -> bool {
        let s = self.state();
        i != s.current || (s.current != 0 && s.since.elapsed() >= self.failback)
    }

    /// The order in which to try the servers for a new connection.
    fn order(&self) -> Vec<usize> {
        let mut s = self.state();
        let mut order = Vec::with_capacity(self.list.len());
        if s.current != 0 && s.since.elapsed() >= self.failback {
            // This connection tries the first; the others wait another period for their turn.
            s.since = Instant::now();
            order.push(0);
        }
        let n = self.list.len();
        for i in (0..n).map(|k| (s.current + k) % n) {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    }

    /// A new connection: to the server in use, else to the next that answers (see above).
    /// Returns the server's index with it, or the last server's error when none answers.
    pub async fn connect(&self) -> Result<(usize, Client), ClientError> {
        let mut last = None;
        for i in self.order() {
            let (url, cfg) = &self.list[i];
            match Client::connect(cfg.clone()).await {
                Ok(client) => {
                    self.connected(i);
                    return Ok((i, client));
                }
                Err(e) => {
                    if self.list.len() > 1 {
                        tracing::debug!("server {url}: {e}");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Invalid("no server configured".into())))
    }

    fn connected(&self, i: usize) {
        let mut s = self.state();
        if s.current != i {
            tracing::info!(
                "uploading to {} now (was {})",
                self.list[i].0,
                self.list[s.current].0
            );
            s.current = i;
            s.since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize, failback: Duration) -> Servers {
        Servers::new(
            (0..n)
                .map(|i| {
                    (
                        format!("ftp://127.0.0.1:{}", 1000 + i),
                        ClientConfig::new("127.0.0.1", 1000 + i as u16, "a", "b"),
                    )
                })
                .collect(),
            failback,
        )
    }

    #[test]
    fn the_one_in_use_first_then_the_rest_in_order_and_the_first_again_later() {
        let s = servers(3, Duration::from_secs(3600));
        assert_eq!(s.order(), [0, 1, 2]);
        s.connected(2);
        assert_eq!(s.in_use(), "ftp://127.0.0.1:1002");
        assert_eq!(s.order(), [2, 0, 1]);
        assert!(s.leave(1) && !s.leave(2));
        // The failback period over: one connection tries the first, the next ones do not.
        s.state().since = Instant::now() - Duration::from_secs(3601);
        assert!(s.leave(2));
        assert_eq!(s.order(), [0, 2, 1]);
        assert!(!s.leave(2));
        assert_eq!(s.order(), [2, 0, 1]);
        s.connected(0);
        assert!(s.leave(2) && !s.leave(0));
        let one = servers(1, Duration::from_secs(1));
        assert_eq!(one.order(), [0]);
        assert!(!one.leave(0));
    }
}
