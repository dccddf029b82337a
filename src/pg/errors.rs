//! Client-side faults as data, turned into asyncpg's exception classes at the boundary.
//!
//! The exception classes live in Python (`asyncpg_rs.exceptions`), so users can subclass and
//! catch them exactly as with asyncpg; Rust looks them up by name once and caches them.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

/// An asyncpg exception class by its name in `asyncpg_rs.exceptions`.
pub fn exception_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();
    let module = MODULE.get_or_try_init(py, || {
        py.import("asyncpg_rs.exceptions").map(|m| m.unbind())
    })?;
    Ok(module.bind(py).getattr(name)?.downcast_into::<PyType>()?)
}

/// Build an exception of the asyncpg class `name` with `msg`.
pub fn py_error(py: Python<'_>, name: &str, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    match exception_class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(_) => PyRuntimeError::new_err(format!("{name}: {msg}")),
    }
}

/// `asyncpg_rs.exceptions.DataError`: a value that cannot be encoded or decoded.
pub fn data_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    py_error(py, "DataError", msg)
}

/// `asyncpg_rs.exceptions.InterfaceError`: misuse of the API.
pub fn interface_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    py_error(py, "InterfaceError", msg)
}

/// `asyncpg_rs.exceptions.ProtocolError`: the server sent something we cannot parse.
pub fn protocol_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    py_error(py, "ProtocolError", msg)
}

/// `asyncpg_rs.exceptions.InternalClientError`: an inconsistency inside the driver.
pub fn internal_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    py_error(py, "InternalClientError", msg)
}
