//! Arrays of any element type with a codec: multi-dimensional, NULL elements, empty arrays.
//! Decoded to (nested) lists; encoded from (nested) lists or tuples.

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::scalar::type_name;
use super::{put_framed, Codec, EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

/// PostgreSQL's MAXDIM.
const MAX_DIMS: usize = 6;

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn i32(&mut self, py: Python<'_>) -> PyResult<i32> {
        let s = self
            .data
            .get(self.at..self.at + 4)
            .ok_or_else(|| protocol_error(py, "truncated array value"))?;
        self.at += 4;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn bytes(&mut self, py: Python<'_>, len: usize) -> PyResult<&'a [u8]> {
        let s = self
            .data
            .get(self.at..self.at + len)
            .ok_or_else(|| protocol_error(py, "truncated array element"))?;
        self.at += len;
        Ok(s)
    }
}

pub fn decode(py: Python<'_>, data: &[u8], elem: &Codec) -> PyResult<PyObject> {
    let mut r = Reader { data, at: 0 };
    let ndims = r.i32(py)?;
    let _has_nulls = r.i32(py)?;
    let _elem_oid = r.i32(py)?;
    if ndims == 0 {
        return Ok(PyList::empty(py).into_any().unbind());
    }
    if ndims < 0 || ndims as usize > MAX_DIMS {
        return Err(protocol_error(
            py,
            format!("invalid array dimension count {ndims}"),
        ));
    }
    let ndims = ndims as usize;
    let mut dims = [0usize; MAX_DIMS];
    let mut total: usize = 1;
    for d in dims.iter_mut().take(ndims) {
        let len = r.i32(py)?;
        let _lower_bound = r.i32(py)?;
        if len < 0 {
            return Err(protocol_error(py, "negative array dimension"));
        }
        *d = len as usize;
        total = total.saturating_mul(*d);
    }
    // every element takes at least its 4-byte length: a shape the data cannot hold is
    // refused before anything is allocated for it
    if total > (data.len() - r.at) / 4 {
        return Err(protocol_error(py, "array dimensions exceed its data"));
    }
    // with a zero dimension there are no elements, but the levels above it are still lists
    // to build ([n, 0] is n empty lists): their count must be believable too
    let lists = dims[..ndims - 1]
        .iter()
        .fold(1usize, |n, &d| n.saturating_mul(d));
    if total == 0 && lists > data.len() {
        return Err(protocol_error(py, "array dimensions exceed its data"));
    }
    let list = decode_level(py, &mut r, elem, &dims[..ndims])?;
    if r.at != data.len() {
        return Err(protocol_error(py, "trailing bytes after array elements"));
    }
    Ok(list)
}

fn decode_level(
    py: Python<'_>,
    r: &mut Reader<'_>,
    elem: &Codec,
    dims: &[usize],
) -> PyResult<PyObject> {
    let n = dims[0];
    // the list is filled in place; on an error it is dropped with its unset slots NULL,
    // which list deallocation allows
    let len = pyo3::ffi::Py_ssize_t::try_from(n)
        .map_err(|_| protocol_error(py, "array dimension too large"))?;
    let list = unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyList_New(len))? };
    for i in 0..n {
        let item = if dims.len() > 1 {
            decode_level(py, r, elem, &dims[1..])?
        } else {
            let len = r.i32(py)?;
            if len < 0 {
                py.None()
            } else {
                let bytes = r.bytes(py, len as usize)?;
                elem.decode(py, bytes)?
            }
        };
        // SAFETY: `list` is a new list of length n and slot i is unset
        unsafe {
            pyo3::ffi::PyList_SET_ITEM(list.as_ptr(), i as pyo3::ffi::Py_ssize_t, item.into_ptr())
        };
    }
    Ok(list.unbind())
}

/// Whether `value` is a level of the array rather than an element: lists always are;
/// tuples are, unless the elements are themselves written as tuples (composites, ranges,
/// tuple-format custom codecs), as in asyncpg.
fn is_subarray(value: &Bound<'_, PyAny>, elem: &Codec) -> bool {
    value.is_instance_of::<PyList>()
        || (value.is_instance_of::<PyTuple>()
            && !matches!(
                elem.kind,
                super::Kind::Composite | super::Kind::Range | super::Kind::CustomTuple
            ))
}

fn items_of<'py>(value: &Bound<'py, PyAny>) -> Result<Vec<Bound<'py, PyAny>>, EncodeError> {
    if let Ok(l) = value.downcast::<PyList>() {
        return Ok(l.iter().collect());
    }
    if let Ok(t) = value.downcast::<PyTuple>() {
        return Ok(t.iter().collect());
    }
    if value.is_instance_of::<PyString>()
        || value.is_instance_of::<PyBytes>()
        || !value.hasattr("__len__").unwrap_or(false)
    {
        return Err(EncodeError::Invalid(format!(
            "a sized iterable container expected (got type '{}')",
            type_name(value)
        )));
    }
    Ok(value.try_iter()?.collect::<PyResult<Vec<_>>>()?)
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut, elem: &Codec) -> EncodeResult {
    let top = items_of(value)?;
    // the shape comes from the first element at each depth; encode_level checks the rest
    let mut dims = vec![top.len()];
    let mut probe = top.first().cloned();
    while let Some(p) = probe {
        if !is_subarray(&p, elem) {
            break;
        }
        let inner = items_of(&p)?;
        dims.push(inner.len());
        if dims.len() > MAX_DIMS {
            return Err(EncodeError::Invalid(format!(
                "number of array dimensions ({}) exceed the maximum expected ({MAX_DIMS})",
                dims.len()
            )));
        }
        probe = inner.first().cloned();
    }
    if top.is_empty() {
        out.put_i32(0);
        out.put_i32(0);
        out.put_u32(elem.oid());
        return Ok(());
    }
    out.put_i32(dims.len() as i32);
    let nulls_at = out.len();
    out.put_i32(0);
    out.put_u32(elem.oid());
    for &d in &dims {
        out.put_i32(d as i32);
        out.put_i32(1);
    }
    let mut has_nulls = false;
    encode_level(&top, &dims, out, elem, &mut has_nulls)?;
    if has_nulls {
        out[nulls_at..nulls_at + 4].copy_from_slice(&1i32.to_be_bytes());
    }
    Ok(())
}

fn encode_level(
    items: &[Bound<'_, PyAny>],
    dims: &[usize],
    out: &mut BytesMut,
    elem: &Codec,
    has_nulls: &mut bool,
) -> EncodeResult {
    if items.len() != dims[0] {
        return Err(EncodeError::Invalid("non-homogeneous array".into()));
    }
    for item in items {
        if dims.len() > 1 {
            if !is_subarray(item, elem) {
                return Err(EncodeError::Invalid("non-homogeneous array".into()));
            }
            encode_level(&items_of(item)?, &dims[1..], out, elem, has_nulls)?;
        } else if item.is_none() {
            *has_nulls = true;
            out.put_i32(-1);
        } else {
            if is_subarray(item, elem) && !matches!(elem.kind, super::Kind::Array) {
                return Err(EncodeError::Invalid("non-homogeneous array".into()));
            }
            put_framed(out, |out| elem.encode(item, out)).map_err(|e| {
                EncodeError::Invalid(format!("invalid array element: {}", e.reason(item.py())))
            })?;
        }
    }
    Ok(())
}
