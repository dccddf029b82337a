//! Range and multirange types <-> asyncpg_rs.types.Range (a list of them for multiranges).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::{put_framed, Codec, EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

const EMPTY: u8 = 0x01;
const LB_INC: u8 = 0x02;
const UB_INC: u8 = 0x04;
const LB_INF: u8 = 0x08;
const UB_INF: u8 = 0x10;

fn range_class(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CELL: GILOnceCell<PyObject> = GILOnceCell::new();
    Ok(CELL
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncpg_rs.types")?.getattr("Range")?.unbind())
        })?
        .bind(py)
        .clone())
}

pub fn decode(py: Python<'_>, data: &[u8], sub: &Codec) -> PyResult<PyObject> {
    let bad = || protocol_error(py, "invalid range value");
    let (&flags, mut rest) = data.split_first().ok_or_else(bad)?;
    let cls = range_class(py)?;
    let kwargs = PyDict::new(py);
    if flags & EMPTY != 0 {
        kwargs.set_item("empty", true)?;
        return Ok(cls.call((), Some(&kwargs))?.unbind());
    }
    let mut bound = |inf: bool| -> PyResult<PyObject> {
        if inf {
            return Ok(py.None());
        }
        if rest.len() < 4 {
            return Err(bad());
        }
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len < 0 || rest.len() < 4 + len as usize {
            return Err(bad());
        }
        let v = sub.decode(py, &rest[4..4 + len as usize])?;
        rest = &rest[4 + len as usize..];
        Ok(v)
    };
    let lower = bound(flags & LB_INF != 0)?;
    let upper = bound(flags & UB_INF != 0)?;
    kwargs.set_item("lower_inc", flags & LB_INC != 0)?;
    kwargs.set_item("upper_inc", flags & UB_INC != 0)?;
    Ok(cls.call((lower, upper), Some(&kwargs))?.unbind())
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut, sub: &Codec) -> EncodeResult {
    let py = value.py();
    let (lower, upper, lower_inc, upper_inc, empty) = if value.is_instance(&range_class(py)?)? {
        (
            value.getattr("lower")?,
            value.getattr("upper")?,
            value.getattr("lower_inc")?.is_truthy()?,
            value.getattr("upper_inc")?.is_truthy()?,
            value.getattr("isempty")?.is_truthy()?,
        )
    } else if let Ok(t) = value
        .downcast::<PyTuple>()
        .cloned()
        .or_else(|_| value.downcast::<PyList>().map(|l| l.to_tuple()))
    {
        // as asyncpg: () is the empty range, (lo, hi) includes both bounds ([lo, hi])
        match t.len() {
            0 => (
                py.None().into_bound(py),
                py.None().into_bound(py),
                false,
                false,
                true,
            ),
            1 => (t.get_item(0)?, py.None().into_bound(py), true, false, false),
            2 => (t.get_item(0)?, t.get_item(1)?, true, true, false),
            n => {
                return Err(EncodeError::Invalid(format!(
                    "expected 0, 1 or 2 elements in range (got {n})"
                )))
            }
        }
    } else {
        return Err(EncodeError::Invalid(format!(
            "list, tuple or Range object expected (got type <class '{}'>)",
            super::scalar::type_name(value)
        )));
    };
    if empty {
        out.put_u8(EMPTY);
        return Ok(());
    }
    let mut flags = 0;
    if lower.is_none() {
        flags |= LB_INF;
    } else if lower_inc {
        flags |= LB_INC;
    }
    if upper.is_none() {
        flags |= UB_INF;
    } else if upper_inc {
        flags |= UB_INC;
    }
    out.put_u8(flags);
    for b in [&lower, &upper] {
        if b.is_none() {
            continue;
        }
        put_framed(out, |out| sub.encode(b, out))?;
    }
    Ok(())
}

pub fn decode_multi(py: Python<'_>, data: &[u8], sub: &Codec) -> PyResult<PyObject> {
    let bad = || protocol_error(py, "invalid multirange value");
    if data.len() < 4 {
        return Err(bad());
    }
    let n = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let mut at = 4;
    // each item takes at least its 4-byte length: a count the data cannot hold is not
    // believed (a corrupt count must not reserve gigabytes)
    let mut items = Vec::with_capacity((n.max(0) as usize).min(data.len() / 4));
    for _ in 0..n {
        let s = data.get(at..at + 4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        if len < 0 {
            return Err(bad());
        }
        let body = data.get(at + 4..at + 4 + len as usize).ok_or_else(bad)?;
        items.push(decode(py, body, sub)?);
        at += 4 + len as usize;
    }
    Ok(PyList::new(py, items)?.into_any().unbind())
}

pub fn encode_multi(value: &Bound<'_, PyAny>, out: &mut BytesMut, sub: &Codec) -> EncodeResult {
    let items: Vec<Bound<'_, PyAny>> = value
        .try_iter()
        .map_err(|_| {
            EncodeError::Invalid(format!(
                "expected a sequence of ranges (got type {})",
                super::scalar::type_name(value)
            ))
        })?
        .collect::<PyResult<_>>()?;
    out.put_i32(items.len() as i32);
    for item in items {
        put_framed(out, |out| encode(&item, out, sub))?;
    }
    Ok(())
}
