pub mod agent;
pub mod demo;
pub mod ftp;
pub mod server;
pub mod tls;
pub mod user;
