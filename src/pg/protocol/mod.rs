//! The PostgreSQL wire protocol as an asyncio `Protocol`.
//!
//! `PGProtocol` is driven by any asyncio transport (the stdlib loop's, uvloop's, ours) and
//! resolves futures made by `loop.create_future()`, so the driver runs on any loop
//! (ARCHITECTURE.md §1). It never awaits: each operation writes its messages, remembers what
//! it is waiting for in `Op`, and resolves its future at `ReadyForQuery`.
//!
//! Re-entrancy: transports call back into their protocol synchronously (`pause_writing` from
//! inside `write`). So a method mutates the protocol inside a short borrow that collects
//! [`Effect`]s, drops the borrow, and only then touches Python objects that may call back.

use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Message};
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyModule, PyString, PyTuple, PyType};

use crate::pg::errors::{data_error, interface_error, internal_error, py_error};
use crate::pg::record::new_record;
use crate::pg::types::{CodecRegistry, EncodeError};
use crate::runtime::transports::stream::{transport_write, transport_write_parts};

mod auth;
mod messages;
pub mod statement;

use statement::{Column, StatementState};

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Phase {
    AwaitingTransport,
    Startup,
    Ready,
    Closed,
}

/// What the protocol is waiting for until the next `ReadyForQuery`.
enum Op {
    Idle,
    Startup,
    Prepare {
        name: String,
        query: String,
        params: Vec<u32>,
        columns: Vec<Column>,
    },
    Execute {
        state: Py<StatementState>,
        rows: Vec<PyObject>,
        record_class: Option<Py<PyType>>,
        want_rows: bool,
    },
    Simple,
    Close {
        state: Py<StatementState>,
    },
    ClosePortal,
    /// COPY ... TO STDOUT: data waits in `copy_buf` for `copy_out_read`.
    CopyOut,
    /// COPY ... FROM STDIN: `ready` resolves at CopyInResponse, the waiter at ReadyForQuery.
    CopyIn {
        ready: Option<PyObject>,
    },
}

/// A streamed executemany writes its messages in batches of about this size.
const EXECUTEMANY_FLUSH: usize = 128 * 1024;

/// COPY IN chunks up to this size are copied behind their header into one write; bigger
/// ones are written as they are.
const COPY_IN_COALESCE: usize = 16 * 1024;

/// Bytes buffered from a COPY OUT before we stop reading from the socket.
const COPY_OUT_HIGH_WATER: usize = 1 << 20;

/// A Python-visible action deferred until the protocol is no longer borrowed.
enum Effect {
    Write(PyObject, bytes::Bytes),
    Resolve(PyObject, PyObject),
    Reject(PyObject, PyErr),
    CallSoon(PyObject, PyObject, Vec<PyObject>),
    CloseTransport(PyObject),
    Call(PyObject, &'static str),
    /// Call a Python callable right away (after the borrow), not via call_soon.
    Invoke(PyObject, Vec<PyObject>),
}

fn run_effects(py: Python<'_>, effects: Vec<Effect>) -> PyResult<()> {
    let mut first_err: Option<PyErr> = None;
    for fx in effects {
        let r = match fx {
            Effect::Write(transport, data) => transport_write(py, &transport, &data),
            Effect::Resolve(fut, value) => settle(py, &fut, Ok(value)),
            Effect::Reject(fut, err) => settle(py, &fut, Err(err)),
            Effect::CallSoon(loop_, cb, args) => {
                let mut all = Vec::with_capacity(args.len() + 1);
                all.push(cb);
                all.extend(args);
                PyTuple::new(py, all).and_then(|t| loop_.call_method1(py, "call_soon", t).map(drop))
            }
            Effect::CloseTransport(transport) => transport.call_method0(py, "close").map(drop),
            Effect::Call(obj, method) => obj.call_method0(py, method).map(drop),
            Effect::Invoke(cb, args) => {
                PyTuple::new(py, args).and_then(|t| cb.call1(py, t).map(drop))
            }
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Resolve a future unless the caller already gave up on it (timeout, cancellation).
///
/// Settling is tried first and an already-done future is detected by its InvalidStateError:
/// that saves a `done()` call on every query, and giving up is the rare case.
fn settle(py: Python<'_>, fut: &PyObject, outcome: PyResult<PyObject>) -> PyResult<()> {
    let fut = fut.bind(py);
    let r = match outcome {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
    };
    match r {
        Ok(_) => Ok(()),
        Err(e) if fut.call_method0("done")?.is_truthy()? => {
            drop(e);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn error_fields<'py>(py: Python<'py>, mut fields: ErrorFields<'_>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    loop {
        match fields.next() {
            Ok(Some(f)) => {
                let key = (f.type_() as char).to_string();
                let value = String::from_utf8_lossy(f.value_bytes());
                dict.set_item(key, value.as_ref())?;
            }
            Ok(None) => break,
            Err(e) => return Err(crate::pg::errors::protocol_error(py, e.to_string())),
        }
    }
    Ok(dict)
}

/// The asyncpg exception for a server `ErrorResponse`.
fn server_error(py: Python<'_>, fields: &Bound<'_, PyDict>, query: Option<&str>) -> PyErr {
    let made = crate::pg::errors::exception_class(py, "PostgresError")
        .and_then(|cls| cls.call_method1("new", (fields, query)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

fn conn_lost_error(py: Python<'_>) -> PyErr {
    py_error(
        py,
        "ConnectionDoesNotExistError",
        "connection was closed in the middle of operation",
    )
}

/// One row of `Connection._introspect_types`: oid, name, typtype, related oid, attribute
/// names, attribute oids, schema.
type IntrospectedRow = (u32, String, String, u32, Vec<String>, Vec<u32>, String);

/// The asyncio protocol that speaks PostgreSQL's frontend/backend protocol v3.
///
/// `subclass`: `asyncpg_rs.protocol.Protocol` extends it under asyncpg's method names, the
/// Python class that APM agents wrap; the stream transport's downcast still finds it native.
#[pyclass(module = "asyncpg_rs._native", name = "PGProtocol", subclass)]
pub struct PGProtocol {
    loop_: PyObject,
    transport: Option<PyObject>,
    user: String,
    database: String,
    password: Option<String>,
    server_settings: Vec<(String, String)>,
    rbuf: BytesMut,
    phase: Phase,
    op: Op,
    waiter: Option<PyObject>,
    startup_fut: PyObject,
    idle_waiters: Vec<PyObject>,
    drain_waiters: Vec<PyObject>,
    closed_waiters: Vec<PyObject>,
    transport_lost: bool,
    error: Option<PyErr>,
    status: Option<String>,
    query: Option<String>,
    auth: auth::Auth,
    registry: CodecRegistry,
    settings: Py<PyDict>,
    backend_pid: i32,
    backend_secret: i32,
    xact_status: u8,
    writing_paused: bool,
    /// The last Execute stopped at its row limit (PortalSuspended) rather than completing.
    suspended: bool,
    /// COPY OUT data not yet handed to `copy_out_read`: the rows' CopyData payloads,
    /// concatenated (one bytes object per read, not one per row).
    copy_buf: Vec<u8>,
    copy_reader: Option<PyObject>,
    copy_discard: bool,
    reading_paused: bool,
    /// A streamed executemany's encoded but not yet sent Bind/Execute messages.
    many_buf: BytesMut,
    many_count: usize,
    on_notice: Option<PyObject>,
    on_notification: Option<PyObject>,
    on_lost: Option<PyObject>,
    /// Simple queries sent with `send_unawaited` whose responses have not all arrived yet;
    /// they come before the responses of `op`, which may already be on the wire behind them.
    unawaited: u32,
    /// The first error an unawaited query got; the connection is failed with it.
    unawaited_error: Option<PyErr>,
}

impl PGProtocol {
    fn transport(&self, py: Python<'_>) -> PyResult<PyObject> {
        match &self.transport {
            Some(t) => Ok(t.clone_ref(py)),
            None => Err(interface_error(py, "the protocol has no transport")),
        }
    }

    fn check_ready(&self, py: Python<'_>) -> PyResult<()> {
        match self.phase {
            Phase::Ready => {}
            Phase::Closed => {
                return Err(py_error(
                    py,
                    "ConnectionDoesNotExistError",
                    "connection is closed",
                ))
            }
            _ => return Err(interface_error(py, "the connection is not ready yet")),
        }
        if !matches!(self.op, Op::Idle) {
            return Err(interface_error(
                py,
                "cannot perform operation: another operation is in progress",
            ));
        }
        Ok(())
    }

    /// Send `out` and wait for `op` to finish; returns the future the caller awaits.
    fn begin(
        &mut self,
        py: Python<'_>,
        op: Op,
        out: BytesMut,
        query: Option<String>,
        fx: &mut Vec<Effect>,
    ) -> PyResult<PyObject> {
        let fut = self
            .loop_
            .call_method0(py, pyo3::intern!(py, "create_future"))?;
        self.op = op;
        self.waiter = Some(fut.clone_ref(py));
        self.error = None;
        self.status = None;
        self.suspended = false;
        self.query = query;
        let transport = self.transport(py)?;
        if !out.is_empty() {
            fx.push(Effect::Write(transport, out.freeze()));
        }
        Ok(fut)
    }

    /// Send `out` and wait for an Execute-like operation on `state` to finish.
    fn begin_execute(
        &mut self,
        py: Python<'_>,
        state: Py<StatementState>,
        record_class: Option<Py<PyType>>,
        want_rows: bool,
        out: BytesMut,
        fx: &mut Vec<Effect>,
    ) -> PyResult<PyObject> {
        let query = Some(state.get().query.clone());
        let op = Op::Execute {
            state,
            rows: Vec::new(),
            record_class,
            want_rows,
        };
        self.begin(py, op, out, query, fx)
    }

    /// The unnamed statement may have been replaced since it was described (and a pooler
    /// may have routed us to another backend): parse it again in the same batch.
    fn reparse_if_unnamed(py: Python<'_>, st: &StatementState, out: &mut BytesMut) -> PyResult<()> {
        if st.name.is_empty() {
            frontend::parse("", &st.query, st.param_oids.iter().copied(), out)
                .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
        }
        Ok(())
    }

    fn fail_connection(&mut self, py: Python<'_>, err: PyErr, fx: &mut Vec<Effect>) {
        self.fail_connection_keep_transport(py, err, fx);
        if let Some(t) = self.transport.as_ref() {
            fx.push(Effect::CloseTransport(t.clone_ref(py)));
        }
    }

    /// The connection is unusable from now on: fail everything pending. The transport is
    /// left alone (a graceful Terminate waits for the server to close it).
    fn fail_connection_keep_transport(&mut self, py: Python<'_>, err: PyErr, fx: &mut Vec<Effect>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.op = Op::Idle;
        // A FATAL ErrorResponse (e.g. AdminShutdown from pg_terminate_backend) says more than
        // "connection lost": the pending operation gets the server's own error, also when it
        // arrived while a query sent ahead (send_unawaited) was still being answered.
        let from_server = self.error.take().or_else(|| self.unawaited_error.take());
        let err = match from_server {
            Some(server_err) if self.waiter.is_some() => {
                // asyncpg's shape: "closed in the middle of operation: <server's reason>",
                // with the server's error as the cause
                let reason = server_err.value(py).to_string();
                let wrapped = py_error(
                    py,
                    "ConnectionDoesNotExistError",
                    format!("connection was closed in the middle of operation: {reason}"),
                );
                wrapped.set_cause(py, Some(server_err));
                wrapped
            }
            _ => err,
        };
        // The connection's own cleanup (termination listeners) runs before any waiter
        // learns of the loss, so callers see a consistent connection when they resume.
        if let Some(cb) = &self.on_lost {
            fx.push(Effect::Invoke(
                cb.clone_ref(py),
                vec![err.clone_ref(py).into_value(py).into_any()],
            ));
        }
        if let Some(w) = self.waiter.take() {
            fx.push(Effect::Reject(w, err.clone_ref(py)));
        }
        for w in self.idle_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
        for w in self.drain_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
        if let Some(r) = self.copy_reader.take() {
            fx.push(Effect::Reject(r, err.clone_ref(py)));
        }
        self.copy_buf = Vec::new();
    }

    fn write_startup(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) -> PyResult<()> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", self.user.as_str()),
            ("database", self.database.as_str()),
            ("client_encoding", "UTF8"),
        ];
        for (k, v) in &self.server_settings {
            params.push((k.as_str(), v.as_str()));
        }
        let mut out = BytesMut::with_capacity(128);
        frontend::startup_message(params, &mut out)
            .map_err(|e| interface_error(py, format!("invalid startup parameter: {e}")))?;
        self.phase = Phase::Startup;
        fx.push(Effect::Write(self.transport(py)?, out.freeze()));
        Ok(())
    }

    fn write_bind(
        py: Python<'_>,
        out: &mut BytesMut,
        portal: &str,
        state: &StatementState,
        args: &Bound<'_, PyAny>,
        element: Option<usize>,
    ) -> PyResult<()> {
        let tuple;
        let args = match args.downcast::<PyTuple>() {
            Ok(t) => t,
            Err(_) => {
                let is_sequence = args.is_instance_of::<pyo3::types::PyList>()
                    || (args.downcast::<pyo3::types::PySequence>().is_ok()
                        && !args.is_instance_of::<PyString>()
                        && !args.is_instance_of::<PyBytes>());
                if !is_sequence {
                    let got = args
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    let what = match element {
                        Some(i) => format!(
                            "invalid input in executemany() argument sequence element #{i}: \
                             expected a sequence, got {got}"
                        ),
                        None => format!("query arguments must be a sequence, got {got}"),
                    };
                    return Err(data_error(py, what));
                }
                tuple = PyTuple::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
                &tuple
            }
        };
        if args.len() > i16::MAX as usize {
            return Err(interface_error(
                py,
                format!("the number of query arguments cannot exceed {}", i16::MAX),
            ));
        }
        let expected = state.param_oids.len();
        if args.len() != expected {
            return Err(interface_error(
                py,
                format!(
                    "the server expects {expected} argument{} for this query, {} {} passed",
                    if expected == 1 { "" } else { "s" },
                    args.len(),
                    if args.len() == 1 { "was" } else { "were" },
                ),
            ));
        }
        let start = out.len();
        let at = messages::begin(b'B', out);
        messages::put_cstr(portal, out);
        messages::put_cstr(&state.name, out);
        out.put_i16(expected as i16);
        for codec in &state.param_codecs {
            out.put_i16(codec.format() as i16);
        }
        out.put_i16(expected as i16);
        for (i, codec) in state.param_codecs.iter().enumerate() {
            let value = args.get_borrowed_item(i)?;
            if value.is_none() {
                out.put_i32(-1);
                continue;
            }
            let vat = messages::begin_value(out);
            if let Err(e) = codec.encode(&value, out) {
                out.truncate(start);
                return Err(encode_failure(py, i, element, &value, codec.type_name(), e));
            }
            messages::finish_value(vat, out);
        }
        out.put_i16(state.result_formats.len() as i16);
        for f in &state.result_formats {
            out.put_i16(*f);
        }
        messages::finish(at, out);
        Ok(())
    }

    fn decode_row(
        py: Python<'_>,
        body: &DataRowBody,
        state: &StatementState,
        record_class: Option<&Py<PyType>>,
    ) -> PyResult<PyObject> {
        let buf = body.buffer();
        let mut ranges = body.ranges();
        let mut values = Vec::with_capacity(state.col_codecs.len());
        let mut i = 0;
        loop {
            let range = match ranges.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(crate::pg::errors::protocol_error(py, e.to_string())),
            };
            let Some(codec) = state.col_codecs.get(i) else {
                return Err(crate::pg::errors::protocol_error(
                    py,
                    "DataRow has more columns than the row description",
                ));
            };
            match range {
                None => values.push(py.None()),
                Some(r) => values.push(codec.decode(py, &buf[r])?),
            }
            i += 1;
        }
        if i != state.col_codecs.len() {
            return Err(crate::pg::errors::protocol_error(
                py,
                "DataRow has fewer columns than the row description",
            ));
        }
        let cls = record_class.map(|c| c.bind(py));
        new_record(py, &state.desc, values, cls)
    }

    fn on_ready(&mut self, py: Python<'_>, status: u8, fx: &mut Vec<Effect>) -> PyResult<()> {
        self.xact_status = status;
        let op = std::mem::replace(&mut self.op, Op::Idle);
        let waiter = self.waiter.take();
        if let Op::CopyIn { ready: Some(ready) } = &op {
            // the COPY failed before it started: the caller learns it from `ready`
            if let Some(err) = &self.error {
                fx.push(Effect::Reject(ready.clone_ref(py), err.clone_ref(py)));
            } else {
                fx.push(Effect::Resolve(ready.clone_ref(py), py.None()));
            }
        }
        self.end_copy_out(py, fx);
        if matches!(op, Op::Startup) {
            self.phase = Phase::Ready;
        }
        if let Some(w) = waiter {
            match self.error.take() {
                Some(err) => fx.push(Effect::Reject(w, err)),
                None => {
                    let value = self.finish_op(py, op)?;
                    fx.push(Effect::Resolve(w, value));
                }
            }
        }
        self.error = None;
        for w in self.idle_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
        Ok(())
    }

    fn finish_op(&mut self, py: Python<'_>, op: Op) -> PyResult<PyObject> {
        Ok(match op {
            Op::Idle | Op::Startup => py.None(),
            Op::Prepare {
                name,
                query,
                params,
                columns,
            } => {
                let state =
                    StatementState::build(py, &self.registry, name, query, params, columns)?;
                Py::new(py, state)?.into_any()
            }
            Op::Execute { rows, .. } => PyList::new(py, rows)?.into_any().unbind(),
            Op::Simple => match &self.status {
                Some(s) => PyString::new(py, s).into_any().unbind(),
                None => py.None(),
            },
            Op::Close { state } => {
                state.get().closed.store(true, Ordering::Relaxed);
                py.None()
            }
            Op::ClosePortal => py.None(),
            Op::CopyOut | Op::CopyIn { .. } => match &self.status {
                Some(s) => PyString::new(py, s).into_any().unbind(),
                None => py.None(),
            },
        })
    }

    /// The COPY OUT is over: a waiting reader gets what is left, or `None`.
    fn end_copy_out(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        if let Some(r) = self.copy_reader.take() {
            if self.copy_buf.is_empty() {
                fx.push(Effect::Resolve(r, py.None()));
            } else if let Ok(chunks) = self.take_copy_chunks(py) {
                fx.push(Effect::Resolve(r, chunks));
            }
            self.copy_buf = Vec::new();
        }
        // without a waiting reader what is left stays for the next copy_out_read
        self.copy_discard = false;
        self.resume_reading_if_paused(py, fx);
    }

    /// What COPY OUT data is buffered, as the `[bytes]` a reader gets; the buffer is emptied.
    fn take_copy_chunks(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let chunk = PyBytes::new(py, &self.copy_buf);
        self.copy_buf.clear();
        Ok(PyList::new(py, [chunk])?.into_any().unbind())
    }

    /// After a batch of messages: a waiting COPY OUT reader gets what the batch brought.
    fn flush_copy_out(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        if self.copy_buf.is_empty() || self.copy_reader.is_none() {
            return;
        }
        match self.take_copy_chunks(py) {
            Ok(chunks) => {
                if let Some(r) = self.copy_reader.take() {
                    fx.push(Effect::Resolve(r, chunks));
                }
            }
            Err(e) => self.record_error(e),
        }
    }

    fn resume_reading_if_paused(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        if self.reading_paused {
            self.reading_paused = false;
            if let Some(t) = &self.transport {
                fx.push(Effect::Call(t.clone_ref(py), "resume_reading"));
            }
        }
    }

    fn record_error(&mut self, err: PyErr) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }

    /// A response to an unawaited query: nobody waits for its rows or tag; its ReadyForQuery
    /// ends it, and an error there fails the connection (a session that could not be reset
    /// must not be used).
    fn handle_unawaited(
        &mut self,
        py: Python<'_>,
        msg: Message,
        fx: &mut Vec<Effect>,
    ) -> PyResult<()> {
        match msg {
            Message::ErrorResponse(body) if self.unawaited_error.is_none() => {
                let fields = error_fields(py, body.fields())?;
                self.unawaited_error = Some(server_error(py, &fields, None));
            }
            Message::ReadyForQuery(body) => {
                self.unawaited -= 1;
                self.xact_status = body.status();
                if let Some(err) = self.unawaited_error.take() {
                    let reason = err.value(py).to_string();
                    let lost = py_error(
                        py,
                        "ConnectionDoesNotExistError",
                        format!(
                            "connection closed: a query sent ahead of this one failed: {reason}"
                        ),
                    );
                    lost.set_cause(py, Some(err));
                    self.fail_connection(py, lost, fx);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn handle(&mut self, py: Python<'_>, msg: Message, fx: &mut Vec<Effect>) -> PyResult<()> {
        if self.unawaited > 0
            && matches!(
                msg,
                Message::ErrorResponse(_)
                    | Message::ReadyForQuery(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::RowDescription(_)
                    | Message::DataRow(_)
            )
        {
            return self.handle_unawaited(py, msg, fx);
        }
        match msg {
            Message::DataRow(body) => {
                if let Op::Execute {
                    state,
                    rows,
                    record_class,
                    want_rows,
                } = &mut self.op
                {
                    if *want_rows && self.error.is_none() {
                        match Self::decode_row(py, &body, state.get(), record_class.as_ref()) {
                            Ok(r) => rows.push(r),
                            Err(e) => {
                                rows.clear();
                                self.error = Some(e);
                            }
                        }
                    }
                }
            }
            Message::CommandComplete(body) => {
                let tag = body
                    .tag()
                    .map_err(|e| crate::pg::errors::protocol_error(py, e.to_string()))?;
                self.status = Some(tag.to_string());
            }
            Message::ReadyForQuery(body) => self.on_ready(py, body.status(), fx)?,
            Message::ErrorResponse(body) => {
                let fields = error_fields(py, body.fields())?;
                let err = server_error(py, &fields, self.query.as_deref());
                if self.phase == Phase::Startup {
                    // The server closes the connection after a startup error.
                    self.fail_connection(py, err, fx);
                } else {
                    self.record_error(err);
                }
            }
            Message::NoticeResponse(body) => {
                if let Some(cb) = &self.on_notice {
                    let fields = error_fields(py, body.fields())?;
                    fx.push(Effect::CallSoon(
                        self.loop_.clone_ref(py),
                        cb.clone_ref(py),
                        vec![fields.into_any().unbind()],
                    ));
                }
            }
            Message::NotificationResponse(body) => {
                if let Some(cb) = &self.on_notification {
                    let channel = body.channel().unwrap_or_default();
                    let payload = body.message().unwrap_or_default();
                    fx.push(Effect::CallSoon(
                        self.loop_.clone_ref(py),
                        cb.clone_ref(py),
                        vec![
                            body.process_id().into_pyobject(py)?.into_any().unbind(),
                            PyString::new(py, channel).into_any().unbind(),
                            PyString::new(py, payload).into_any().unbind(),
                        ],
                    ));
                }
            }
            Message::ParameterStatus(body) => {
                let name = body.name().unwrap_or_default();
                let value = body.value().unwrap_or_default();
                self.settings.bind(py).set_item(name, value)?;
            }
            Message::ParameterDescription(body) => {
                if let Op::Prepare { params, .. } = &mut self.op {
                    let mut it = body.parameters();
                    while let Some(oid) = it
                        .next()
                        .map_err(|e| crate::pg::errors::protocol_error(py, e.to_string()))?
                    {
                        params.push(oid);
                    }
                }
            }
            Message::RowDescription(body) => {
                if let Op::Prepare { columns, .. } = &mut self.op {
                    let mut it = body.fields();
                    while let Some(f) = it
                        .next()
                        .map_err(|e| crate::pg::errors::protocol_error(py, e.to_string()))?
                    {
                        columns.push(Column {
                            name: f.name().to_string(),
                            type_oid: f.type_oid(),
                            table_oid: f.table_oid(),
                            column_id: f.column_id(),
                        });
                    }
                }
            }
            Message::BackendKeyData(body) => {
                self.backend_pid = body.process_id();
                self.backend_secret = body.secret_key();
            }
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, out| auth::cleartext(&this.password, out),
                    &mut out,
                )?;
            }
            Message::AuthenticationMd5Password(body) => {
                let mut out = BytesMut::new();
                let salt = body.salt();
                self.auth_step(
                    py,
                    fx,
                    |this, out| auth::md5(&this.user, &this.password, salt, out),
                    &mut out,
                )?;
            }
            Message::AuthenticationSasl(body) => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, out| {
                        let password = this.password.clone();
                        this.auth.sasl_start(&body, &password, out)
                    },
                    &mut out,
                )?;
            }
            Message::AuthenticationSaslContinue(body) => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, out| this.auth.sasl_continue(body.data(), out),
                    &mut out,
                )?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, _| this.auth.sasl_final(body.data()),
                    &mut out,
                )?;
            }
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => {
                let method = match msg {
                    Message::AuthenticationSspi => "SSPI",
                    Message::AuthenticationKerberosV5 => "Kerberos V5",
                    Message::AuthenticationScmCredential => "SCM credentials",
                    _ => "GSSAPI",
                };
                let err = interface_error(
                    py,
                    format!("unsupported authentication method requested by the server: {method}"),
                );
                self.fail_connection(py, err, fx);
            }
            Message::PortalSuspended => self.suspended = true,
            Message::CopyData(body) if matches!(self.op, Op::CopyOut) && !self.copy_discard => {
                // a waiting reader is handed the data at the end of the batch (feed)
                self.copy_buf.extend_from_slice(body.data());
                if self.copy_reader.is_none()
                    && self.copy_buf.len() > COPY_OUT_HIGH_WATER
                    && !self.reading_paused
                {
                    // a slow consumer: stop reading until it catches up
                    self.reading_paused = true;
                    fx.push(Effect::Call(self.transport(py)?, "pause_reading"));
                }
            }
            Message::CopyInResponse(_) if matches!(self.op, Op::CopyIn { .. }) => {
                if let Op::CopyIn { ready } = &mut self.op {
                    if let Some(r) = ready.take() {
                        fx.push(Effect::Resolve(r, py.None()));
                    }
                }
            }
            Message::CopyInResponse(_) => {
                // COPY FROM STDIN through execute(): refuse cleanly so the server ends the
                // COPY with an error instead of waiting for data forever.
                let mut out = BytesMut::new();
                frontend::copy_fail(
                    "COPY FROM STDIN is not supported by execute(); use copy_to_table()",
                    &mut out,
                )
                .map_err(|e| internal_error(py, e.to_string()))?;
                fx.push(Effect::Write(self.transport(py)?, out.freeze()));
            }
            Message::ParseComplete
            | Message::BindComplete
            | Message::CloseComplete
            | Message::NoData
            | Message::EmptyQueryResponse
            | Message::CopyOutResponse(_)
            | Message::CopyData(_)
            | Message::CopyDone => {}
            _ => {}
        }
        Ok(())
    }

    fn auth_step(
        &mut self,
        py: Python<'_>,
        fx: &mut Vec<Effect>,
        step: impl FnOnce(&mut Self, &mut BytesMut) -> Result<(), auth::AuthError>,
        out: &mut BytesMut,
    ) -> PyResult<()> {
        match step(self, out) {
            Ok(()) => {
                if !out.is_empty() {
                    fx.push(Effect::Write(
                        self.transport(py)?,
                        bytes::Bytes::copy_from_slice(&out[..]),
                    ));
                }
            }
            Err(auth::AuthError(msg)) => {
                let err = interface_error(py, msg);
                self.fail_connection(py, err, fx);
            }
        }
        Ok(())
    }

    fn feed(&mut self, py: Python<'_>, data: &[u8], fx: &mut Vec<Effect>) {
        self.rbuf.extend_from_slice(data);
        while self.phase != Phase::Closed {
            match Message::parse(&mut self.rbuf) {
                Ok(Some(msg)) => {
                    if let Err(e) = self.handle(py, msg, fx) {
                        // A fault of ours while handling a well-formed message: the stream
                        // position is still right, so report it to the waiter and go on.
                        self.record_error(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let err = crate::pg::errors::protocol_error(
                        py,
                        format!("malformed message from the server: {e}"),
                    );
                    self.fail_connection(py, err, fx);
                }
            }
        }
        self.flush_copy_out(py, fx);
    }
}

fn encode_failure(
    py: Python<'_>,
    index: usize,
    element: Option<usize>,
    value: &Bound<'_, PyAny>,
    type_name: &str,
    err: EncodeError,
) -> PyErr {
    let shown = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable value>".into());
    let shown = if shown.chars().count() > 40 {
        format!("{}...", shown.chars().take(40).collect::<String>())
    } else {
        shown
    };
    let place = match element {
        Some(i) => format!("${} in element #{i} of executemany() sequence", index + 1),
        None => format!("${}", index + 1),
    };
    let (reason, cause) = match err {
        EncodeError::Invalid(reason) => (reason, None),
        EncodeError::Unsupported(what) => {
            return crate::pg::errors::py_error(
                py,
                "UnsupportedClientFeatureError",
                format!("query argument {place}: {what}"),
            );
        }
        EncodeError::Py(e) => {
            let reason = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
            (reason, Some(e))
        }
    };
    // asyncpg's wording, which users and tests match on; the PostgreSQL type goes in the
    // hint so the message still says what was expected
    let exc = data_error(
        py,
        format!("invalid input for query argument {place}: {shown} ({reason})"),
    );
    let _ = exc.value(py).setattr(
        "hint",
        format!("query argument ${} is of type {type_name}", index + 1),
    );
    if let Some(cause) = cause {
        exc.set_cause(py, Some(cause));
    }
    exc
}

/// Below this many bytes a read is decoded with the garbage collector left as it is.
const GC_PAUSE_MIN_BYTES: usize = 16 * 1024;

/// Keeps Python's cyclic garbage collector off while a large read is decoded.
///
/// Decoding allocates rows, lists and other containers by the thousand, none of them in a
/// cycle; with the collector on, every 700 allocations it walks the young objects, and every
/// so often everything decoded so far (most of the cost of a big fetch of arrays). Paused,
/// the collector catches up once afterwards: collection is deferred, nothing is skipped.
/// Only the decoding itself runs paused, not callbacks into user code (notifications, log
/// messages), which run after the read.
struct GcPause<'py> {
    gc: Option<Bound<'py, PyModule>>,
}

impl<'py> GcPause<'py> {
    fn new(py: Python<'py>, bytes: usize) -> GcPause<'py> {
        if bytes < GC_PAUSE_MIN_BYTES {
            return GcPause { gc: None };
        }
        let paused = py.import(pyo3::intern!(py, "gc")).ok().filter(|gc| {
            gc.call_method0(pyo3::intern!(py, "isenabled"))
                .and_then(|on| on.is_truthy())
                .unwrap_or(false)
                && gc.call_method0(pyo3::intern!(py, "disable")).is_ok()
        });
        GcPause { gc: paused }
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some(gc) = self.gc.take() {
            let _ = gc.call_method0(pyo3::intern!(gc.py(), "enable"));
        }
    }
}

impl PGProtocol {
    /// Bytes from the server, handed over by one of our transports without a Python call
    /// (the native fast path); the same as `data_received`.
    pub fn receive(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let mut fx = Vec::new();
        {
            let _paused = GcPause::new(py, data.len());
            slf.borrow_mut().feed(py, data, &mut fx);
        }
        run_effects(py, fx)
    }
}

#[pymethods]
impl PGProtocol {
    /// Create a protocol that logs in as `user` to `database` once attached to a transport.
    #[new]
    #[pyo3(signature = (r#loop, user, database, password=None, server_settings=None))]
    fn new(
        py: Python<'_>,
        r#loop: PyObject,
        user: String,
        database: String,
        password: Option<String>,
        server_settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut settings = Vec::new();
        if let Some(ss) = server_settings {
            for (k, v) in ss.iter() {
                settings.push((k.str()?.to_string(), v.str()?.to_string()));
            }
        }
        let startup_fut = r#loop.call_method0(py, "create_future")?;
        Ok(PGProtocol {
            loop_: r#loop,
            transport: None,
            user,
            database,
            password,
            server_settings: settings,
            rbuf: BytesMut::with_capacity(64 * 1024),
            phase: Phase::AwaitingTransport,
            op: Op::Startup,
            waiter: Some(startup_fut.clone_ref(py)),
            startup_fut,
            idle_waiters: Vec::new(),
            drain_waiters: Vec::new(),
            closed_waiters: Vec::new(),
            transport_lost: false,
            error: None,
            status: None,
            query: None,
            auth: auth::Auth::default(),
            registry: CodecRegistry::new(),
            settings: PyDict::new(py).unbind(),
            backend_pid: 0,
            backend_secret: 0,
            xact_status: b'I',
            writing_paused: false,
            suspended: false,
            copy_buf: Vec::new(),
            copy_reader: None,
            copy_discard: false,
            reading_paused: false,
            many_buf: BytesMut::new(),
            many_count: 0,
            on_notice: None,
            on_notification: None,
            on_lost: None,
            unawaited: 0,
            unawaited_error: None,
        })
    }

    // ----- asyncio.Protocol -----

    /// asyncio callback: the transport is ready; starts the login.
    fn connection_made(slf: &Bound<'_, Self>, transport: PyObject) -> PyResult<()> {
        let py = slf.py();
        let mut fx = Vec::new();
        {
            let mut this = slf.borrow_mut();
            this.transport = Some(transport);
            if this.phase == Phase::AwaitingTransport {
                this.write_startup(py, &mut fx)?;
            }
        }
        run_effects(py, fx)
    }

    /// asyncio callback: bytes from the server.
    fn data_received(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        Self::receive(slf, data)
    }

    /// asyncio callback: the server closed its side; let the transport close.
    fn eof_received(&self) -> bool {
        false
    }

    /// asyncio callback: the connection is gone; every pending await fails.
    fn connection_lost(slf: &Bound<'_, Self>, exc: Option<PyObject>) -> PyResult<()> {
        let py = slf.py();
        let mut fx = Vec::new();
        {
            let mut this = slf.borrow_mut();
            let err = conn_lost_error(py);
            if let Some(cause) = exc {
                if let Ok(cause) = cause
                    .bind(py)
                    .clone()
                    .downcast_into::<pyo3::exceptions::PyBaseException>()
                {
                    err.set_cause(py, Some(PyErr::from_value(cause.into_any())));
                }
            }
            this.fail_connection(py, err, &mut fx);
            this.transport = None;
            this.transport_lost = true;
            for w in this.closed_waiters.drain(..) {
                fx.push(Effect::Resolve(w, py.None()));
            }
        }
        run_effects(py, fx)
    }

    /// Future resolved once the transport is gone (`connection_lost`).
    fn wait_closed(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let fut = self.loop_.call_method0(py, "create_future")?;
        if self.transport_lost || self.transport.is_none() {
            fut.call_method1(py, "set_result", (py.None(),))?;
        } else {
            self.closed_waiters.push(fut.clone_ref(py));
        }
        Ok(fut)
    }

    /// asyncio callback: the transport's write buffer is over its high-water mark.
    fn pause_writing(&mut self) {
        self.writing_paused = true;
    }

    /// asyncio callback: the transport's write buffer drained below its low-water mark.
    fn resume_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let waiters = {
            let mut this = slf.borrow_mut();
            this.writing_paused = false;
            std::mem::take(&mut this.drain_waiters)
        };
        run_effects(
            py,
            waiters
                .into_iter()
                .map(|w| Effect::Resolve(w, py.None()))
                .collect(),
        )
    }

    // ----- state -----

    /// Future resolved when login completes (first ReadyForQuery).
    fn startup_waiter(&self, py: Python<'_>) -> PyObject {
        self.startup_fut.clone_ref(py)
    }

    /// Future resolved once no operation is in flight (after a cancelled one finishes).
    fn wait_idle(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let fut = self.loop_.call_method0(py, "create_future")?;
        if matches!(self.op, Op::Idle) || self.phase == Phase::Closed {
            fut.call_method1(py, "set_result", (py.None(),))?;
        } else {
            self.idle_waiters.push(fut.clone_ref(py));
        }
        Ok(fut)
    }

    /// Future resolved once the transport accepts more writes.
    fn drain(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let fut = self.loop_.call_method0(py, "create_future")?;
        if !self.writing_paused || self.phase == Phase::Closed {
            fut.call_method1(py, "set_result", (py.None(),))?;
        } else {
            self.drain_waiters.push(fut.clone_ref(py));
        }
        Ok(fut)
    }

    /// Whether an operation is in flight.
    fn is_busy(&self) -> bool {
        !matches!(self.op, Op::Idle)
    }

    /// Whether the connection is closed or lost.
    fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the server reported an open (or failed) transaction block.
    fn is_in_transaction(&self) -> bool {
        self.xact_status != b'I'
    }

    /// The transaction status byte of the last ReadyForQuery: 'I', 'T' or 'E'.
    fn xact_status(&self) -> char {
        self.xact_status as char
    }

    /// The command tag of the last completed command (e.g. 'INSERT 0 1').
    fn last_status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    fn get_server_pid(&self) -> i32 {
        self.backend_pid
    }

    fn get_backend_secret(&self) -> i32 {
        self.backend_secret
    }

    /// The server's ParameterStatus values, kept current.
    fn get_settings(&self, py: Python<'_>) -> Py<PyDict> {
        self.settings.clone_ref(py)
    }

    /// The transport this protocol writes to.
    fn get_transport(&self, py: Python<'_>) -> Option<PyObject> {
        self.transport.as_ref().map(|t| t.clone_ref(py))
    }

    /// Callbacks scheduled with `loop.call_soon`: `on_notice(fields)`,
    /// `on_notification(pid, channel, payload)`, `on_lost(exc)`.
    #[pyo3(signature = (on_notice=None, on_notification=None, on_lost=None))]
    fn set_callbacks(
        &mut self,
        on_notice: Option<PyObject>,
        on_notification: Option<PyObject>,
        on_lost: Option<PyObject>,
    ) {
        self.on_notice = on_notice;
        self.on_notification = on_notification;
        self.on_lost = on_lost;
    }

    // ----- operations; each returns a future -----

    /// Parse and describe `query` as statement `name` ('' = unnamed).
    fn prepare(slf: &Bound<'_, Self>, name: String, query: String) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(query.len() + 64);
            frontend::parse(&name, &query, std::iter::empty(), &mut out)
                .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
            frontend::describe(b'S', &name, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?;
            frontend::sync(&mut out);
            let q = Some(query.clone());
            this.begin(
                py,
                Op::Prepare {
                    name,
                    query,
                    params: Vec::new(),
                    columns: Vec::new(),
                },
                out,
                q,
                &mut fx,
            )?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Bind `args` to `state` and execute, returning up to `limit` rows (0 = all) as Records
    /// of `record_class`, or `[]` when `want_rows` is false.
    #[pyo3(signature = (state, args, portal="", limit=0, record_class=None, want_rows=true))]
    fn bind_execute(
        slf: &Bound<'_, Self>,
        state: Py<StatementState>,
        args: &Bound<'_, PyAny>,
        portal: &str,
        limit: i32,
        record_class: Option<Py<PyType>>,
        want_rows: bool,
    ) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let st = state.get();
            if st.is_closed() {
                return Err(interface_error(py, "the prepared statement is closed"));
            }
            let mut out = BytesMut::with_capacity(256);
            Self::reparse_if_unnamed(py, st, &mut out)?;
            Self::write_bind(py, &mut out, portal, st, args, None)?;
            frontend::execute(portal, limit, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?;
            frontend::sync(&mut out);
            this.begin_execute(py, state, record_class, want_rows, out, &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Start a streamed executemany of `state`: send batches with `executemany_batch`, then
    /// `executemany_end`. The future resolves at ReadyForQuery (with the rows of all
    /// executions when `want_rows`).
    #[pyo3(signature = (state, record_class=None, want_rows=false))]
    fn executemany_begin(
        slf: &Bound<'_, Self>,
        state: Py<StatementState>,
        record_class: Option<Py<PyType>>,
        want_rows: bool,
    ) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let st = state.get();
            if st.is_closed() {
                return Err(interface_error(py, "the prepared statement is closed"));
            }
            let mut out = BytesMut::new();
            Self::reparse_if_unnamed(py, st, &mut out)?;
            this.many_buf.clear();
            this.many_count = 0;
            this.begin_execute(py, state, record_class, want_rows, out, &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Encode one argument sequence of a streamed executemany; it is sent with the others
    /// once 128 KiB have gathered. Returns 0 to go on, 1 when the transport asked us to
    /// pause (await `drain()`), 2 when the server already reported an error (stop sending).
    fn executemany_add(slf: &Bound<'_, Self>, args: &Bound<'_, PyAny>) -> PyResult<u8> {
        let py = slf.py();
        let flush = {
            let mut this = slf.borrow_mut();
            let this = &mut *this;
            let Op::Execute { state, .. } = &this.op else {
                return Err(interface_error(py, "no executemany() in progress"));
            };
            let index = this.many_count;
            Self::write_bind(py, &mut this.many_buf, "", state.get(), args, Some(index))?;
            frontend::execute("", 0, &mut this.many_buf)
                .map_err(|e| interface_error(py, e.to_string()))?;
            this.many_count += 1;
            if this.many_buf.len() >= EXECUTEMANY_FLUSH {
                let data = bytes::Bytes::copy_from_slice(&this.many_buf);
                this.many_buf.clear();
                Some((this.transport(py)?, data))
            } else {
                None
            }
        };
        if let Some((transport, data)) = flush {
            transport_write(py, &transport, &data)?;
        }
        let this = slf.borrow();
        Ok(if this.error.is_some() {
            2
        } else if this.writing_paused {
            1
        } else {
            0
        })
    }

    /// Finish a streamed executemany with Sync. With `failed` (the client side failed
    /// midway) rows not yet sent are dropped; with `rollback` too, the server is first made
    /// to fail the pipeline, so nothing of it is committed.
    #[pyo3(signature = (failed=false, rollback=false))]
    fn executemany_end(slf: &Bound<'_, Self>, failed: bool, rollback: bool) -> PyResult<()> {
        let py = slf.py();
        let (transport, mut out) = {
            let mut this = slf.borrow_mut();
            if !matches!(this.op, Op::Execute { .. }) {
                return Ok(());
            }
            let pending = std::mem::take(&mut this.many_buf);
            this.many_count = 0;
            let out = if failed {
                BytesMut::with_capacity(64)
            } else {
                pending
            };
            (this.transport(py)?, out)
        };
        if failed && rollback {
            // Executing a portal that does not exist is an error the server reports before
            // Sync, which rolls back the implicit transaction holding the whole batch.
            frontend::execute("__asyncpg_rs_abort__", 0, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?;
        }
        frontend::sync(&mut out);
        transport_write(py, &transport, &out)?;
        Ok(())
    }

    /// Send `sql` as a simple query without waiting for it: the next operation may follow on
    /// the wire at once, and its caller sees only its own results. For the pool's session
    /// reset, which then costs no round trip. Outside a transaction only (the transaction
    /// status must be right the moment the call returns); if the query fails, the connection
    /// is closed.
    fn send_unawaited(slf: &Bound<'_, Self>, sql: &str) -> PyResult<()> {
        let py = slf.py();
        let (transport, out) = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            if this.xact_status != b'I' {
                return Err(interface_error(
                    py,
                    "send_unawaited: the connection is inside a transaction",
                ));
            }
            let mut out = BytesMut::with_capacity(sql.len() + 8);
            frontend::query(sql, &mut out)
                .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
            this.unawaited += 1;
            (this.transport(py)?, out)
        };
        // outside the borrow: a write may reach back into the protocol (connection_lost)
        transport_write(py, &transport, &out)
    }

    /// Run `sql` with the simple-query protocol (several statements allowed); resolves to the
    /// last command tag.
    fn simple_query(slf: &Bound<'_, Self>, sql: String) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(sql.len() + 8);
            frontend::query(&sql, &mut out)
                .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
            this.begin(py, Op::Simple, out, Some(sql), &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Close the server-side statement.
    fn close_statement(slf: &Bound<'_, Self>, state: Py<StatementState>) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(64);
            frontend::close(b'S', &state.get().name, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?;
            frontend::sync(&mut out);
            this.begin(py, Op::Close { state }, out, None, &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Bind `args` to `state` as the named `portal` without executing it (cursors).
    fn bind_portal(
        slf: &Bound<'_, Self>,
        state: Py<StatementState>,
        args: &Bound<'_, PyAny>,
        portal: &str,
    ) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let st = state.get();
            let mut out = BytesMut::with_capacity(256);
            Self::reparse_if_unnamed(py, st, &mut out)?;
            Self::write_bind(py, &mut out, portal, st, args, None)?;
            frontend::sync(&mut out);
            this.begin_execute(py, state, None, false, out, &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Whether the last Execute stopped at its row limit with rows left in the portal.
    fn portal_suspended(&self) -> bool {
        self.suspended
    }

    /// Fetch up to `limit` more rows (0 = all) from an open portal made by `bind_execute`.
    #[pyo3(signature = (state, portal, limit=0, record_class=None))]
    fn execute_portal(
        slf: &Bound<'_, Self>,
        state: Py<StatementState>,
        portal: &str,
        limit: i32,
        record_class: Option<Py<PyType>>,
    ) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(64);
            frontend::execute(portal, limit, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?;
            frontend::sync(&mut out);
            this.begin_execute(py, state, record_class, true, out, &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Close a portal (cursor) before its transaction ends.
    fn close_portal(slf: &Bound<'_, Self>, portal: &str) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(64);
            frontend::close(b'P', portal, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?;
            frontend::sync(&mut out);
            this.begin(py, Op::ClosePortal, out, None, &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Start `COPY ... TO STDOUT`; read the data with `copy_out_read`. Resolves to the
    /// command tag ('COPY n') once the server is done.
    fn copy_out(slf: &Bound<'_, Self>, sql: String) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(sql.len() + 8);
            frontend::query(&sql, &mut out)
                .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
            this.copy_buf.clear();
            this.copy_discard = false;
            this.begin(py, Op::CopyOut, out, Some(sql), &mut fx)?
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Future of the next COPY OUT chunks (a list of bytes), or `None` once the COPY ended.
    fn copy_out_read(slf: &Bound<'_, Self>) -> PyResult<PyObject> {
        let py = slf.py();
        let mut fx = Vec::new();
        let fut = {
            let mut this = slf.borrow_mut();
            let fut = this.loop_.call_method0(py, "create_future")?;
            if !this.copy_buf.is_empty() {
                let chunks = this.take_copy_chunks(py)?;
                if !matches!(this.op, Op::CopyOut) {
                    this.copy_buf = Vec::new(); // the last of it: give the memory back
                }
                this.resume_reading_if_paused(py, &mut fx);
                fx.push(Effect::Resolve(fut.clone_ref(py), chunks));
            } else if !matches!(this.op, Op::CopyOut) {
                fx.push(Effect::Resolve(fut.clone_ref(py), py.None()));
            } else if this.copy_reader.is_some() {
                return Err(interface_error(py, "copy_out_read() is already waiting"));
            } else {
                this.resume_reading_if_paused(py, &mut fx);
                this.copy_reader = Some(fut.clone_ref(py));
            }
            fut
        };
        run_effects(py, fx)?;
        Ok(fut)
    }

    /// Stop buffering COPY OUT data the caller no longer wants (its sink failed); the COPY
    /// still has to be cancelled or run to its end.
    fn copy_out_discard(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut fx = Vec::new();
        {
            let mut this = slf.borrow_mut();
            this.copy_discard = true;
            this.copy_buf = Vec::new();
            this.resume_reading_if_paused(py, &mut fx);
        }
        run_effects(py, fx)
    }

    /// Start `COPY ... FROM STDIN`. Returns `(ready, done)`: `ready` resolves when the
    /// server accepts data (or fails with the server's error), `done` at the end with the
    /// command tag.
    fn copy_in(slf: &Bound<'_, Self>, sql: String) -> PyResult<(PyObject, PyObject)> {
        let py = slf.py();
        let mut fx = Vec::new();
        let pair = {
            let mut this = slf.borrow_mut();
            this.check_ready(py)?;
            let mut out = BytesMut::with_capacity(sql.len() + 8);
            frontend::query(&sql, &mut out)
                .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
            let ready = this.loop_.call_method0(py, "create_future")?;
            let done = this.begin(
                py,
                Op::CopyIn {
                    ready: Some(ready.clone_ref(py)),
                },
                out,
                Some(sql),
                &mut fx,
            )?;
            (ready, done)
        };
        run_effects(py, fx)?;
        Ok(pair)
    }

    /// Send one CopyData message. Returns whether the transport asked us to pause: then
    /// await `drain()` before sending more.
    fn copy_in_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyBytes>) -> PyResult<bool> {
        let py = slf.py();
        let transport = {
            let this = slf.borrow();
            if !matches!(this.op, Op::CopyIn { .. }) {
                return Err(interface_error(py, "no COPY FROM STDIN in progress"));
            }
            this.transport(py)?
        };
        let bytes = data.as_bytes();
        let len = i32::try_from(bytes.len() + 4)
            .map_err(|_| interface_error(py, "a COPY data chunk must be under 2 GiB"))?;
        let mut head = BytesMut::with_capacity(5 + COPY_IN_COALESCE);
        head.put_u8(b'd');
        head.put_i32(len);
        if bytes.len() <= COPY_IN_COALESCE {
            head.put_slice(bytes);
            transport_write(py, &transport, &head)?;
        } else {
            // a big chunk goes out as it is, behind its header: no copy of it here
            transport_write_parts(py, &transport, &head, data)?;
        }
        Ok(slf.borrow().writing_paused)
    }

    /// End the COPY FROM STDIN successfully (CopyDone) or, with `error`, abort it (CopyFail).
    #[pyo3(signature = (error=None))]
    fn copy_in_end(slf: &Bound<'_, Self>, error: Option<&str>) -> PyResult<()> {
        let py = slf.py();
        let transport = {
            let this = slf.borrow();
            if !matches!(this.op, Op::CopyIn { .. }) {
                return Ok(());
            }
            this.transport(py)?
        };
        let mut out = BytesMut::with_capacity(64);
        match error {
            None => frontend::copy_done(&mut out),
            Some(msg) => frontend::copy_fail(msg, &mut out)
                .map_err(|e| interface_error(py, e.to_string()))?,
        }
        transport_write(py, &transport, &out)?;
        Ok(())
    }

    /// Register introspected types: `(oid, name, kind, related_oid, attr_names, attr_oids,
    /// schema)` tuples, dependencies first (see `Connection._introspect_types`).
    fn register_types(&mut self, py: Python<'_>, types: Vec<IntrospectedRow>) -> PyResult<()> {
        for (oid, name, kind, related, attr_names, attr_oids, schema) in types {
            let info = crate::pg::types::TypeInfo {
                oid,
                name,
                kind: kind.chars().next().unwrap_or('b'),
                related,
                attrs: attr_names.into_iter().zip(attr_oids).collect(),
                schema,
            };
            self.registry.register_type(py, &info)?;
        }
        Ok(())
    }

    /// Whether a codec for `oid` is known (builtin, introspected or custom).
    fn has_codec(&self, oid: u32) -> bool {
        self.registry.lookup(oid).is_some()
    }

    /// Forget introspected types (`reload_schema_state`).
    fn clear_types(&mut self) {
        self.registry.clear_introspected();
    }

    /// Use `encoder`/`decoder` for values of `oid`, exchanging `format` ('text', 'binary'
    /// or 'tuple') with them.
    #[allow(clippy::too_many_arguments)]
    fn set_custom_codec(
        &mut self,
        py: Python<'_>,
        oid: u32,
        name: &str,
        schema: &str,
        encoder: PyObject,
        decoder: PyObject,
        format: &str,
    ) -> PyResult<()> {
        self.registry
            .set_custom(py, oid, name, schema, (encoder, decoder), format)
    }

    /// Make `oid` use the builtin codec named `codec_name`; false if there is none.
    fn set_builtin_alias(
        &mut self,
        py: Python<'_>,
        oid: u32,
        name: &str,
        codec_name: &str,
    ) -> bool {
        match self.registry.builtin_by_name(codec_name) {
            Some(codec) => {
                self.registry.set_alias(py, oid, name, &codec);
                true
            }
            None => false,
        }
    }

    /// Drop a codec set with `set_custom_codec`/`set_builtin_alias`.
    fn reset_custom_codec(&mut self, oid: u32) {
        self.registry.reset_custom(oid);
    }

    /// The statement with its codecs looked up again (after new types became known).
    fn rebind_codecs(&self, py: Python<'_>, state: Py<StatementState>) -> PyResult<StatementState> {
        state.get().rebuilt(py, &self.registry)
    }

    /// Send Terminate. With `graceful`, leave the transport for the server to close (await
    /// `wait_closed()`); otherwise close it right away.
    #[pyo3(signature = (graceful=false))]
    fn terminate(slf: &Bound<'_, Self>, graceful: bool) -> PyResult<()> {
        let py = slf.py();
        let mut fx = Vec::new();
        {
            let mut this = slf.borrow_mut();
            if let Some(t) = this.transport.as_ref().map(|t| t.clone_ref(py)) {
                if this.phase != Phase::Closed {
                    let mut out = BytesMut::with_capacity(5);
                    frontend::terminate(&mut out);
                    fx.push(Effect::Write(t.clone_ref(py), out.freeze()));
                }
                if !graceful {
                    fx.push(Effect::CloseTransport(t));
                }
            }
            let err = py_error(py, "ConnectionDoesNotExistError", "connection was closed");
            this.on_lost = None;
            this.fail_connection_keep_transport(py, err, &mut fx);
        }
        run_effects(py, fx)
    }

    /// Close the transport at once, without Terminate.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let transport = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
        let mut fx = Vec::new();
        {
            let mut this = slf.borrow_mut();
            let err = py_error(
                py,
                "ConnectionDoesNotExistError",
                "connection was closed in the middle of operation",
            );
            this.on_lost = None;
            this.fail_connection(py, err, &mut fx);
        }
        // fail_connection asked for close(); abort() drops buffered output instead
        fx.retain(|f| !matches!(f, Effect::CloseTransport(_)));
        run_effects(py, fx)?;
        if let Some(t) = transport {
            t.call_method0(py, "abort")?;
        }
        Ok(())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PGProtocol>()?;
    m.add_class::<StatementState>()?;
    Ok(())
}
