//! Type codecs: PostgreSQL values <-> Python objects, with asyncpg's Python mappings.
//!
//! Each builtin type has one [`Codec`], chosen once per statement column or parameter; the
//! hot loops (`decode` per value) dispatch on a small enum, never on a Python lookup. Types
//! without a codec of their own travel in text format as `str`.
//!
//! One file per type family: `scalar` (bool, integers, floats, oid, "char", void), `text`
//! (text family, bytea, json/jsonb), `numeric`, `datetime`, `uuid`, `array`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use pyo3::prelude::*;

mod array;
mod bits;
mod composite;
mod custom;
mod datetime;
mod geometry;
mod network;
mod numeric;
mod pyrefs;
mod range;
mod scalar;
mod text;
mod textarray;
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
    /// Input the driver cannot send at all (UnsupportedClientFeatureError), e.g. anonymous
    /// records.
    Unsupported(String),
}

impl From<PyErr> for EncodeError {
    fn from(e: PyErr) -> Self {
        EncodeError::Py(e)
    }
}

pub type EncodeResult = Result<(), EncodeError>;

impl EncodeError {
    /// The reason as text (a Python exception's message for `Py`).
    pub fn reason(self, py: Python<'_>) -> String {
        match self {
            EncodeError::Invalid(r) | EncodeError::Unsupported(r) => r,
            EncodeError::Py(err) => err.value(py).to_string(),
        }
    }
}

/// Append what `encode` writes, preceded by its length as an i32: how arrays, composites,
/// ranges and binary COPY rows frame each element.
pub fn put_framed(
    out: &mut BytesMut,
    encode: impl FnOnce(&mut BytesMut) -> EncodeResult,
) -> EncodeResult {
    use bytes::BufMut;
    let at = out.len();
    out.put_i32(0);
    encode(out)?;
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

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
    Composite,
    /// The anonymous `record` type: every field carries its own type OID.
    Record,
    Range,
    Multirange,
    /// A user's codec from `set_type_codec` (text or binary format).
    Custom,
    Hstore,
    /// Any type without a binary codec: `str` in text format.
    TextFallback,
    Array,
    /// An array of a text-format element type (`textarray`): lists in text format.
    TextArray,
    /// A range whose subtype only has a text codec: read as `str`, never sent.
    TextRange,
    /// A composite with an attribute that only has a text codec: neither read nor sent.
    TextComposite,
    /// txid_snapshot, pg_snapshot: (xmin, xmax, (xip, ...)).
    Snapshot,
    /// A user's `format='tuple'` codec: `elem` is the builtin codec whose wire form the
    /// tuple describes.
    CustomTuple,
}

/// A composite's row description and its attributes' (type oid, codec).
type CompositeFields = (Arc<crate::pg::record::RecordDesc>, Vec<(u32, Arc<Codec>)>);

/// How values of one PostgreSQL type move between Python and the wire.
pub struct Codec {
    oid: u32,
    name: String,
    /// The schema of the type, for `Type.schema`.
    schema: String,
    kind: Kind,
    format: Format,
    /// For arrays: the element codec; for ranges and multiranges: the subtype's.
    elem: Option<Arc<Codec>>,
    /// For composites: the row description and one codec per attribute.
    fields: Option<CompositeFields>,
    /// For custom codecs: the user's (encoder, decoder).
    custom: Option<(PyObject, PyObject)>,
}

impl Codec {
    fn scalar(oid: u32, name: &str, kind: Kind) -> Codec {
        let format = if matches!(kind, Kind::TextFallback | Kind::TextComposite) {
            Format::Text
        } else {
            Format::Binary
        };
        Codec {
            oid,
            name: name.to_string(),
            schema: PG_CATALOG.to_string(),
            kind,
            format,
            elem: None,
            fields: None,
            custom: None,
        }
    }

    fn with_elem(oid: u32, name: &str, kind: Kind, elem: Arc<Codec>) -> Codec {
        // a subtype without a binary codec keeps the whole value in text format
        let format = if elem.format == Format::Binary {
            Format::Binary
        } else {
            Format::Text
        };
        let kind = if format == Format::Binary {
            kind
        } else if kind == Kind::Range || kind == Kind::Multirange {
            Kind::TextRange
        } else {
            Kind::TextFallback
        };
        Codec {
            oid,
            name: name.to_string(),
            schema: PG_CATALOG.to_string(),
            kind,
            format,
            elem: Some(elem),
            fields: None,
            custom: None,
        }
    }

    fn array(oid: u32, elem: Arc<Codec>) -> Codec {
        // a text-format element puts the whole array in text format
        let (kind, format) = if elem.format == Format::Binary {
            (Kind::Array, Format::Binary)
        } else {
            (Kind::TextArray, Format::Text)
        };
        Codec {
            oid,
            name: format!("_{}", elem.name),
            schema: elem.schema.clone(),
            kind,
            format,
            elem: Some(elem),
            fields: None,
            custom: None,
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

    /// Whether this is an array type.
    pub fn is_array(&self) -> bool {
        matches!(self.kind, Kind::Array | Kind::TextArray)
    }

    /// What `Type.kind` says: 'scalar', 'array', 'composite', 'range' or 'multirange'.
    pub fn type_kind(&self) -> &'static str {
        match self.kind {
            Kind::Array | Kind::TextArray => "array",
            Kind::Composite | Kind::Record | Kind::TextComposite => "composite",
            Kind::Range => "range",
            Kind::Multirange => "multirange",
            Kind::TextRange if self.name.contains("multirange") => "multirange",
            Kind::TextRange => "range",
            Kind::CustomTuple => match &self.elem {
                Some(base) => base.type_kind(),
                None => "scalar",
            },
            _ => "scalar",
        }
    }

    /// What `Type.name` says: arrays as `elem[]`, as asyncpg names them.
    pub fn display_name(&self) -> String {
        match (&self.elem, self.is_array()) {
            (Some(elem), true) => format!("{}[]", elem.name),
            _ => self.name.clone(),
        }
    }

    /// The schema of the type.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn elem_codec(&self, py: Python<'_>) -> PyResult<&Codec> {
        self.elem
            .as_deref()
            .ok_or_else(|| crate::pg::errors::internal_error(py, "codec without element type"))
    }

    fn derived(&self, py: Python<'_>, oid: u32, name: &str) -> Codec {
        Codec {
            oid,
            name: name.to_string(),
            schema: self.schema.clone(),
            kind: self.kind,
            format: self.format,
            elem: self.elem.clone(),
            fields: self.fields.clone(),
            custom: self
                .custom
                .as_ref()
                .map(|(e, d)| (e.clone_ref(py), d.clone_ref(py))),
        }
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
            Kind::Composite => composite::decode(py, data, self),
            Kind::Record => composite::decode_record(py, data, builtin_registry()),
            Kind::Range => range::decode(py, data, self.elem_codec(py)?),
            Kind::Multirange => range::decode_multi(py, data, self.elem_codec(py)?),
            Kind::Custom => custom::decode(py, data, self),
            Kind::CustomTuple => custom::decode_tuple(py, data, self),
            Kind::TextRange => text::decode_text(py, data),
            // as asyncpg: composites are only read in binary
            Kind::TextComposite => Err(crate::pg::errors::Exc::UnsupportedClientFeatureError.err(
                py,
                format!(
                    "cannot decode type \"{}\".\"{}\": text encoding of composite types \
                     is not supported",
                    self.schema, self.name
                ),
            )),
            Kind::Snapshot => bits::decode_snapshot(py, data),
            Kind::TextArray => textarray::decode(py, data, self.elem_codec(py)?),
            Kind::Hstore => custom::decode_hstore(py, data),
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
            Kind::Composite => composite::encode(value, out, self),
            Kind::Record => Err(EncodeError::Unsupported(
                "input of anonymous composite types is not supported".into(),
            )),
            Kind::TextRange => Err(EncodeError::Unsupported(format!(
                "text encoding of range types is not supported (type {})",
                self.name
            ))),
            Kind::TextComposite => Err(EncodeError::Unsupported(format!(
                "text encoding of composite types is not supported (type {})",
                self.name
            ))),
            Kind::Snapshot => bits::encode_snapshot(value, out),
            Kind::TextArray => match &self.elem {
                Some(elem) => textarray::encode(value, out, elem),
                None => Err(EncodeError::Invalid("array codec without element".into())),
            },
            Kind::CustomTuple => custom::encode_tuple(value, out, self),
            Kind::Range => match &self.elem {
                Some(sub) => range::encode(value, out, sub),
                None => Err(EncodeError::Invalid("range codec without subtype".into())),
            },
            Kind::Multirange => match &self.elem {
                Some(sub) => range::encode_multi(value, out, sub),
                None => Err(EncodeError::Invalid(
                    "multirange codec without subtype".into(),
                )),
            },
            Kind::Custom => custom::encode(value, out, self),
            Kind::Hstore => custom::encode_hstore(value, out),
            Kind::Array => match &self.elem {
                Some(elem) => array::encode(value, out, elem),
                None => Err(EncodeError::Invalid("array codec without element".into())),
            },
        }
    }
}

const PG_CATALOG: &str = "pg_catalog";

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
    (28, "xid", Kind::Oid, 1011),
    (29, "cid", Kind::Oid, 1012),
    (5069, "xid8", Kind::PgLsn, 271),
    (2970, "txid_snapshot", Kind::Snapshot, 2949),
    (5038, "pg_snapshot", Kind::Snapshot, 5039),
    (2249, "record", Kind::Record, 2287),
    (790, "money", Kind::TextFallback, 791),
    (3614, "tsvector", Kind::TextFallback, 3643),
    (3615, "tsquery", Kind::TextFallback, 3645),
    (4072, "jsonpath", Kind::TextFallback, 4073),
];

/// Builtin range types: (oid, name, subtype oid, array oid, multirange oid, its array oid).
const BUILTIN_RANGES: &[(u32, &str, u32, u32, u32, u32)] = &[
    (3904, "int4range", 23, 3905, 4451, 6150),
    (3926, "int8range", 20, 3927, 4536, 6157),
    (3906, "numrange", 1700, 3907, 4532, 6151),
    (3908, "tsrange", 1114, 3909, 4533, 6152),
    (3910, "tstzrange", 1184, 3911, 4534, 6153),
    (3912, "daterange", 1082, 3913, 4535, 6155),
];

/// The builtin codecs alone, for values that name their own types (anonymous records).
fn builtin_registry() -> &'static CodecRegistry {
    static REGISTRY: std::sync::OnceLock<CodecRegistry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(CodecRegistry::new)
}

/// A type found by introspection, as `register_type` takes it.
pub struct TypeInfo {
    pub oid: u32,
    pub name: String,
    /// pg_type.typtype: 'b' base, 'c' composite, 'd' domain, 'e' enum, 'r' range,
    /// 'm' multirange, 'p' pseudo
    pub kind: char,
    /// element type of an array, base type of a domain, subtype of a range, range of a
    /// multirange
    pub related: u32,
    pub attrs: Vec<(String, u32)>,
    pub schema: String,
}

/// The codecs one connection knows: the builtins, introspected types and user codecs.
pub struct CodecRegistry {
    builtin: HashMap<u32, Arc<Codec>>,
    introspected: HashMap<u32, Arc<Codec>>,
    custom: HashMap<u32, Arc<Codec>>,
}

impl Default for CodecRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CodecRegistry {
    pub fn new() -> Self {
        let mut codecs = HashMap::with_capacity(BUILTINS.len() * 2 + 24);
        for &(oid, name, kind, array_oid) in BUILTINS {
            let codec = Arc::new(Codec::scalar(oid, name, kind));
            if array_oid != 0 {
                codecs.insert(array_oid, Arc::new(Codec::array(array_oid, codec.clone())));
            }
            codecs.insert(oid, codec);
        }
        for &(oid, name, sub, array_oid, multi_oid, multi_array_oid) in BUILTIN_RANGES {
            let Some(sub) = codecs.get(&sub).cloned() else {
                continue;
            };
            let range = Arc::new(Codec::with_elem(oid, name, Kind::Range, sub.clone()));
            let multi_name = name.replace("range", "multirange");
            let multi = Arc::new(Codec::with_elem(
                multi_oid,
                &multi_name,
                Kind::Multirange,
                sub,
            ));
            codecs.insert(array_oid, Arc::new(Codec::array(array_oid, range.clone())));
            codecs.insert(
                multi_array_oid,
                Arc::new(Codec::array(multi_array_oid, multi.clone())),
            );
            codecs.insert(oid, range);
            codecs.insert(multi_oid, multi);
        }
        CodecRegistry {
            builtin: codecs,
            introspected: HashMap::new(),
            custom: HashMap::new(),
        }
    }

    /// The codec for `oid`, or `None` when the type is unknown (introspection needed).
    pub fn lookup(&self, oid: u32) -> Option<Arc<Codec>> {
        if let Some(c) = self.custom.get(&oid) {
            return Some(c.clone());
        }
        let found = self.standard(oid)?;
        // an array of a type with a user's codec uses that codec for its elements
        if found.is_array() {
            if let Some(custom) = found.elem.as_ref().and_then(|e| self.custom.get(&e.oid)) {
                let mut codec = Codec::array(oid, custom.clone());
                codec.schema = found.schema.clone();
                return Some(Arc::new(codec));
            }
        }
        Some(found)
    }

    /// The codec for `oid` without the user's codecs: builtin or introspected.
    fn standard(&self, oid: u32) -> Option<Arc<Codec>> {
        self.builtin
            .get(&oid)
            .or_else(|| self.introspected.get(&oid))
            .cloned()
    }

    /// A codec that moves values of `oid` as `str` in text format.
    pub fn text_codec(&self, oid: u32) -> Arc<Codec> {
        Arc::new(Codec::scalar(
            oid,
            &format!("oid {oid}"),
            Kind::TextFallback,
        ))
    }

    /// The builtin codec named `name` (e.g. "int4", "text", "pg_contrib.hstore").
    pub fn builtin_by_name(&self, name: &str) -> Option<Arc<Codec>> {
        if name == "pg_contrib.hstore" {
            return Some(Arc::new(Codec::scalar(0, "hstore", Kind::Hstore)));
        }
        self.builtin.values().find(|c| c.name == name).cloned()
    }

    /// Register types found by introspection (dependencies first: elements, bases,
    /// subtypes and attribute types resolve against what is known when each is added).
    pub fn register_type(&mut self, py: Python<'_>, t: &TypeInfo) -> PyResult<()> {
        let known = |reg: &Self, oid: u32| reg.lookup(oid).unwrap_or_else(|| reg.text_codec(oid));
        let codec = match t.kind {
            'd' => {
                let base = known(self, t.related);
                Arc::new(base.derived(py, t.oid, &t.name))
            }
            'e' => Arc::new(Codec::scalar(t.oid, &t.name, Kind::Text)),
            'b' if t.related == 0 => Arc::new(Codec::scalar(t.oid, &t.name, Kind::TextFallback)),
            'r' => Arc::new(Codec::with_elem(
                t.oid,
                &t.name,
                Kind::Range,
                known(self, t.related),
            )),
            'm' => {
                // `related` is the range type; the multirange shares its subtype
                let range = known(self, t.related);
                match &range.elem {
                    Some(sub) => Arc::new(Codec::with_elem(
                        t.oid,
                        &t.name,
                        Kind::Multirange,
                        sub.clone(),
                    )),
                    None => self.text_codec(t.oid),
                }
            }
            'c' => {
                let names: Vec<&str> = t.attrs.iter().map(|(n, _)| n.as_str()).collect();
                let desc = crate::pg::record::RecordDesc::new(py, &names)?;
                let fields: Vec<(u32, Arc<Codec>)> = t
                    .attrs
                    .iter()
                    .map(|(_, oid)| (*oid, known(self, *oid)))
                    .collect();
                if fields.iter().any(|(_, c)| c.format != Format::Binary) {
                    // binary composites need every attribute in binary
                    let mut codec = Codec::scalar(t.oid, &t.name, Kind::TextComposite);
                    codec.schema = t.schema.clone();
                    self.introspected.insert(t.oid, Arc::new(codec));
                    return Ok(());
                }
                Arc::new(Codec {
                    oid: t.oid,
                    name: t.name.clone(),
                    schema: t.schema.clone(),
                    kind: Kind::Composite,
                    format: Format::Binary,
                    elem: None,
                    fields: Some((desc, fields)),
                    custom: None,
                })
            }
            _ if t.related != 0 => Arc::new(Codec::array(t.oid, known(self, t.related))),
            _ => Arc::new(Codec::scalar(t.oid, &t.name, Kind::TextFallback)),
        };
        // freshly made above, so never shared yet
        let mut codec = Arc::try_unwrap(codec).unwrap_or_else(|c| c.derived(py, c.oid, &c.name));
        codec.schema = t.schema.clone();
        self.introspected.insert(t.oid, Arc::new(codec));
        Ok(())
    }

    /// Forget introspected types (`reload_schema_state`).
    pub fn clear_introspected(&mut self) {
        self.introspected.clear();
    }

    /// Use the user's `encoder`/`decoder` for `oid`, in `format` ('text', 'binary' or
    /// 'tuple'; a tuple codec needs the type's standard codec to be one that has a tuple
    /// form: date, time, timetz, timestamp, timestamptz, interval or a composite).
    pub fn set_custom(
        &mut self,
        py: Python<'_>,
        oid: u32,
        name: &str,
        schema: &str,
        (encoder, decoder): (PyObject, PyObject),
        format: &str,
    ) -> PyResult<()> {
        let (kind, wire, base) = match format {
            "text" => (Kind::Custom, Format::Text, None),
            "binary" => (Kind::Custom, Format::Binary, None),
            "tuple" => {
                let base = self.standard(oid).filter(|b| {
                    matches!(
                        b.kind,
                        Kind::Date
                            | Kind::Time
                            | Kind::TimeTz
                            | Kind::Timestamp
                            | Kind::TimestampTz
                            | Kind::Interval
                            | Kind::Composite
                    )
                });
                match base {
                    Some(base) => (Kind::CustomTuple, Format::Binary, Some(base)),
                    None => {
                        return Err(crate::pg::errors::interface_error(
                            py,
                            format!("{name} type does not support the 'tuple' exchange format"),
                        ))
                    }
                }
            }
            other => {
                return Err(crate::pg::errors::interface_error(
                    py,
                    format!("invalid format {other:?}: expected 'text', 'binary' or 'tuple'"),
                ))
            }
        };
        let codec = Codec {
            oid,
            name: name.to_string(),
            schema: schema.to_string(),
            kind,
            format: wire,
            elem: base,
            fields: None,
            custom: Some((encoder, decoder)),
        };
        self.custom.insert(oid, Arc::new(codec));
        Ok(())
    }

    /// Make `oid` use an existing codec (set_builtin_type_codec).
    pub fn set_alias(&mut self, py: Python<'_>, oid: u32, name: &str, codec: &Codec) {
        self.custom
            .insert(oid, Arc::new(codec.derived(py, oid, name)));
    }

    /// Drop a codec set by `set_custom`/`set_alias`.
    pub fn reset_custom(&mut self, oid: u32) {
        self.custom.remove(&oid);
    }
}

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
