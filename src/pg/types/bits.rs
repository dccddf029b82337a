//! bit, varbit <-> asyncpg_rs.types.BitString; pg_lsn (int); tid (tuple).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::pyrefs::TypeConv;
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
    Ok(TypeConv::BitsDecode
        .function(py)?
        .call1((bitlen, bytes))?
        .unbind())
}

pub fn encode_bits(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let py = value.py();
    let (bitlen, data): (i32, Vec<u8>) = TypeConv::BitsEncode
        .function(py)?
        .call1((value,))
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
    // asyncpg's wording for each fault
    let items: Vec<Bound<'_, PyAny>> = if let Ok(t) = value.downcast::<PyTuple>() {
        t.iter().collect()
    } else if let Ok(l) = value.downcast::<PyList>() {
        l.iter().collect()
    } else {
        return Err(EncodeError::Invalid("list or tuple expected".into()));
    };
    if items.len() != 2 {
        return Err(EncodeError::Invalid(
            "invalid number of elements in tid tuple, expecting 2".into(),
        ));
    }
    let block = items[0]
        .extract::<u32>()
        .map_err(|_| EncodeError::Invalid("tuple id block value out of uint32 range".into()))?;
    let offset = items[1]
        .extract::<u16>()
        .map_err(|_| EncodeError::Invalid("tuple id offset value out of uint16 range".into()))?;
    out.put_u32(block);
    out.put_u16(offset);
    Ok(())
}

/// txid_snapshot / pg_snapshot: `(xmin, xmax, (xip, ...))`, as asyncpg.
pub fn decode_snapshot(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let bad = || protocol_error(py, "invalid snapshot value");
    let u64_at = |at: usize| -> PyResult<u64> {
        data.get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(bad)
    };
    let nxip = data
        .get(0..4)
        .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(bad)?;
    if nxip < 0 || data.len() != 20 + 8 * nxip as usize {
        return Err(bad());
    }
    let xmin = u64_at(4)?;
    let xmax = u64_at(12)?;
    let xip = (0..nxip as usize)
        .map(|i| u64_at(20 + 8 * i))
        .collect::<PyResult<Vec<u64>>>()?;
    Ok((xmin, xmax, PyTuple::new(py, xip)?)
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

pub fn encode_snapshot(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let invalid = || {
        EncodeError::Invalid(format!(
            "expected an (xmin, xmax, (xip, ...)) tuple, got {}",
            super::scalar::type_name(value)
        ))
    };
    let (xmin, xmax, xip): (u64, u64, Bound<'_, PyAny>) = value.extract().map_err(|_| invalid())?;
    let xip: Vec<u64> = xip
        .try_iter()
        .map_err(|_| invalid())?
        .map(|x| x.and_then(|x| x.extract::<u64>()))
        .collect::<PyResult<_>>()
        .map_err(|_| invalid())?;
    out.put_i32(xip.len() as i32);
    out.put_u64(xmin);
    out.put_u64(xmax);
    for x in xip {
        out.put_u64(x);
    }
    Ok(())
}
