//! Arrays in PostgreSQL's text form, for element types that only travel as text: types
//! without a binary codec (aclitem, extension types) and types with a text-format custom
//! codec (`set_type_codec(format='text')`). Decoded to (nested) lists of what the element
//! codec makes of each element's text; encoded from (nested) lists or tuples.
//!
//! The text form: `{a,"b c",NULL,{...}}`, optionally preceded by explicit bounds
//! (`[0:1]={...}`); an element is quoted (with backslash escapes) or bare, and a bare `NULL`
//! is a NULL element.

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::{Codec, EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

/// PostgreSQL's MAXDIM.
const MAX_DIMS: usize = 6;

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    delim: u8,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    /// One `{...}` level, its `{` at the current position.
    fn level(&mut self, py: Python<'_>, elem: &Codec, depth: usize) -> PyResult<PyObject> {
        if depth > MAX_DIMS {
            return Err(bad(py, "too many array dimensions"));
        }
        self.at += 1; // '{'
        let mut items: Vec<PyObject> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(PyList::empty(py).into_any().unbind());
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'{') => items.push(self.level(py, elem, depth + 1)?),
                Some(b'"') => {
                    let text = self.quoted().map_err(|e| bad(py, e))?;
                    items.push(elem.decode(py, &text)?);
                }
                Some(_) => {
                    let start = self.at;
                    while let Some(c) = self.peek() {
                        if c == self.delim || c == b'}' {
                            break;
                        }
                        self.at += 1;
                    }
                    let raw = self.s[start..self.at].trim_ascii();
                    if raw.eq_ignore_ascii_case(b"NULL") {
                        items.push(py.None());
                    } else {
                        let text = unescape(raw);
                        items.push(elem.decode(py, &text)?);
                    }
                }
                None => return Err(bad(py, "unterminated array")),
            }
            self.skip_ws();
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                Some(c) if c == self.delim => self.at += 1,
                _ => return Err(bad(py, "malformed array")),
            }
        }
        Ok(PyList::new(py, items)?.into_any().unbind())
    }

    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.at += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b'\\') => {
                    let c = *self
                        .s
                        .get(self.at + 1)
                        .ok_or("unterminated quoted element")?;
                    out.push(c);
                    self.at += 2;
                }
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
                None => return Err("unterminated quoted element"),
            }
        }
    }
}

fn bad(py: Python<'_>, what: &str) -> PyErr {
    protocol_error(py, format!("invalid array value in text form: {what}"))
}

fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn decode(py: Python<'_>, data: &[u8], elem: &Codec) -> PyResult<PyObject> {
    let mut p = Parser {
        s: data,
        at: 0,
        delim: b',',
    };
    p.skip_ws();
    if p.peek() == Some(b'[') {
        // explicit bounds: "[1:2][0:3]={...}"; Python lists start at 0 either way
        while let Some(c) = p.peek() {
            p.at += 1;
            if c == b'=' {
                break;
            }
        }
        p.skip_ws();
    }
    if p.peek() != Some(b'{') {
        return Err(bad(py, "no opening brace"));
    }
    p.level(py, elem, 1)
}

fn is_subarray(value: &Bound<'_, PyAny>) -> bool {
    value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>()
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut, elem: &Codec) -> EncodeResult {
    if !is_subarray(value) {
        return Err(EncodeError::Invalid(format!(
            "a sized iterable container expected (got type '{}')",
            super::scalar::type_name(value)
        )));
    }
    let mut shape = Vec::new();
    encode_level(value, out, elem, 0, &mut shape)
}

/// Encode one level; `shape` holds the length seen first at each depth, so ragged input is
/// refused as the binary encoder does.
fn encode_level(
    value: &Bound<'_, PyAny>,
    out: &mut BytesMut,
    elem: &Codec,
    depth: usize,
    shape: &mut Vec<Option<usize>>,
) -> EncodeResult {
    if depth >= MAX_DIMS {
        return Err(EncodeError::Invalid(format!(
            "number of array dimensions ({}) exceed the maximum expected ({MAX_DIMS})",
            depth + 1
        )));
    }
    let items: Vec<Bound<'_, PyAny>> = value.try_iter()?.collect::<PyResult<_>>()?;
    if shape.len() <= depth {
        shape.push(Some(items.len()));
    } else if shape[depth] != Some(items.len()) {
        return Err(EncodeError::Invalid("non-homogeneous array".into()));
    }
    out.put_u8(b'{');
    let mut sub: Option<bool> = None;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        let is_sub = is_subarray(item);
        if *sub.get_or_insert(is_sub) != is_sub && !item.is_none() {
            return Err(EncodeError::Invalid("non-homogeneous array".into()));
        }
        if is_sub {
            encode_level(item, out, elem, depth + 1, shape)?;
        } else if item.is_none() {
            out.put_slice(b"NULL");
        } else {
            let mut text = BytesMut::new();
            elem.encode(item, &mut text).map_err(|e| {
                EncodeError::Invalid(format!("invalid array element: {}", e.reason(item.py())))
            })?;
            // always quoted: then no content (NULL, blanks, delimiters) is special
            out.put_u8(b'"');
            for &c in text.iter() {
                if c == b'"' || c == b'\\' {
                    out.put_u8(b'\\');
                }
                out.put_u8(c);
            }
            out.put_u8(b'"');
        }
    }
    out.put_u8(b'}');
    Ok(())
}
