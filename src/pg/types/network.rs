//! inet, cidr (ipaddress objects) and macaddr, macaddr8 (str).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::pyrefs::TypeConv;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

pub fn decode_inet(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() < 4 || data.len() != 4 + data[3] as usize || !matches!(data[3], 4 | 16) {
        return Err(protocol_error(py, "invalid inet/cidr value"));
    }
    let (family, bits, is_cidr) = (data[0], data[1], data[2]);
    let addr = PyBytes::new(py, &data[4..]);
    Ok(TypeConv::InetDecode
        .function(py)?
        .call1((family, bits, is_cidr != 0, addr))?
        .unbind())
}

pub fn encode_inet(value: &Bound<'_, PyAny>, out: &mut BytesMut, cidr: bool) -> EncodeResult {
    let py = value.py();
    let parts = TypeConv::InetEncode
        .function(py)?
        .call1((value, cidr))
        .map_err(|e| EncodeError::Invalid(e.value(py).to_string()))?;
    let (family, bits, is_cidr, addr): (u8, u8, u8, Vec<u8>) = parts.extract()?;
    out.put_u8(family);
    out.put_u8(bits);
    out.put_u8(is_cidr);
    out.put_u8(addr.len() as u8);
    out.put_slice(&addr);
    Ok(())
}

pub fn decode_macaddr(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if !matches!(data.len(), 6 | 8) {
        return Err(protocol_error(py, "invalid macaddr value"));
    }
    Ok(TypeConv::MacaddrDecode
        .function(py)?
        .call1((PyBytes::new(py, data),))?
        .unbind())
}

pub fn encode_macaddr(value: &Bound<'_, PyAny>, out: &mut BytesMut, size: usize) -> EncodeResult {
    let py = value.py();
    let data: Vec<u8> = TypeConv::MacaddrEncode
        .function(py)?
        .call1((value, size))
        .map_err(|e| EncodeError::Invalid(e.value(py).to_string()))?
        .extract()?;
    out.put_slice(&data);
    Ok(())
}
