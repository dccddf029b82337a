//! uuid <-> uuid.UUID (str and objects with `.bytes` accepted when encoding).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use super::pyrefs::{uuid_safe_unknown, uuid_type};
use super::scalar::type_name;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

pub fn decode(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let bytes: [u8; 16] = data
        .try_into()
        .map_err(|_| protocol_error(py, format!("invalid uuid value: {} bytes", data.len())))?;
    let int = u128::from_be_bytes(bytes).into_pyobject(py)?;
    let cls = uuid_type(py)?;
    // uuid.UUID.__init__ parses and validates its arguments; a UUID straight from 16 bytes
    // needs none of that, so allocate it and fill its two slots directly.
    unsafe {
        let tp = cls.as_type_ptr();
        let raw = pyo3::ffi::PyType_GenericAlloc(tp, 0);
        let obj = Bound::from_owned_ptr_or_err(py, raw)?;
        let int_name = pyo3::intern!(py, "int");
        let safe_name = pyo3::intern!(py, "is_safe");
        if pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), int_name.as_ptr(), int.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        let safe = uuid_safe_unknown(py)?;
        if pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), safe_name.as_ptr(), safe.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        // It holds an int and an enum member and has no __dict__: it cannot be part of a
        // reference cycle, so the cyclic GC need not track it (as CPython does for tuples
        // of atomic values). A fetch of many UUIDs then no longer feeds the collector.
        if pyo3::ffi::PyObject_IS_GC(obj.as_ptr()) != 0 {
            pyo3::ffi::PyObject_GC_UnTrack(obj.as_ptr().cast());
        }
        Ok(obj.unbind())
    }
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let py = value.py();
    let cls = uuid_type(py)?;
    let as_uuid;
    let value = if value.is_instance_of::<PyString>() {
        as_uuid = cls.call1((value,)).map_err(|e| {
            EncodeError::Invalid(e.value(py).str().map(|s| s.to_string()).unwrap_or_default())
        })?;
        &as_uuid
    } else {
        value
    };
    if value.is_instance(&cls)? {
        let int = value.getattr(pyo3::intern!(py, "int"))?;
        let int = int.downcast::<PyInt>().map_err(PyErr::from)?;
        let v: u128 = int.extract()?;
        out.put_u128(v);
        return Ok(());
    }
    match value.getattr("bytes") {
        Ok(b) => {
            let b: Vec<u8> = b.extract()?;
            if b.len() != 16 {
                return Err(EncodeError::Invalid(format!(
                    "invalid UUID bytes length {}",
                    b.len()
                )));
            }
            out.put_slice(&b);
            Ok(())
        }
        Err(_) => Err(EncodeError::Invalid(format!(
            "'{}' object has no attribute 'bytes'",
            type_name(value)
        ))),
    }
}
