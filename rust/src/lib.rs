//! skewless: the engine of an embedded feature store. The kernels (`asof`, `online`, `serve`) work on Arrow data
//! and know nothing of Python; `py` (feature `python`) is the PyO3 binding layer.

// The asof module is being reworked on another branch (issue 7 §2 moves its shared-memory scatter into a
// grouping layer); its three undocumented unsafe sites are documented there, and this allow goes at merge.
#[allow(
    clippy::undocumented_unsafe_blocks,
    reason = "documented on the branch that reworks asof (issue 7 §2)"
)]
pub mod asof;
pub mod error;
pub mod online;
pub mod serve;
pub mod table;
pub mod time;

#[cfg(feature = "python")]
mod py;
