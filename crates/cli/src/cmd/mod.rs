pub mod server;
pub mod user;
