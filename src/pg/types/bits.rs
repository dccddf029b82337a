//! bit, varbit <-> asyncpg_rs.types.BitString; pg_lsn (int); tid (tuple).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::pyrefs::typeconv;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

pub fn decode_bits(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() < 4 {
        return Err(protocol_error(py, "invalid bit string value"));
    }
    let bitlen = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    if bitlen < 0 || (bitlen as usize).div_ceil(8) != data.len() - 4 {
        return Err(protocol_error(py, "invalid bit string length"));
    }
    let bytes = PyBytes::new(py, &data[4..]);
    Ok(typeconv(py)?
        .call_method1("bits_decode", (bitlen, bytes))?
        .unbind())
}

pub fn encode_bits(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let py = value.py();
    let (bitlen, data): (i32, Vec<u8>) = typeconv(py)?
        .call_method1("bits_encode", (value,))
        .map_err(|e| EncodeError::Invalid(e.value(py).to_string()))?
        .extract()?;
    out.put_i32(bitlen);
    out.put_slice(&data);
    Ok(())
}

/// pg_lsn is a 64-bit WAL position, an int in Python (as asyncpg).
pub fn decode_lsn(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v: [u8; 8] = data
        .try_into()
        .map_err(|_| protocol_error(py, "invalid pg_lsn value"))?;
    Ok(u64::from_be_bytes(v).into_pyobject(py)?.into_any().unbind())
}

pub fn encode_lsn(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let v: u64 = value.extract().map_err(|_| {
        EncodeError::Invalid(format!(
            "'{}' object cannot be interpreted as an integer",
            super::scalar::type_name(value)
        ))
    })?;
    out.put_u64(v);
    Ok(())
}

pub fn decode_tid(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() != 6 {
        return Err(protocol_error(py, "invalid tid value"));
    }
    let block = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let offset = u16::from_be_bytes([data[4], data[5]]);
    Ok(PyTuple::new(py, [block as u64, offset as u64])?
        .into_any()
        .unbind())
}

pub fn encode_tid(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let (block, offset): (i64, i64) = value
        .extract()
        .map_err(|_| EncodeError::Invalid("a (block, offset) tuple is required".into()))?;
    let block = u32::try_from(block)
        .map_err(|_| EncodeError::Invalid("tuple id block value out of uint32 range".into()))?;
    let offset = u16::try_from(offset)
        .map_err(|_| EncodeError::Invalid("tuple id offset value out of uint16 range".into()))?;
    out.put_u32(block);
    out.put_u16(offset);
    Ok(())
}
