//! A prepared statement as the protocol knows it: parameter and column types, the codec chosen
//! for each (once, at prepare time, not per row) and the row description shared by its Records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::pg::record::RecordDesc;
use crate::pg::types::{Codec, CodecRegistry, Format};

/// `(oid, name, kind, schema)`: what `asyncpg_rs.types.Type` is made of.
type TypeTuple<'a> = (u32, String, &'a str, &'a str);

/// One result column as described by the server.
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub table_oid: u32,
    pub column_id: i16,
}

/// The server-side statement and everything needed to run it without further lookups.
#[pyclass(frozen, module = "asyncpg_rs._native", name = "StatementState")]
pub struct StatementState {
    pub name: String,
    pub query: String,
    pub param_oids: Vec<u32>,
    pub param_codecs: Vec<Arc<Codec>>,
    pub columns: Vec<Column>,
    pub col_codecs: Vec<Arc<Codec>>,
    pub result_formats: Vec<i16>,
    pub desc: Arc<RecordDesc>,
    /// OIDs with no codec yet: the caller may introspect them and rebind.
    pub unknown_oids: Vec<u32>,
    pub closed: AtomicBool,
    /// An unnamed statement that the server, re-parsing it, described with other result
    /// types (DDL since it was cached): the cache must describe it afresh.
    pub stale: AtomicBool,
}

impl StatementState {
    pub fn build(
        py: Python<'_>,
        registry: &CodecRegistry,
        name: String,
        query: String,
        param_oids: Vec<u32>,
        columns: Vec<Column>,
    ) -> PyResult<StatementState> {
        let mut unknown = Vec::new();
        let mut pick = |oid: u32| match registry.lookup(oid) {
            Some(c) => c,
            None => {
                if !unknown.contains(&oid) {
                    unknown.push(oid);
                }
                registry.text_codec(oid)
            }
        };
        let param_codecs: Vec<_> = param_oids.iter().map(|&o| pick(o)).collect();
        let col_codecs: Vec<_> = columns.iter().map(|c| pick(c.type_oid)).collect();
        let result_formats = col_codecs
            .iter()
            .map(|c| match c.format() {
                Format::Binary => 1,
                Format::Text => 0,
            })
            .collect();
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let desc = RecordDesc::new(py, &names)?;
        Ok(StatementState {
            name,
            query,
            param_oids,
            param_codecs,
            columns,
            col_codecs,
            result_formats,
            desc,
            unknown_oids: unknown,
            closed: AtomicBool::new(false),
            stale: AtomicBool::new(false),
        })
    }

    /// The same statement with codecs looked up again (after introspection or a codec change).
    pub fn rebuilt(&self, py: Python<'_>, registry: &CodecRegistry) -> PyResult<StatementState> {
        let columns = self
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                type_oid: c.type_oid,
                table_oid: c.table_oid,
                column_id: c.column_id,
            })
            .collect();
        StatementState::build(
            py,
            registry,
            self.name.clone(),
            self.query.clone(),
            self.param_oids.clone(),
            columns,
        )
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

#[pymethods]
impl StatementState {
    /// The server-side name ('' for the unnamed statement).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The query text.
    #[getter]
    fn query(&self) -> &str {
        &self.query
    }

    /// Whether the server-side statement has been closed.
    #[getter]
    fn closed(&self) -> bool {
        self.is_closed()
    }

    /// Whether the server now describes this (unnamed, cached) statement's results with
    /// other types: the statement cache drops it and prepares the query again.
    #[getter]
    fn stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Parameter types as `(oid, type name)` pairs.
    fn parameter_types<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items: Vec<(u32, String)> = self
            .param_codecs
            .iter()
            .zip(&self.param_oids)
            .map(|(c, &oid)| (oid, c.type_name().to_string()))
            .collect();
        PyTuple::new(py, items)
    }

    /// Result columns as `(name, oid, type name)` triples.
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items: Vec<(String, u32, String)> = self
            .columns
            .iter()
            .zip(&self.col_codecs)
            .map(|(c, codec)| (c.name.clone(), c.type_oid, codec.type_name().to_string()))
            .collect();
        PyTuple::new(py, items)
    }

    /// Parameter types as `(oid, name, kind, schema)` for `Type` (arrays named `elem[]`).
    fn parameter_type_infos<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items: Vec<TypeTuple<'_>> = self
            .param_codecs
            .iter()
            .zip(&self.param_oids)
            .map(|(c, &oid)| (oid, c.display_name(), c.type_kind(), c.schema()))
            .collect();
        PyTuple::new(py, items)
    }

    /// Result columns as `(name, (oid, type name, kind, schema))` for `Attribute`.
    fn column_type_infos<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items: Vec<(String, TypeTuple<'_>)> = self
            .columns
            .iter()
            .zip(&self.col_codecs)
            .map(|(c, codec)| {
                (
                    c.name.clone(),
                    (
                        c.type_oid,
                        codec.display_name(),
                        codec.type_kind(),
                        codec.schema(),
                    ),
                )
            })
            .collect();
        PyTuple::new(py, items)
    }

    /// OIDs the codec registry did not know when the statement was prepared.
    fn unknown_oids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.unknown_oids)
    }

    /// Whether the statement returns rows.
    fn has_rows(&self) -> bool {
        !self.columns.is_empty()
    }
}
