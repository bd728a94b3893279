//! The threads the web service starts for work that outlives a handler's await: content
//! searches, and the reading side of downloads and zips.
//!
//! Invariants kept here: every such thread holds a permit, so their number is bounded
//! (`max_searches` × `search_threads` for searches, of which `max_searches_per_user` searches
//! for one account; `max_transfers` for downloads); a request beyond a bound is answered
//! "busy" (503, [`WebError::Busy`]) at once instead of queueing; and the threads run at a lower
//! CPU priority than the FTP sessions, so uploads keep their latency while people search.

use super::error::WebError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How nice (in `nice(1)`'s sense) the web's worker threads are: below the FTP sessions (0).
const NICENESS: i32 = 10;

/// The permits of the web service's worker threads.
pub struct Workers {
    searches: Arc<Semaphore>,
    max_searches: usize,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
    max_per_user: usize,
    transfers: Arc<Semaphore>,
    max_transfers: usize,
}

/// Held by a running content search until its last thread has stopped.
pub struct SearchPermit {
    _all: OwnedSemaphorePermit,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for SearchPermit {
    fn drop(&mut self) {
        let mut per = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.user);
            }
        }
    }
}

/// Held by a download's or zip's reading thread until it stops.
pub struct TransferPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Workers {
    pub fn new(max_searches: usize, max_per_user: usize, max_transfers: usize) -> Workers {
        Workers {
            searches: Arc::new(Semaphore::new(max_searches)),
            max_searches,
            per_user: Arc::default(),
            max_per_user,
            transfers: Arc::new(Semaphore::new(max_transfers)),
            max_transfers,
        }
    }

    /// A place for one more content search by `user`, or "busy".
    pub fn search(&self, user: &str) -> Result<SearchPermit, WebError> {
        let mut per = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per.get(user).copied().unwrap_or(0);
        if mine >= self.max_per_user {
            return Err(WebError::Busy(format!(
                "you already have {mine} content searches running (at most {}); \
                 wait for one to finish or close its page",
                self.max_per_user
            )));
        }
        let all = Arc::clone(&self.searches)
            .try_acquire_owned()
            .map_err(|_| {
                WebError::Busy(format!(
                    "{} content searches are running, the most at once; try again in a moment",
                    self.max_searches
                ))
            })?;
        *per.entry(user.to_string()).or_insert(0) += 1;
        Ok(SearchPermit {
            _all: all,
            per_user: Arc::clone(&self.per_user),
            user: user.to_string(),
        })
    }

    /// A place for one more download being read, or "busy".
    pub fn transfer(&self) -> Result<TransferPermit, WebError> {
        Arc::clone(&self.transfers)
            .try_acquire_owned()
            .map(TransferPermit)
            .map_err(|_| {
                WebError::Busy(format!(
                    "{} downloads are running, the most at once; try again in a moment",
                    self.max_transfers
                ))
            })
    }

    /// Content searches running now.
    pub fn searches_running(&self) -> usize {
        self.max_searches - self.searches.available_permits()
    }
}

/// Starts a worker thread named `name`, below the FTP sessions' CPU priority. Failing to start
/// one (the system's thread limit) is an error for the request, never a panic.
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, WebError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // On Linux a thread id names that thread alone; a failure only leaves the
            // priority as it was.
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS);
            f()
        })
        .map_err(|e| WebError::Busy(format!("cannot start a worker thread ({e}); try again")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_are_bounded_in_all_and_per_account_and_give_their_place_back() {
        let w = Workers::new(3, 2, 1);
        let a1 = w.search("alice").unwrap();
        let _a2 = w.search("alice").unwrap();
        let e = w
            .search("alice")
            .err()
            .expect("a third search of one account");
        assert!(e.to_string().contains("already have 2"), "{e}");
        let _b1 = w.search("bob").unwrap();
        let e = w.search("carol").err().expect("a fourth search in all");
        assert!(e.to_string().contains("3 content searches"), "{e}");
        assert_eq!(w.searches_running(), 3);
        drop(a1);
        let _c1 = w.search("carol").unwrap();
        assert!(
            w.search("alice").is_err(),
            "alice still has one and the server is full"
        );
    }

    #[test]
    fn transfers_are_bounded() {
        let w = Workers::new(1, 1, 2);
        let t1 = w.transfer().unwrap();
        let _t2 = w.transfer().unwrap();
        assert!(matches!(w.transfer(), Err(WebError::Busy(_))));
        drop(t1);
        assert!(w.transfer().is_ok());
    }

    #[test]
    fn worker_threads_run_below_normal_priority() {
        let nice = spawn("test-nice", || {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
        assert!(nice >= NICENESS, "niceness {nice}");
    }
}
