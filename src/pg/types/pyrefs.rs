//! Python objects the codecs need, looked up once per interpreter.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

fn import_attr(
    py: Python<'_>,
    cell: &'static GILOnceCell<PyObject>,
    module: &str,
    name: &str,
) -> PyResult<PyObject> {
    cell.get_or_try_init(py, || Ok(py.import(module)?.getattr(name)?.unbind()))
        .map(|o| o.clone_ref(py))
}

pub fn decimal_type(py: Python<'_>) -> PyResult<PyObject> {
    static CELL: GILOnceCell<PyObject> = GILOnceCell::new();
    import_attr(py, &CELL, "decimal", "Decimal")
}

pub fn uuid_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    static CELL: GILOnceCell<PyObject> = GILOnceCell::new();
    Ok(import_attr(py, &CELL, "uuid", "UUID")?
        .into_bound(py)
        .downcast_into::<PyType>()?)
}

/// `uuid.SafeUUID.unknown`, the `is_safe` value `uuid.UUID.__init__` sets by default.
pub fn uuid_safe_unknown(py: Python<'_>) -> PyResult<PyObject> {
    static CELL: GILOnceCell<PyObject> = GILOnceCell::new();
    CELL.get_or_try_init(py, || {
        Ok(py
            .import("uuid")?
            .getattr("SafeUUID")?
            .getattr("unknown")?
            .unbind())
    })
    .map(|o| o.clone_ref(py))
}

/// `asyncpg_rs._typeconv`: the Python halves of the rarer types' codecs.
pub fn typeconv(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CELL: GILOnceCell<PyObject> = GILOnceCell::new();
    Ok(CELL
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncpg_rs._typeconv")?.into_any().unbind())
        })?
        .bind(py)
        .clone())
}
