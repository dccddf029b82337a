//! Composite types (row types) <-> Record; encoded from a sequence or a mapping.

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::{put_framed, Codec, EncodeError, EncodeResult};
use crate::pg::errors::{internal_error, protocol_error};
use crate::pg::record::new_record;

pub fn decode(py: Python<'_>, data: &[u8], codec: &Codec) -> PyResult<PyObject> {
    let Some((desc, fields)) = &codec.fields else {
        return Err(internal_error(py, "composite codec without fields"));
    };
    let bad = || {
        protocol_error(
            py,
            format!("invalid value of composite type {}", codec.name),
        )
    };
    let read_i32 = |at: usize| -> PyResult<i32> {
        data.get(at..at + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(bad)
    };
    let n = read_i32(0)?;
    if n < 0 || n as usize != fields.len() {
        return Err(crate::pg::errors::Exc::OutdatedSchemaCacheError.err(
            py,
            format!(
                "type {} has {} attributes on the server but {} were introspected; \
                 call reload_schema_state()",
                codec.name,
                n,
                fields.len()
            ),
        ));
    }
    let mut at = 4;
    let mut values = Vec::with_capacity(fields.len());
    for (_, field) in fields {
        let _oid = read_i32(at)?;
        let len = read_i32(at + 4)?;
        at += 8;
        if len < 0 {
            values.push(py.None());
            continue;
        }
        let end = at + len as usize;
        let slice = data.get(at..end).ok_or_else(bad)?;
        values.push(field.decode(py, slice)?);
        at = end;
    }
    new_record(py, desc, values, None)
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut, codec: &Codec) -> EncodeResult {
    let Some((desc, fields)) = &codec.fields else {
        return Err(EncodeError::Invalid(
            "composite codec without fields".into(),
        ));
    };
    let py = value.py();
    let items: Vec<Bound<'_, PyAny>> = if let Ok(d) = value.downcast::<PyDict>() {
        let names = desc.names(py);
        for key in d.keys() {
            if !names.contains(&key)? {
                return Err(EncodeError::Invalid(format!(
                    "{} is not a valid element of composite type {}",
                    key.repr()?,
                    codec.name
                )));
            }
        }
        let mut v = Vec::with_capacity(fields.len());
        for name in names.iter() {
            v.push(
                d.get_item(&name)?
                    .unwrap_or_else(|| py.None().into_bound(py)),
            );
        }
        v
    } else if let Ok(t) = value.downcast::<PyTuple>() {
        t.iter().collect()
    } else if let Ok(l) = value.downcast::<PyList>() {
        l.iter().collect()
    } else if value.is_instance_of::<PyString>() {
        return Err(EncodeError::Invalid(format!(
            "a tuple or a mapping is required for composite type {}",
            codec.name
        )));
    } else {
        value
            .try_iter()
            .map_err(|_| {
                EncodeError::Invalid(format!(
                    "a tuple or a mapping is required for composite type {}",
                    codec.name
                ))
            })?
            .collect::<PyResult<_>>()?
    };
    if items.len() != fields.len() {
        return Err(EncodeError::Invalid(format!(
            "composite type {} has {} attributes, got {} values",
            codec.name,
            fields.len(),
            items.len()
        )));
    }
    out.put_i32(fields.len() as i32);
    for ((oid, field), item) in fields.iter().zip(items.iter()) {
        out.put_u32(*oid);
        if item.is_none() {
            out.put_i32(-1);
            continue;
        }
        put_framed(out, |out| field.encode(item, out))?;
    }
    Ok(())
}

/// An anonymous record (`SELECT ROW(...)`): each field names its type; fields of types
/// without a builtin codec come back as their raw bytes.
pub fn decode_record(
    py: Python<'_>,
    data: &[u8],
    registry: &super::CodecRegistry,
) -> PyResult<PyObject> {
    let bad = || protocol_error(py, "invalid record value");
    let read_i32 = |at: usize| -> PyResult<i32> {
        data.get(at..at + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(bad)
    };
    let n = read_i32(0)?;
    let mut at = 4;
    // each field takes at least 8 bytes (oid, length): a count the data cannot hold is not
    // believed (a corrupt count must not reserve gigabytes)
    let mut values = Vec::with_capacity((n.max(0) as usize).min(data.len() / 8));
    for _ in 0..n.max(0) {
        let oid = read_i32(at)? as u32;
        let len = read_i32(at + 4)?;
        at += 8;
        if len < 0 {
            values.push(py.None());
            continue;
        }
        let end = at + len as usize;
        let slice = data.get(at..end).ok_or_else(bad)?;
        match registry.lookup(oid) {
            Some(codec) if codec.format() == super::Format::Binary => {
                values.push(codec.decode(py, slice)?)
            }
            _ => values.push(pyo3::types::PyBytes::new(py, slice).into_any().unbind()),
        }
        at = end;
    }
    let desc = crate::pg::record::RecordDesc::new(py, &[])?;
    new_record(py, &desc, values, None)
}
