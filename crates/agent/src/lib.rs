//! The logarchive agent: finds the log files that match the configured patterns, remembers in a
//! local SQLite database what the server holds (verified by SHA-256), and uploads what is new or
//! has grown, so that `<root>/<rel>` lands at `/<agent>/<prefix>/<rel>` on the archive server.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;
mod inbox;
pub mod metrics;
pub mod rotated;
mod run;
pub mod scan;
mod servers;
pub mod state;
pub mod status;
pub mod track;
mod upload;

pub use run::{run, AgentError, Mode, RunSummary};
