//! Codecs supplied by users (`set_type_codec`) and hstore (`set_builtin_type_codec`).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::{Codec, EncodeError, EncodeResult, Format, Kind};
use crate::pg::errors::{internal_error, protocol_error};

pub fn decode(py: Python<'_>, data: &[u8], codec: &Codec) -> PyResult<PyObject> {
    let Some((_, decoder)) = &codec.custom else {
        return Err(internal_error(py, "custom codec without a decoder"));
    };
    let arg = match codec.format {
        Format::Text => super::text::decode_text(py, data)?,
        Format::Binary => PyBytes::new(py, data).into_any().unbind(),
    };
    decoder.call1(py, (arg,))
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut, codec: &Codec) -> EncodeResult {
    let Some((encoder, _)) = &codec.custom else {
        return Err(EncodeError::Invalid(
            "custom codec without an encoder".into(),
        ));
    };
    let py = value.py();
    let encoded = encoder.bind(py).call1((value,))?;
    match codec.format {
        Format::Text => match encoded.downcast::<PyString>() {
            Ok(s) => out.put_slice(s.to_str()?.as_bytes()),
            Err(_) => {
                return Err(EncodeError::Invalid(format!(
                    "the text encoder of type {} returned {}, expected str",
                    codec.name,
                    super::scalar::type_name(&encoded)
                )))
            }
        },
        Format::Binary => match pyo3::buffer::PyBuffer::<u8>::get(&encoded) {
            Ok(buf) => out.put_slice(&buf.to_vec(py)?),
            Err(_) => {
                return Err(EncodeError::Invalid(format!(
                    "the binary encoder of type {} returned {}, expected bytes",
                    codec.name,
                    super::scalar::type_name(&encoded)
                )))
            }
        },
    }
    Ok(())
}

pub fn decode_hstore(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let bad = || protocol_error(py, "invalid hstore value");
    let read = |at: usize| -> PyResult<i32> {
        data.get(at..at + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(bad)
    };
    let text = |s: &[u8]| -> PyResult<PyObject> { super::text::decode_text(py, s) };
    let n = read(0)?;
    let mut at = 4;
    let dict = PyDict::new(py);
    for _ in 0..n.max(0) {
        let klen = read(at)?;
        if klen < 0 {
            return Err(bad());
        }
        let key = text(data.get(at + 4..at + 4 + klen as usize).ok_or_else(bad)?)?;
        at += 4 + klen as usize;
        let vlen = read(at)?;
        at += 4;
        let value = if vlen < 0 {
            py.None()
        } else {
            let v = text(data.get(at..at + vlen as usize).ok_or_else(bad)?)?;
            at += vlen as usize;
            v
        };
        dict.set_item(key, value)?;
    }
    Ok(dict.into_any().unbind())
}

pub fn encode_hstore(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    // a mapping, or any iterable of (key, value) pairs
    let items = match value.call_method0("items") {
        Ok(items) => items,
        Err(_) => value.clone(),
    };
    let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = items
        .try_iter()?
        .map(|kv| kv.and_then(|kv| kv.extract()))
        .collect::<PyResult<_>>()?;
    out.put_i32(pairs.len() as i32);
    for (k, v) in pairs {
        if k.is_none() {
            return Err(EncodeError::Invalid(
                "null value not allowed for hstore key".into(),
            ));
        }
        let k = k
            .downcast::<PyString>()
            .map_err(|_| EncodeError::Invalid("hstore keys must be str".into()))?;
        let kb = k.to_str()?.as_bytes();
        out.put_i32(kb.len() as i32);
        out.put_slice(kb);
        if v.is_none() {
            out.put_i32(-1);
        } else {
            let v = v
                .downcast::<PyString>()
                .map_err(|_| EncodeError::Invalid("hstore values must be str or None".into()))?;
            let vb = v.to_str()?.as_bytes();
            out.put_i32(vb.len() as i32);
            out.put_slice(vb);
        }
    }
    Ok(())
}

/// The tuple a `format='tuple'` decoder gets: the fields of the binary form as integers
/// (date: days since 2000-01-01; time: microseconds; timetz: microseconds and the zone
/// offset in seconds west of UTC; timestamp(tz): microseconds since 2000-01-01; interval:
/// months, days, microseconds), or a composite's attribute values.
pub fn decode_tuple(py: Python<'_>, data: &[u8], codec: &Codec) -> PyResult<PyObject> {
    let (Some((_, decoder)), Some(base)) = (&codec.custom, &codec.elem) else {
        return Err(internal_error(py, "tuple codec without a decoder"));
    };
    let bad = || protocol_error(py, format!("invalid {} value", codec.name));
    let i32_at = |at: usize| -> PyResult<i64> {
        data.get(at..at + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]) as i64)
            .ok_or_else(bad)
    };
    let i64_at = |at: usize| -> PyResult<i64> {
        data.get(at..at + 8)
            .map(|s| i64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
            .ok_or_else(bad)
    };
    let tuple = match base.kind {
        Kind::Date => PyTuple::new(py, [i32_at(0)?])?,
        Kind::Time | Kind::Timestamp | Kind::TimestampTz => PyTuple::new(py, [i64_at(0)?])?,
        Kind::TimeTz => PyTuple::new(py, [i64_at(0)?, i32_at(8)?])?,
        Kind::Interval => PyTuple::new(py, [i32_at(12)?, i32_at(8)?, i64_at(0)?])?,
        Kind::Composite => {
            let record = base.decode(py, data)?;
            PyTuple::new(
                py,
                record.bind(py).try_iter()?.collect::<PyResult<Vec<_>>>()?,
            )?
        }
        _ => {
            return Err(internal_error(
                py,
                "tuple codec on a type without a tuple form",
            ))
        }
    };
    decoder.call1(py, (tuple,))
}

/// Encode what a `format='tuple'` encoder returns (see `decode_tuple` for the layouts).
pub fn encode_tuple(value: &Bound<'_, PyAny>, out: &mut BytesMut, codec: &Codec) -> EncodeResult {
    let (Some((encoder, _)), Some(base)) = (&codec.custom, &codec.elem) else {
        return Err(EncodeError::Invalid(
            "tuple codec without an encoder".into(),
        ));
    };
    let py = value.py();
    let encoded = encoder.bind(py).call1((value,))?;
    if base.kind == Kind::Composite {
        return base.encode(&encoded, out);
    }
    let items: Vec<Bound<'_, PyAny>> = match encoded.try_iter() {
        Ok(it) if !encoded.is_instance_of::<PyString>() => it.collect::<PyResult<_>>()?,
        _ => {
            return Err(EncodeError::Invalid(format!(
                "the tuple encoder of type {} returned {}, expected a tuple",
                codec.name,
                super::scalar::type_name(&encoded)
            )))
        }
    };
    let want = match base.kind {
        Kind::TimeTz => 2,
        Kind::Interval => 3,
        _ => 1,
    };
    if items.len() != want {
        return Err(EncodeError::Invalid(format!(
            "the tuple encoder of type {} returned {} elements, expected {want}",
            codec.name,
            items.len()
        )));
    }
    let int = |i: usize, bits: u32| -> Result<i64, EncodeError> {
        let v: i64 = items[i].extract().map_err(|_| {
            EncodeError::Invalid(format!(
                "element {i} of the {} tuple is not an integer in range",
                codec.name
            ))
        })?;
        if bits < 64 && (v < -(1i64 << (bits - 1)) || v >= (1i64 << (bits - 1))) {
            return Err(EncodeError::Invalid(format!(
                "element {i} of the {} tuple is out of int{bits} range",
                codec.name
            )));
        }
        Ok(v)
    };
    match base.kind {
        Kind::Date => out.put_i32(int(0, 32)? as i32),
        Kind::Time | Kind::Timestamp | Kind::TimestampTz => out.put_i64(int(0, 64)?),
        Kind::TimeTz => {
            out.put_i64(int(0, 64)?);
            out.put_i32(int(1, 32)? as i32);
        }
        Kind::Interval => {
            out.put_i64(int(2, 64)?);
            out.put_i32(int(1, 32)? as i32);
            out.put_i32(int(0, 32)? as i32);
        }
        _ => {
            return Err(EncodeError::Invalid(
                "tuple codec on a type without a tuple form".into(),
            ))
        }
    }
    Ok(())
}
