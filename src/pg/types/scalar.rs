//! bool, int2/int4/int8, oid, float4/float8 and "char".

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

fn fixed<const N: usize>(py: Python<'_>, data: &[u8], what: &str) -> PyResult<[u8; N]> {
    data.try_into()
        .map_err(|_| protocol_error(py, format!("invalid {what} value: {} bytes", data.len())))
}

pub fn decode_bool(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let [b] = fixed::<1>(py, data, "bool")?;
    Ok(PyBool::new(py, b != 0).to_owned().into_any().unbind())
}

pub fn decode_int2(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = i16::from_be_bytes(fixed(py, data, "int2")?);
    Ok(v.into_pyobject(py)?.into_any().unbind())
}

pub fn decode_int4(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = i32::from_be_bytes(fixed(py, data, "int4")?);
    Ok(v.into_pyobject(py)?.into_any().unbind())
}

pub fn decode_int8(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = i64::from_be_bytes(fixed(py, data, "int8")?);
    Ok(v.into_pyobject(py)?.into_any().unbind())
}

pub fn decode_oid(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = u32::from_be_bytes(fixed(py, data, "oid")?);
    Ok(v.into_pyobject(py)?.into_any().unbind())
}

pub fn decode_float4(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = f32::from_be_bytes(fixed(py, data, "float4")?);
    Ok(PyFloat::new(py, v as f64).into_any().unbind())
}

pub fn decode_float8(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = f64::from_be_bytes(fixed(py, data, "float8")?);
    Ok(PyFloat::new(py, v).into_any().unbind())
}

/// `"char"` is a single byte, returned as `bytes` (as asyncpg does).
pub fn decode_char(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    Ok(PyBytes::new(py, data).into_any().unbind())
}

pub fn encode_bool(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    match value.downcast::<PyBool>() {
        Ok(b) => {
            out.put_u8(b.is_true() as u8);
            Ok(())
        }
        Err(_) => Err(EncodeError::Invalid(format!(
            "a boolean is required (got type {})",
            type_name(value)
        ))),
    }
}

pub fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// An integer from anything with `__int__` (asyncpg accepts floats and Decimals too).
fn as_i64(value: &Bound<'_, PyAny>, bits: u32) -> Result<i64, EncodeError> {
    let out_of_range = || EncodeError::Invalid(format!("value out of int{bits} range"));
    let int;
    let v = if let Ok(i) = value.downcast::<PyInt>() {
        i
    } else if value.is_instance_of::<PyString>() || !value.hasattr("__int__").unwrap_or(false) {
        return Err(EncodeError::Invalid(format!(
            "'{}' object cannot be interpreted as an integer",
            type_name(value)
        )));
    } else {
        int = value
            .call_method0("__int__")?
            .downcast_into::<PyInt>()
            .map_err(PyErr::from)?;
        &int
    };
    v.extract::<i64>().map_err(|_| out_of_range())
}

pub fn encode_int2(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let v = as_i64(value, 16)?;
    let v =
        i16::try_from(v).map_err(|_| EncodeError::Invalid("value out of int16 range".into()))?;
    out.put_i16(v);
    Ok(())
}

pub fn encode_int4(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let v = as_i64(value, 32)?;
    let v =
        i32::try_from(v).map_err(|_| EncodeError::Invalid("value out of int32 range".into()))?;
    out.put_i32(v);
    Ok(())
}

pub fn encode_int8(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    out.put_i64(as_i64(value, 64)?);
    Ok(())
}

pub fn encode_oid(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let v = as_i64(value, 64)?;
    let v =
        u32::try_from(v).map_err(|_| EncodeError::Invalid("value out of uint32 range".into()))?;
    out.put_u32(v);
    Ok(())
}

fn as_f64(value: &Bound<'_, PyAny>) -> Result<f64, EncodeError> {
    if let Ok(f) = value.downcast::<PyFloat>() {
        return Ok(f.value());
    }
    if value.is_instance_of::<PyString>() {
        return Err(EncodeError::Invalid(format!(
            "must be real number, not {}",
            type_name(value)
        )));
    }
    value
        .extract::<f64>()
        .map_err(|_| EncodeError::Invalid(format!("must be real number, not {}", type_name(value))))
}

pub fn encode_float4(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let v = as_f64(value)?;
    let f = v as f32;
    if f.is_infinite() && v.is_finite() {
        return Err(EncodeError::Invalid("value out of float32 range".into()));
    }
    out.put_f32(f);
    Ok(())
}

pub fn encode_float8(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    out.put_f64(as_f64(value)?);
    Ok(())
}

pub fn encode_char(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    if let Ok(b) = value.downcast::<PyBytes>() {
        out.put_slice(b.as_bytes());
        return Ok(());
    }
    super::text::encode_text(value, out)
}
