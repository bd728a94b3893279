#![deny(missing_docs)]
//! The archive's storage: the one trait every reader and writer of archived files goes through
//! ([`Storage`]: metadata, listings, uploads that create, append or rewrite, ranged reads,
//! rename-if-absent, remembered SHA-256 states), and its back-ends: [`LocalStorage`], a folder
//! opened beneath a directory descriptor so no path climbs out of it.
//!
//! Paths are [`VirtualPath`]s (normalised, never climbing); hashes are [`sha::Sha256State`]s,
//! which can be kept and continued (an append hashes only its new bytes). The FTP library
//! (`logarchive-ftp`) serves a `Storage`; the archive server reads through it.

mod fsops;
mod hash_cache;
pub mod local;
mod local_pack;
#[cfg(feature = "postgres-harness")]
pub mod pg_harness;
#[cfg(feature = "s3")]
pub mod s3;
pub mod seekable;
pub mod sha;
pub mod store;
pub mod vpath;
pub mod whole;

pub use fsops::HomeDir;
pub use local::{LocalStats, LocalStorage};
pub use local_pack::{Claim, PackReport};
pub use store::{Download, Kind, Meta, Reader, Storage, Upload, WriteMode};
pub use vpath::VirtualPath;
