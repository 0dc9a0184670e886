//! tabula: a clean slate at every boot.
//!
//! The library holds every domain module; `main.rs` only parses arguments and calls into it.

pub mod config;
pub mod diff;
pub mod error;
pub mod restore;
