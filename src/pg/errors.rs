//! Client-side faults as data, turned into asyncpg's exception classes at the boundary.
//!
//! The exception classes live in Python (`asyncpg_rs.exceptions`), so users can subclass and
//! catch them exactly as with asyncpg. Rust names them through [`Exc`], one variant per class
//! it raises, so a misspelt class is a compile error rather than a failure at the moment the
//! error is raised; the classes are looked up together, once per interpreter.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

/// The `asyncpg_rs.exceptions` classes Rust raises or builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exc {
    /// The base of the server's errors; its `new(fields, query)` picks the SQLSTATE class.
    PostgresError,
    /// Misuse of the API.
    InterfaceError,
    /// A value that cannot be encoded or decoded.
    DataError,
    /// The server sent something we cannot parse.
    ProtocolError,
    /// An inconsistency inside the driver.
    InternalClientError,
    ConnectionDoesNotExistError,
    UnsupportedClientFeatureError,
    OutdatedSchemaCacheError,
}

impl Exc {
    pub const ALL: [Exc; 8] = [
        Exc::PostgresError,
        Exc::InterfaceError,
        Exc::DataError,
        Exc::ProtocolError,
        Exc::InternalClientError,
        Exc::ConnectionDoesNotExistError,
        Exc::UnsupportedClientFeatureError,
        Exc::OutdatedSchemaCacheError,
    ];

    /// The class's name in `asyncpg_rs.exceptions`.
    pub const fn name(self) -> &'static str {
        match self {
            Exc::PostgresError => "PostgresError",
            Exc::InterfaceError => "InterfaceError",
            Exc::DataError => "DataError",
            Exc::ProtocolError => "ProtocolError",
            Exc::InternalClientError => "InternalClientError",
            Exc::ConnectionDoesNotExistError => "ConnectionDoesNotExistError",
            Exc::UnsupportedClientFeatureError => "UnsupportedClientFeatureError",
            Exc::OutdatedSchemaCacheError => "OutdatedSchemaCacheError",
        }
    }

    /// The class itself.
    pub fn class(self, py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
        static CLASSES: GILOnceCell<Vec<Py<PyType>>> = GILOnceCell::new();
        let classes = CLASSES.get_or_try_init(py, || {
            let module = py.import("asyncpg_rs.exceptions")?;
            Exc::ALL
                .iter()
                .map(|e| {
                    Ok(module
                        .getattr(e.name())?
                        .downcast_into::<PyType>()?
                        .unbind())
                })
                .collect::<PyResult<Vec<_>>>()
        })?;
        Ok(classes[self as usize].bind(py).clone())
    }

    /// An exception of this class with `msg`.
    pub fn err(self, py: Python<'_>, msg: impl Into<String>) -> PyErr {
        let msg = msg.into();
        match self.class(py) {
            Ok(cls) => PyErr::from_type(cls, msg),
            Err(_) => PyRuntimeError::new_err(format!("{}: {msg}", self.name())),
        }
    }
}

/// `asyncpg_rs.exceptions.DataError`: a value that cannot be encoded or decoded.
pub fn data_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    Exc::DataError.err(py, msg)
}

/// `asyncpg_rs.exceptions.InterfaceError`: misuse of the API.
pub fn interface_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    Exc::InterfaceError.err(py, msg)
}

/// `asyncpg_rs.exceptions.ProtocolError`: the server sent something we cannot parse.
pub fn protocol_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    Exc::ProtocolError.err(py, msg)
}

/// `asyncpg_rs.exceptions.InternalClientError`: an inconsistency inside the driver.
pub fn internal_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    Exc::InternalClientError.err(py, msg)
}

#[cfg(test)]
mod tests {
    use super::Exc;
    use crate::testing::with_python;
    use pyo3::prelude::*;

    #[test]
    fn every_class_named_here_exists_in_the_exceptions_module() {
        with_python(|py| {
            for exc in Exc::ALL {
                let cls = exc
                    .class(py)
                    .unwrap_or_else(|e| panic!("{}: {e}", exc.name()));
                assert_eq!(cls.name().unwrap().to_string(), exc.name());
                let err = exc.err(py, "boom");
                assert!(err.get_type(py).is(&cls));
            }
        });
    }
}
