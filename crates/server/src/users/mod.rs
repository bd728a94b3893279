//! Accounts: the user record file (`users.toml`), password hashes, role presets.

mod accounts;
mod db;
mod password;
mod pg;
mod record;
mod verified;

pub use accounts::{account, credentials};
pub use db::{write_atomically, NewUser, UserDb, UserDbError, UserUpdate, UsersFile, Watch};
pub use password::{hash_password, random_password, verify_password};
pub use record::{normalize_home, Role, UserRecord, WebRole};
