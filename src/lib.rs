//! `asyncpg_rs._native`: the compiled core of asyncpg_rs.
//!
//! Module registration only. The PostgreSQL protocol core lives in [`pg`], the event loop in
//! [`runtime`]; each registers its own Python classes.

use pyo3::prelude::*;

pub mod pg;
pub mod runtime;
#[cfg(test)]
mod testing;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pg::register(m)?;
    runtime::register(m)?;
    Ok(())
}
