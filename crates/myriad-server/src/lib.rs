//! The parts of the `myriad` server that stand on their own, as a library:
//! the configuration parser and the metrics listener's HTTP request step. The binary
//! (`src/main.rs`) uses them from here, and so do the fuzz targets in
//! `crates/myriad-server/fuzz` (a binary crate's modules cannot be reached
//! from another crate; one definition compiled once, used by both).

pub mod config;
pub mod metrics_request;
