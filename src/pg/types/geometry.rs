//! point, line, lseg, box, path, polygon, circle <-> asyncpg_rs.types classes.

use bytes::{Buf, BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::pyrefs::TypeConv;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Point,
    Line,
    Lseg,
    Box,
    Path,
    Polygon,
    Circle,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Point => "point",
            Shape::Line => "line",
            Shape::Lseg => "lseg",
            Shape::Box => "box",
            Shape::Path => "path",
            Shape::Polygon => "polygon",
            Shape::Circle => "circle",
        }
    }

    fn fixed_floats(self) -> Option<usize> {
        match self {
            Shape::Point => Some(2),
            Shape::Line | Shape::Circle => Some(3),
            Shape::Lseg | Shape::Box => Some(4),
            Shape::Path | Shape::Polygon => None,
        }
    }
}

pub fn decode(py: Python<'_>, data: &[u8], shape: Shape) -> PyResult<PyObject> {
    let bad = || protocol_error(py, format!("invalid {} value", shape.name()));
    let mut buf = data;
    let mut closed = 0u8;
    let n = match shape.fixed_floats() {
        Some(n) => n,
        None => {
            if shape == Shape::Path {
                if buf.is_empty() {
                    return Err(bad());
                }
                closed = buf.get_u8();
            }
            if buf.len() < 4 {
                return Err(bad());
            }
            let npts = buf.get_i32();
            if npts < 0 {
                return Err(bad());
            }
            npts as usize * 2
        }
    };
    if buf.len() != n * 8 {
        return Err(bad());
    }
    let floats: Vec<f64> = (0..n).map(|_| buf.get_f64()).collect();
    let floats = PyList::new(py, floats)?;
    Ok(TypeConv::GeometryDecode
        .function(py)?
        .call1((shape.name(), floats, closed))?
        .unbind())
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut, shape: Shape) -> EncodeResult {
    let py = value.py();
    let (floats, closed): (Vec<f64>, u8) = TypeConv::GeometryEncode
        .function(py)?
        .call1((shape.name(), value))
        .map_err(|e| {
            EncodeError::Invalid(format!("invalid {} value: {}", shape.name(), e.value(py)))
        })?
        .extract()?;
    match shape.fixed_floats() {
        Some(_) => {}
        None => {
            if shape == Shape::Path {
                out.put_u8(closed);
            }
            out.put_i32((floats.len() / 2) as i32);
        }
    }
    for f in floats {
        out.put_f64(f);
    }
    Ok(())
}
