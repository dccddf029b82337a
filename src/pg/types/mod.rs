//! Type codecs: PostgreSQL values <-> Python objects (placeholder until the codec work lands).

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
