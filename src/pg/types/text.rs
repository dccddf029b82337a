//! text, varchar, bpchar, name, unknown (str); bytea (bytes); json and jsonb (str).

use bytes::{BufMut, BytesMut};
use pyo3::buffer::PyBuffer;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use super::scalar::type_name;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

pub fn decode_text(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    // CPython's decoder validates as it copies: checking with `str::from_utf8` first and
    // then handing the `&str` to `PyString::new` (which decodes again) validated every
    // text value twice, about 5% of a catalogue row's instructions. Both accept
    // exactly well-formed UTF-8 (no surrogates, no overlong forms).
    let len = isize::try_from(data.len()).map_err(|_| protocol_error(py, "text value too long"))?;
    // SAFETY: the GIL is held (`py`); `data` is valid for `len` bytes for the call, which
    // copies them; the error handler is a NUL-terminated static string; the result is a
    // new reference or NULL with an exception set.
    let ptr = unsafe { ffi::PyUnicode_DecodeUTF8(data.as_ptr().cast(), len, c"strict".as_ptr()) };
    if ptr.is_null() {
        let err = PyErr::fetch(py);
        return Err(protocol_error(
            py,
            format!("invalid UTF-8 in a text value: {err}"),
        ));
    }
    // SAFETY: `ptr` is the new, non-NULL reference PyUnicode_DecodeUTF8 returned.
    Ok(unsafe { PyObject::from_owned_ptr(py, ptr) })
}

pub fn decode_jsonb(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    match data.split_first() {
        Some((1, rest)) => decode_text(py, rest),
        Some((v, _)) => Err(protocol_error(
            py,
            format!("unsupported jsonb format version {v}"),
        )),
        None => Err(protocol_error(py, "empty jsonb value")),
    }
}

pub fn decode_bytea(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    Ok(PyBytes::new(py, data).into_any().unbind())
}

pub fn encode_text(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    match value.downcast::<PyString>() {
        Ok(s) => {
            out.put_slice(s.to_str()?.as_bytes());
            Ok(())
        }
        Err(_) => Err(EncodeError::Invalid(format!(
            "expected str, got {}",
            type_name(value)
        ))),
    }
}

pub fn encode_jsonb(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    out.put_u8(1);
    encode_text(value, out)
}

pub fn encode_bytea(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    if let Ok(b) = value.downcast::<PyBytes>() {
        out.put_slice(b.as_bytes());
        return Ok(());
    }
    if let Ok(b) = value.downcast::<PyByteArray>() {
        out.put_slice(&b.to_vec());
        return Ok(());
    }
    match PyBuffer::<u8>::get(value) {
        Ok(buf) => {
            let data = buf.to_vec(value.py())?;
            out.put_slice(&data);
            Ok(())
        }
        Err(_) => Err(EncodeError::Invalid(format!(
            "a bytes-like object is required, not '{}'",
            type_name(value)
        ))),
    }
}
