//! Everything that wakes the tracker, in one bounded place: file-system events (coalesced per
//! path: a busy log sends one event per write, the tracker needs one look), workers' outcomes,
//! the inflater's answers and the request to stop.

use crate::rotated::Inflated;
use crate::upload::{Job, Outcome};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Paths kept between two looks; beyond that the tracker rescans everything instead.
pub const MAX_PATHS: usize = 8192;

#[derive(Default)]
pub struct Batch {
    /// Paths that changed, and whether they were closed after writing.
    pub paths: HashMap<PathBuf, bool>,
    /// Events were lost (or too many to keep): look at everything.
    pub rescan: bool,
    pub outcomes: Vec<(Job, Outcome)>,
    pub inflated: Vec<Inflated>,
    pub stop: bool,
}

impl Batch {
    /// Only file-system events: nothing that must be handled at once.
    pub fn only_paths(&self) -> bool {
        !self.rescan && self.outcomes.is_empty() && self.inflated.is_empty() && !self.stop
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
            && !self.rescan
            && self.outcomes.is_empty()
            && self.inflated.is_empty()
            && !self.stop
    }
}

#[derive(Default)]
struct State {
    paths: HashMap<PathBuf, bool>,
    rescan: bool,
    outcomes: Vec<(Job, Outcome)>,
    inflated: Vec<Inflated>,
    stop: bool,
}

#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
    wake: Condvar,
}

impl Inbox {
    fn with(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        drop(s);
        self.wake.notify_one();
    }

    pub fn path(&self, p: PathBuf, closed: bool) {
        self.with(|s| {
            if let Some(c) = s.paths.get_mut(&p) {
                *c |= closed;
            } else if s.paths.len() < MAX_PATHS {
                s.paths.insert(p, closed);
            } else {
                s.rescan = true;
            }
        });
    }

    pub fn rescan(&self) {
        self.with(|s| s.rescan = true);
    }

    pub fn outcome(&self, job: Job, outcome: Outcome) {
        self.with(|s| s.outcomes.push((job, outcome)));
    }

    pub fn inflated(&self, i: Inflated) {
        self.with(|s| s.inflated.push(i));
    }

    pub fn stop(&self) {
        self.with(|s| s.stop = true);
    }

    /// Adds to `batch` what arrives until `until`, or until anything but a path does.
    pub fn wait_until(&self, until: Instant, batch: &mut Batch) {
        self.add_until(until, batch, |s, _| {
            s.rescan || !s.outcomes.is_empty() || !s.inflated.is_empty() || s.stop
        });
    }

    /// Adds to `batch` the outcomes that arrive until it holds `want` of them or `until`,
    /// whichever comes first (and anything else that arrived meanwhile): a burst of finished
    /// uploads is recorded in one commit instead of one each.
    pub fn gather_outcomes(&self, want: usize, until: Instant, batch: &mut Batch) {
        self.add_until(until, batch, |s, b| {
            b.outcomes.len() + s.outcomes.len() >= want || s.stop || s.rescan
        });
    }

    /// Waits until `done` holds or `until`, then moves everything waiting into `batch`.
    fn add_until(&self, until: Instant, batch: &mut Batch, done: impl Fn(&State, &Batch) -> bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            if done(&s, batch) || now >= until {
                break;
            }
            s = self
                .wake
                .wait_timeout(s, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let more = Self::take(&mut s);
        for (p, closed) in more.paths {
            *batch.paths.entry(p).or_default() |= closed;
        }
        batch.rescan |= more.rescan;
        batch.outcomes.extend(more.outcomes);
        batch.inflated.extend(more.inflated);
        batch.stop |= more.stop;
    }

    fn take(s: &mut State) -> Batch {
        Batch {
            paths: std::mem::take(&mut s.paths),
            rescan: std::mem::take(&mut s.rescan),
            outcomes: std::mem::take(&mut s.outcomes),
            inflated: std::mem::take(&mut s.inflated),
            stop: s.stop,
        }
    }

    /// Everything that arrived, waiting for something until `until` (at most).
    pub fn wait(&self, until: Option<Instant>) -> Batch {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let ready = !s.paths.is_empty()
                || s.rescan
                || !s.outcomes.is_empty()
                || !s.inflated.is_empty()
                || s.stop;
            let now = Instant::now();
            let timed_out = until.is_some_and(|u| now >= u);
            if ready || timed_out {
                break;
            }
            s = match until {
                Some(u) => {
                    self.wake
                        .wait_timeout(s, u - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
        }
        Self::take(&mut s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_coalesced_and_bounded() {
        let inbox = Inbox::default();
        for _ in 0..100 {
            inbox.path("/a".into(), false);
        }
        inbox.path("/a".into(), true);
        let b = inbox.wait(Some(Instant::now()));
        assert_eq!(b.paths, HashMap::from([(PathBuf::from("/a"), true)]));
        assert!(!b.rescan);
        for i in 0..MAX_PATHS + 1 {
            inbox.path(format!("/f{i}").into(), false);
        }
        let b = inbox.wait(Some(Instant::now()));
        assert_eq!(b.paths.len(), MAX_PATHS);
        assert!(b.rescan, "an overflow asks for a full scan");
        assert!(inbox.wait(Some(Instant::now())).is_empty());
    }
}
