pub mod agent;
pub mod ftp;
pub mod server;
pub mod user;
