//! Type codecs: TEMPORARY stand-in with the agreed interface, replaced by the codec work.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Text = 0,
    Binary = 1,
}

pub struct Codec {
    oid: u32,
    name: String,
    format: Format,
}

pub enum EncodeError {
    Invalid(String),
    Py(PyErr),
}

impl Codec {
    pub fn oid(&self) -> u32 {
        self.oid
    }
    pub fn type_name(&self) -> &str {
        &self.name
    }
    pub fn format(&self) -> Format {
        self.format
    }
    pub fn decode(&self, py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
        match self.oid {
            23 => {
                let v = i32::from_be_bytes(
                    data.try_into()
                        .map_err(|_| crate::pg::errors::protocol_error(py, "bad int4 length"))?,
                );
                Ok(v.into_pyobject(py)?.into_any().unbind())
            }
            20 => {
                let v = i64::from_be_bytes(
                    data.try_into()
                        .map_err(|_| crate::pg::errors::protocol_error(py, "bad int8 length"))?,
                );
                Ok(v.into_pyobject(py)?.into_any().unbind())
            }
            16 => Ok(pyo3::types::PyBool::new(py, data.first() == Some(&1))
                .to_owned()
                .into_any()
                .unbind()),
            _ => {
                let s = std::str::from_utf8(data)
                    .map_err(|e| crate::pg::errors::protocol_error(py, e.to_string()))?;
                Ok(PyString::new(py, s).into_any().unbind())
            }
        }
    }
    pub fn encode(&self, value: &Bound<'_, PyAny>, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self.oid {
            23 | 20 | 21 => {
                if !value.is_instance_of::<PyInt>() {
                    return Err(EncodeError::Invalid("an int is required".into()));
                }
                let v: i64 = value.extract().map_err(EncodeError::Py)?;
                match self.oid {
                    23 => out.put_i32(v as i32),
                    21 => out.put_i16(v as i16),
                    _ => out.put_i64(v),
                }
                Ok(())
            }
            16 => {
                let v: bool = value.extract().map_err(EncodeError::Py)?;
                out.put_u8(v as u8);
                Ok(())
            }
            _ => {
                let s = value
                    .str()
                    .map_err(EncodeError::Py)?
                    .to_cow()
                    .map_err(EncodeError::Py)?
                    .into_owned();
                out.put_slice(s.as_bytes());
                Ok(())
            }
        }
    }
}

pub struct CodecRegistry {}

impl Default for CodecRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CodecRegistry {
    pub fn new() -> Self {
        CodecRegistry {}
    }
    pub fn lookup(&self, oid: u32) -> Option<Arc<Codec>> {
        let (name, format) = match oid {
            23 => ("int4", Format::Binary),
            20 => ("int8", Format::Binary),
            21 => ("int2", Format::Binary),
            16 => ("bool", Format::Binary),
            25 => ("text", Format::Text),
            _ => return None,
        };
        Some(Arc::new(Codec {
            oid,
            name: name.into(),
            format,
        }))
    }
    pub fn text_codec(&self, oid: u32) -> Arc<Codec> {
        Arc::new(Codec {
            oid,
            name: format!("oid {oid}"),
            format: Format::Text,
        })
    }
}

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
