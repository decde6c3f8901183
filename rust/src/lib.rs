//! skewless: the engine of an embedded feature store. The kernels (`asof`, `online`, `serve`) work on Arrow data
//! and know nothing of Python; `py` (feature `python`) is the PyO3 binding layer.

pub mod asof;
pub mod error;
pub mod online;
pub mod serve;
pub mod table;
pub mod time;

#[cfg(feature = "python")]
mod py;
