//! Type codecs: PostgreSQL values <-> Python objects, with asyncpg's Python mappings.
//!
//! Each builtin type has one [`Codec`], chosen once per statement column or parameter; the
//! hot loops (`decode` per value) dispatch on a small enum, never on a Python lookup. Types
//! without a codec of their own travel in text format as `str`.
//!
//! One file per type family: `scalar` (bool, integers, floats, oid, "char", void), `text`
//! (text family, bytea, json/jsonb), `numeric`, `datetime`, `uuid`, `array`.

use std::sync::Arc;

use bytes::BytesMut;
use pyo3::prelude::*;

mod array;
mod bits;
mod datetime;
mod geometry;
mod network;
mod numeric;
mod pyrefs;
mod scalar;
mod text;
mod uuid;

/// The wire format code for Bind and RowDescription.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Text = 0,
    Binary = 1,
}

/// Why a value could not be encoded.
pub enum EncodeError {
    /// asyncpg's wording of the problem, e.g. "value out of int16 range".
    Invalid(String),
    /// An exception raised by Python code while encoding.
    Py(PyErr),
}

impl From<PyErr> for EncodeError {
    fn from(e: PyErr) -> Self {
        EncodeError::Py(e)
    }
}

pub type EncodeResult = Result<(), EncodeError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    Char,
    Bytea,
    Json,
    Jsonb,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Void,
    Inet,
    Cidr,
    MacAddr,
    MacAddr8,
    Geometry(geometry::Shape),
    Bits,
    PgLsn,
    Tid,
    /// Any type without a binary codec: `str` in text format.
    TextFallback,
    Array,
}

/// How values of one PostgreSQL type move between Python and the wire.
pub struct Codec {
    oid: u32,
    name: String,
    kind: Kind,
    format: Format,
    /// For arrays: the element codec.
    elem: Option<Arc<Codec>>,
}

impl Codec {
    fn scalar(oid: u32, name: &str, kind: Kind) -> Codec {
        let format = if kind == Kind::TextFallback {
            Format::Text
        } else {
            Format::Binary
        };
        Codec {
            oid,
            name: name.to_string(),
            kind,
            format,
            elem: None,
        }
    }

    fn array(oid: u32, elem: Arc<Codec>) -> Codec {
        // a text-format element forces the whole array into text format, which we only read
        // back as the server's text; keep arrays of text-only types as plain text
        let (kind, format) = if elem.format == Format::Binary {
            (Kind::Array, Format::Binary)
        } else {
            (Kind::TextFallback, Format::Text)
        };
        Codec {
            oid,
            name: format!("_{}", elem.name),
            kind,
            format,
            elem: Some(elem),
        }
    }

    pub fn oid(&self) -> u32 {
        self.oid
    }

    pub fn type_name(&self) -> &str {
        &self.name
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether this is an array type (for `Type.kind`).
    pub fn is_array(&self) -> bool {
        self.elem.is_some()
    }

    /// Decode one non-NULL value.
    pub fn decode(&self, py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
        match self.kind {
            Kind::Bool => scalar::decode_bool(py, data),
            Kind::Int2 => scalar::decode_int2(py, data),
            Kind::Int4 => scalar::decode_int4(py, data),
            Kind::Int8 => scalar::decode_int8(py, data),
            Kind::Oid => scalar::decode_oid(py, data),
            Kind::Float4 => scalar::decode_float4(py, data),
            Kind::Float8 => scalar::decode_float8(py, data),
            Kind::Char => scalar::decode_char(py, data),
            Kind::Void => Ok(py.None()),
            Kind::Numeric => numeric::decode(py, data),
            Kind::Text | Kind::Json | Kind::TextFallback => text::decode_text(py, data),
            Kind::Jsonb => text::decode_jsonb(py, data),
            Kind::Bytea => text::decode_bytea(py, data),
            Kind::Uuid => uuid::decode(py, data),
            Kind::Date => datetime::decode_date(py, data),
            Kind::Time => datetime::decode_time(py, data),
            Kind::TimeTz => datetime::decode_timetz(py, data),
            Kind::Timestamp => datetime::decode_timestamp(py, data, false),
            Kind::TimestampTz => datetime::decode_timestamp(py, data, true),
            Kind::Interval => datetime::decode_interval(py, data),
            Kind::Inet | Kind::Cidr => network::decode_inet(py, data),
            Kind::MacAddr | Kind::MacAddr8 => network::decode_macaddr(py, data),
            Kind::Geometry(shape) => geometry::decode(py, data, shape),
            Kind::Bits => bits::decode_bits(py, data),
            Kind::PgLsn => bits::decode_lsn(py, data),
            Kind::Tid => bits::decode_tid(py, data),
            Kind::Array => match &self.elem {
                Some(elem) => array::decode(py, data, elem),
                None => Err(crate::pg::errors::internal_error(
                    py,
                    "array codec without element",
                )),
            },
        }
    }

    /// Encode one non-None value, appending it to `out`.
    pub fn encode(&self, value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
        match self.kind {
            Kind::Bool => scalar::encode_bool(value, out),
            Kind::Int2 => scalar::encode_int2(value, out),
            Kind::Int4 => scalar::encode_int4(value, out),
            Kind::Int8 => scalar::encode_int8(value, out),
            Kind::Oid => scalar::encode_oid(value, out),
            Kind::Float4 => scalar::encode_float4(value, out),
            Kind::Float8 => scalar::encode_float8(value, out),
            Kind::Char => scalar::encode_char(value, out),
            Kind::Void => Ok(()),
            Kind::Numeric => numeric::encode(value, out),
            Kind::Text | Kind::Json | Kind::TextFallback => text::encode_text(value, out),
            Kind::Jsonb => text::encode_jsonb(value, out),
            Kind::Bytea => text::encode_bytea(value, out),
            Kind::Uuid => uuid::encode(value, out),
            Kind::Date => datetime::encode_date(value, out),
            Kind::Time => datetime::encode_time(value, out),
            Kind::TimeTz => datetime::encode_timetz(value, out),
            Kind::Timestamp => datetime::encode_timestamp(value, out),
            Kind::TimestampTz => datetime::encode_timestamptz(value, out),
            Kind::Interval => datetime::encode_interval(value, out),
            Kind::Inet => network::encode_inet(value, out, false),
            Kind::Cidr => network::encode_inet(value, out, true),
            Kind::MacAddr => network::encode_macaddr(value, out, 6),
            Kind::MacAddr8 => network::encode_macaddr(value, out, 8),
            Kind::Geometry(shape) => geometry::encode(value, out, shape),
            Kind::Bits => bits::encode_bits(value, out),
            Kind::PgLsn => bits::encode_lsn(value, out),
            Kind::Tid => bits::encode_tid(value, out),
            Kind::Array => match &self.elem {
                Some(elem) => array::encode(value, out, elem),
                None => Err(EncodeError::Invalid("array codec without element".into())),
            },
        }
    }
}

/// (oid, name, kind, array oid) of every builtin type with a binary codec.
const BUILTINS: &[(u32, &str, Kind, u32)] = &[
    (16, "bool", Kind::Bool, 1000),
    (17, "bytea", Kind::Bytea, 1001),
    (18, "char", Kind::Char, 1002),
    (19, "name", Kind::Text, 1003),
    (20, "int8", Kind::Int8, 1016),
    (21, "int2", Kind::Int2, 1005),
    (23, "int4", Kind::Int4, 1007),
    (25, "text", Kind::Text, 1009),
    (26, "oid", Kind::Oid, 1028),
    (114, "json", Kind::Json, 199),
    (142, "xml", Kind::TextFallback, 143),
    (700, "float4", Kind::Float4, 1021),
    (701, "float8", Kind::Float8, 1022),
    (705, "unknown", Kind::Text, 0),
    (1042, "bpchar", Kind::Text, 1014),
    (1043, "varchar", Kind::Text, 1015),
    (1082, "date", Kind::Date, 1182),
    (1083, "time", Kind::Time, 1183),
    (1114, "timestamp", Kind::Timestamp, 1115),
    (1184, "timestamptz", Kind::TimestampTz, 1185),
    (1186, "interval", Kind::Interval, 1187),
    (1266, "timetz", Kind::TimeTz, 1270),
    (1700, "numeric", Kind::Numeric, 1231),
    (2278, "void", Kind::Void, 0),
    (2950, "uuid", Kind::Uuid, 2951),
    (3802, "jsonb", Kind::Jsonb, 3807),
    (869, "inet", Kind::Inet, 1041),
    (650, "cidr", Kind::Cidr, 651),
    (829, "macaddr", Kind::MacAddr, 1040),
    (774, "macaddr8", Kind::MacAddr8, 775),
    (600, "point", Kind::Geometry(geometry::Shape::Point), 1017),
    (628, "line", Kind::Geometry(geometry::Shape::Line), 629),
    (601, "lseg", Kind::Geometry(geometry::Shape::Lseg), 1018),
    (603, "box", Kind::Geometry(geometry::Shape::Box), 1020),
    (602, "path", Kind::Geometry(geometry::Shape::Path), 1019),
    (
        604,
        "polygon",
        Kind::Geometry(geometry::Shape::Polygon),
        1027,
    ),
    (718, "circle", Kind::Geometry(geometry::Shape::Circle), 719),
    (1560, "bit", Kind::Bits, 1561),
    (1562, "varbit", Kind::Bits, 1563),
    (3220, "pg_lsn", Kind::PgLsn, 3221),
    (27, "tid", Kind::Tid, 1010),
    (790, "money", Kind::TextFallback, 791),
    (3614, "tsvector", Kind::TextFallback, 3643),
    (3615, "tsquery", Kind::TextFallback, 3645),
    (4072, "jsonpath", Kind::TextFallback, 4073),
];

/// The codecs one connection knows: the builtins, plus (later) introspected and custom ones.
pub struct CodecRegistry {
    codecs: std::collections::HashMap<u32, Arc<Codec>>,
}

impl Default for CodecRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CodecRegistry {
    pub fn new() -> Self {
        let mut codecs = std::collections::HashMap::with_capacity(BUILTINS.len() * 2);
        for &(oid, name, kind, array_oid) in BUILTINS {
            let codec = Arc::new(Codec::scalar(oid, name, kind));
            if array_oid != 0 {
                codecs.insert(array_oid, Arc::new(Codec::array(array_oid, codec.clone())));
            }
            codecs.insert(oid, codec);
        }
        CodecRegistry { codecs }
    }

    /// The codec for `oid`, or `None` when the type is unknown (introspection needed).
    pub fn lookup(&self, oid: u32) -> Option<Arc<Codec>> {
        self.codecs.get(&oid).cloned()
    }

    /// A codec that moves values of `oid` as `str` in text format.
    pub fn text_codec(&self, oid: u32) -> Arc<Codec> {
        Arc::new(Codec::scalar(
            oid,
            &format!("oid {oid}"),
            Kind::TextFallback,
        ))
    }
}

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
