//! tabula: a clean slate at every boot.
//!
//! The library holds every domain module; `main.rs` only parses arguments and calls into it.

pub mod advise;
pub mod app;
pub mod blank;
pub mod btrfs;
pub mod check;
pub mod cli;
pub mod cmdline;
pub mod config;
pub mod device;
pub mod diff;
pub mod docs;
pub mod error;
pub mod fault;
pub mod fsx;
pub mod generator;
pub mod init;
pub mod json;
pub mod layout;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod mount;
pub mod mounted;
pub mod mountinfo;
pub mod orphans;
pub mod persist;
pub mod persist_add;
pub mod restore;
pub mod retention;
pub mod rollback;
pub mod roots;
pub mod tz;
pub mod users;
pub mod wait;
