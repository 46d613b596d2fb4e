//! Paperhook's shared library: configuration, database access, the work
//! queue, object storage, secrets and the public status strings. The HTTP
//! API, the workers and the janitor are thin binaries over it; document
//! understanding lives in `paperhook-extract`, which does no I/O.

pub mod boot;
pub mod bounded;
pub mod config;
pub mod crypto;
pub mod db;
pub mod metrics;
pub mod order;
pub mod queue;
pub mod retention;
/// Document types from their first bytes (owned by `paperhook-extract`).
pub use paperhook_extract::sniff;
pub mod status;
pub mod storage;
pub mod testing;
pub mod webhook;
