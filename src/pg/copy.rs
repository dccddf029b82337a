//! Binary COPY encoding for `copy_records_to_table`: records are encoded in Rust with the
//! codecs of the target columns, a batch at a time, so a large input never sits in memory
//! twice and a bad value is reported with its record and column before anything is sent.

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::pg::errors::data_error;
use crate::pg::protocol::statement::StatementState;
use crate::pg::types::{put_framed, Format};

/// The 19-byte header of PostgreSQL's binary COPY format (signature, flags, extension).
#[pyfunction]
pub fn copy_binary_header(py: Python<'_>) -> Py<PyBytes> {
    let mut out = BytesMut::with_capacity(19);
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
    PyBytes::new(py, &out).unbind()
}

/// The binary COPY trailer.
#[pyfunction]
pub fn copy_binary_trailer(py: Python<'_>) -> Py<PyBytes> {
    PyBytes::new(py, &(-1i16).to_be_bytes()).unbind()
}

/// Encode `records` (a list of sequences) as binary COPY tuples for the columns of `state`;
/// `first_index` numbers the records in error messages.
#[pyfunction]
pub fn encode_copy_records(
    py: Python<'_>,
    state: &Bound<'_, StatementState>,
    records: &Bound<'_, PyList>,
    first_index: usize,
) -> PyResult<Py<PyBytes>> {
    let st = state.get();
    let ncols = st.col_codecs.len();
    if let Some(c) = st.col_codecs.iter().find(|c| c.format() != Format::Binary) {
        return Err(crate::pg::errors::Exc::InternalClientError.err(
            py,
            format!(
                "no binary format encoder for type {} (OID {})",
                c.type_name(),
                c.oid()
            ),
        ));
    }
    let mut out = BytesMut::with_capacity(records.len() * (ncols * 8 + 2));
    for (i, record) in records.iter().enumerate() {
        let index = first_index + i;
        let tuple;
        let values = match record.downcast::<PyTuple>() {
            Ok(t) => t,
            Err(_) => {
                tuple = PyTuple::new(
                    py,
                    record
                        .try_iter()
                        .map_err(|_| data_error(py, format!("record #{index} is not a sequence")))?
                        .collect::<PyResult<Vec<_>>>()?,
                )?;
                &tuple
            }
        };
        if values.len() != ncols {
            return Err(data_error(
                py,
                format!(
                    "record #{index} has {} values, the COPY expects {ncols}",
                    values.len()
                ),
            ));
        }
        out.put_i16(ncols as i16);
        for (col, codec) in st.col_codecs.iter().enumerate() {
            let value = values.get_borrowed_item(col)?;
            if value.is_none() {
                out.put_i32(-1);
                continue;
            }
            if let Err(e) = put_framed(&mut out, |out| codec.encode(&value, out)) {
                let column = &st.columns[col].name;
                return Err(data_error(
                    py,
                    format!(
                        "invalid input in record #{index}, column {column:?} ({}): {} ({})",
                        codec.type_name(),
                        value.repr().map(|r| r.to_string()).unwrap_or_default(),
                        e.reason(py)
                    ),
                ));
            }
        }
    }
    Ok(PyBytes::new(py, &out).unbind())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(copy_binary_header, m)?)?;
    m.add_function(wrap_pyfunction!(copy_binary_trailer, m)?)?;
    m.add_function(wrap_pyfunction!(encode_copy_records, m)?)?;
    Ok(())
}
