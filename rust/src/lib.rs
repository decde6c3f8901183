//! skewless: the engine of an embedded feature store. The kernels (`asof`, `online`, `serve`, `window`) work
//! on Arrow data and know nothing of Python; `group` is the grouping layer under `asof` and `window`,
//! `column` the one typed view of Arrow arrays; `threads` the pool kernels run in; `serve` the serving plan over the online store; `py`
//! (feature `python`) is the PyO3 binding layer.

pub mod asof;
pub mod column;
pub mod error;
pub mod group;
pub mod online;
pub mod pages;
pub mod serve;
pub mod table;
#[cfg(test)]
mod testing;
pub mod threads;
pub mod time;
pub mod transform;
pub mod window;

#[cfg(feature = "python")]
mod py;
