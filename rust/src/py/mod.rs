//! The bindings: the one place that converts Python objects and maps errors. Kernels never see Python.

mod arrow;
mod asof;
mod bucket;
mod errors;
mod keys;
mod online;
mod serve;
mod threads;
mod transform;
mod window;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<online::PyOnlineStore>()?;
    m.add_class::<online::PyReader>()?;
    m.add_class::<serve::PyPlan>()?;
    m.add_class::<serve::PyServed>()?;
    m.add("STATUS_CODES", crate::online::status::ALL.to_vec())?;
    asof::register(m)?;
    bucket::register(m)?;
    window::register(m)?;
    transform::register(m)?;
    threads::register(m)?;
    Ok(())
}
