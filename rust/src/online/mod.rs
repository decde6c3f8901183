//! The online store: the latest row per key of each feature view in an LMDB environment, memory-mapped
//! and shared by many reader processes while one process at a time writes.
//!
//! - `key`: order-preserving key encoding (format v1), `value`: value layout (format v1), `schema`: the
//!   per-view schema record (format v1); all three versions are stored in the environment's metadata.
//! - `env`: the process-global environment cache, fork safety, map growth.
//! - `write`: batch validation, in-batch dedupe, one transaction per call.
//! - `read`: prepared readers decoding into float64 buffers or Arrow arrays.

pub mod cells;
pub mod env;
pub mod key;
pub mod read;
pub mod schema;
pub mod value;
pub mod write;

pub use env::Store;
pub use read::{KeyBatch, Reader, EXPIRED, NOT_FOUND, PRESENT};
pub use write::{write, WriteSpec, WriteStats};
