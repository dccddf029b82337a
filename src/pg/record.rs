//! `Record`: TEMPORARY stand-in with the agreed interface (rows as tuples), replaced by the
//! Record work.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};

pub struct RecordDesc {
    len: usize,
}

impl RecordDesc {
    pub fn new(_py: Python<'_>, names: &[&str]) -> PyResult<Arc<RecordDesc>> {
        Ok(Arc::new(RecordDesc { len: names.len() }))
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub fn new_record(
    py: Python<'_>,
    _desc: &Arc<RecordDesc>,
    values: Vec<PyObject>,
    _cls: Option<&Bound<'_, PyType>>,
) -> PyResult<PyObject> {
    Ok(PyTuple::new(py, values)?.into_any().unbind())
}

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
