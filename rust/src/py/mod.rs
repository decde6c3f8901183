//! The bindings: the one place that converts Python objects and maps errors. Kernels never see Python.

mod arrow;
mod asof;
mod errors;
mod online;
mod window;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<online::PyOnlineStore>()?;
    m.add_class::<online::PyReader>()?;
    asof::register(m)?;
    window::register(m)?;
    Ok(())
}
