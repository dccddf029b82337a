//! A server's `ErrorResponse`/`NoticeResponse` fields, and the asyncpg exception they become.
//!
//! The fields stay data (a dict keyed by the one-letter field codes) until the boundary:
//! `exceptions.PostgresError.new` picks the class for the SQLSTATE in Python, where users
//! can subclass and catch them as with asyncpg.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::pg::errors::{protocol_error, Exc};

/// The fields of an error or notice as `{code: value}`; values are decoded leniently (a
/// server in another encoding must not turn its error into a decoding fault of ours).
pub(super) fn error_fields<'py>(
    py: Python<'py>,
    mut fields: ErrorFields<'_>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    loop {
        match fields.next() {
            Ok(Some(f)) => {
                let key = (f.type_() as char).to_string();
                let value = String::from_utf8_lossy(f.value_bytes());
                dict.set_item(key, value.as_ref())?;
            }
            Ok(None) => break,
            Err(e) => return Err(protocol_error(py, e.to_string())),
        }
    }
    Ok(dict)
}

/// The asyncpg exception for a server `ErrorResponse`.
pub(super) fn server_error(
    py: Python<'_>,
    fields: &Bound<'_, PyDict>,
    query: Option<&str>,
) -> PyErr {
    let made = Exc::PostgresError
        .class(py)
        .and_then(|cls| cls.call_method1("new", (fields, query)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// The error every pending await gets when the connection goes away under it.
pub(super) fn conn_lost_error(py: Python<'_>) -> PyErr {
    Exc::ConnectionDoesNotExistError.err(py, "connection was closed in the middle of operation")
}
