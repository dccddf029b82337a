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

/// The helpers of `asyncpg_rs._typeconv`, the Python halves of the rarer types' codecs:
/// named here once, so a misspelt helper is a compile error, and looked up together once
/// per interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeConv {
    InetDecode,
    InetEncode,
    MacaddrDecode,
    MacaddrEncode,
    BitsDecode,
    BitsEncode,
    GeometryDecode,
    GeometryEncode,
}

impl TypeConv {
    pub const ALL: [TypeConv; 8] = [
        TypeConv::InetDecode,
        TypeConv::InetEncode,
        TypeConv::MacaddrDecode,
        TypeConv::MacaddrEncode,
        TypeConv::BitsDecode,
        TypeConv::BitsEncode,
        TypeConv::GeometryDecode,
        TypeConv::GeometryEncode,
    ];

    /// The function's name in `asyncpg_rs._typeconv`.
    pub const fn name(self) -> &'static str {
        match self {
            TypeConv::InetDecode => "inet_decode",
            TypeConv::InetEncode => "inet_encode",
            TypeConv::MacaddrDecode => "macaddr_decode",
            TypeConv::MacaddrEncode => "macaddr_encode",
            TypeConv::BitsDecode => "bits_decode",
            TypeConv::BitsEncode => "bits_encode",
            TypeConv::GeometryDecode => "geometry_decode",
            TypeConv::GeometryEncode => "geometry_encode",
        }
    }

    /// The function itself.
    pub fn function(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        static FUNCTIONS: GILOnceCell<Vec<PyObject>> = GILOnceCell::new();
        let functions = FUNCTIONS.get_or_try_init(py, || {
            let module = py.import("asyncpg_rs._typeconv")?;
            TypeConv::ALL
                .iter()
                .map(|f| Ok(module.getattr(f.name())?.unbind()))
                .collect::<PyResult<Vec<_>>>()
        })?;
        Ok(functions[self as usize].bind(py).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::TypeConv;
    use crate::testing::with_python;
    use pyo3::prelude::*;

    #[test]
    fn every_typeconv_helper_named_here_exists() {
        with_python(|py| {
            for f in TypeConv::ALL {
                assert!(
                    f.function(py)
                        .unwrap_or_else(|e| panic!("{}: {e}", f.name()))
                        .is_callable(),
                    "{}",
                    f.name()
                );
            }
        });
    }
}
