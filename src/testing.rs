//! An embedded interpreter for the unit tests that need Python objects (exception classes,
//! futures, a fake transport). No server: the tests script the server's bytes themselves.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyModule;

/// Run `f` with the GIL, the interpreter prepared once: the repository root on `sys.path`
/// so `asyncpg_rs` (the Python package) imports, with this crate's own `_native` module in
/// its place, so Rust and Python agree on every class.
pub fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    pyo3::prepare_freethreaded_python();
    Python::with_gil(|py| {
        static READY: GILOnceCell<()> = GILOnceCell::new();
        READY
            .get_or_try_init(py, || -> PyResult<()> {
                let sys = py.import("sys")?;
                sys.getattr("path")?
                    .call_method1("insert", (0, env!("CARGO_MANIFEST_DIR")))?;
                let native = pyo3::wrap_pymodule!(crate::_native)(py);
                sys.getattr("modules")?
                    .set_item("asyncpg_rs._native", native)?;
                py.import("asyncpg_rs")?;
                Ok(())
            })
            .inspect_err(|e| e.print(py))
            .expect("the embedded interpreter could not import asyncpg_rs");
        f(py)
    })
}

/// Run Python statements in a fresh namespace and return that namespace.
pub fn run<'py>(py: Python<'py>, code: &str) -> Bound<'py, PyModule> {
    let code = std::ffi::CString::new(code).expect("no NUL in test code");
    PyModule::from_code(py, &code, c"test_support.py", c"test_support")
        .inspect_err(|e| e.print(py))
        .expect("test support code runs")
}
