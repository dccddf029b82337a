//! The PostgreSQL wire protocol as an asyncio `Protocol`.
//!
//! `PGProtocol` is driven by any asyncio transport (the stdlib loop's, uvloop's, ours) and
//! resolves futures made by `loop.create_future()`, so the driver runs on any loop. It never
//! awaits: each operation writes its messages, remembers what it is waiting for in `Op`, and
//! resolves its future at `ReadyForQuery`.
//!
//! This file holds the state and the one `#[pymethods]` block (pyo3 allows one per class),
//! whose methods only delegate. Each concern has its own file:
//! - `effects`: the borrow discipline. Transports call back into their protocol
//!   synchronously (`pause_writing` from inside `write`), so a method mutates the protocol
//!   inside a short borrow that collects `Effect`s and performs them after the borrow.
//! - `framing`: where one backend message ends, with every length checked before it sizes
//!   anything; `dispatch`: the message state machine; `server_error`: ErrorResponse fields
//!   to the asyncpg exception.
//! - `lifecycle`: starting operations, login, failing everything on connection loss;
//!   `ops`: the query operations; `bind`: Bind encoding; `copy_ops`: COPY in and out;
//!   `gc_pause`: the collector paused while a large read is decoded; `auth`: login exchanges;
//!   `pipeline`: many statements in flight, each with its own future.

use bytes::BytesMut;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyModule, PyType};

use crate::pg::types::CodecRegistry;
use crate::runtime::transports::native::register_native_receiver;

mod auth;
mod bind;
mod copy_ops;
mod dispatch;
mod effects;
mod framing;
mod gc_pause;
mod lifecycle;
mod messages;
mod ops;
mod pipeline;
mod server_error;
pub mod statement;
#[cfg(test)]
mod tests;

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
    /// Statements sent ahead of their replies, each with its own future (`pipeline`).
    Pipeline(Box<pipeline::Pipeline>),
}

/// A streamed executemany writes its messages in batches of about this size.
const EXECUTEMANY_FLUSH: usize = 128 * 1024;

/// COPY IN chunks up to this size are copied behind their header into one write; bigger
/// ones are written as they are.
const COPY_IN_COALESCE: usize = 16 * 1024;

/// Bytes buffered from a COPY OUT before we stop reading from the socket.
const COPY_OUT_HIGH_WATER: usize = 1 << 20;

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
    channel_binding: auth::Binding,
    registry: CodecRegistry,
    settings: Py<PyDict>,
    /// The server accepted the login (AuthenticationOk); the rest of startup may follow.
    authenticated: bool,
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
    /// Rows of a fetch whose caller gave up, freed a slice per read (see dispatch).
    abandoned_rows: Vec<PyObject>,
    /// Unawaited queries sent with `hold`, not written yet: they go out in front of the next
    /// operation's messages, or on their own a couple of loop passes later (`flush_held`).
    held: BytesMut,
}

#[pymethods]
impl PGProtocol {
    /// Create a protocol that logs in as `user` to `database` once attached to a transport.
    #[new]
    ///
    /// `channel_binding` is libpq's setting; `tls_server_end_point` the TLS session's
    /// binding data, computed by the caller, which sees the TLS layer.
    #[pyo3(signature = (
        r#loop, user, database, password=None, server_settings=None,
        channel_binding="prefer", tls_server_end_point=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        r#loop: PyObject,
        user: String,
        database: String,
        password: Option<String>,
        server_settings: Option<&Bound<'_, PyDict>>,
        channel_binding: &str,
        tls_server_end_point: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let binding_mode = auth::BindingMode::parse(channel_binding).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "invalid channel_binding value: {channel_binding:?}"
            ))
        })?;
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
            channel_binding: auth::Binding::new(binding_mode, tls_server_end_point),
            registry: CodecRegistry::new(),
            settings: PyDict::new(py).unbind(),
            authenticated: false,
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
            abandoned_rows: Vec::new(),
            held: BytesMut::new(),
        })
    }

    // ----- asyncio.Protocol -----

    /// asyncio callback: the transport is ready; starts the login.
    fn connection_made(slf: &Bound<'_, Self>, transport: PyObject) -> PyResult<()> {
        lifecycle::connection_made(slf, transport)
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
        lifecycle::connection_lost(slf, exc)
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
        lifecycle::resume_writing(slf)
    }

    // ----- state -----

    /// Future resolved when login completes (first ReadyForQuery).
    fn startup_waiter(&self, py: Python<'_>) -> PyObject {
        self.startup_fut.clone_ref(py)
    }

    /// Whether the server accepted the login (AuthenticationOk arrived), even if the
    /// startup has not finished yet.
    #[getter]
    fn authenticated(&self) -> bool {
        self.authenticated
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
        ops::prepare(slf, name, query)
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
        ops::bind_execute(slf, state, args, portal, limit, record_class, want_rows)
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
        ops::executemany_begin(slf, state, record_class, want_rows)
    }

    /// Encode one argument sequence of a streamed executemany; it is sent with the others
    /// once 128 KiB have gathered. Returns `EXECUTEMANY_CONTINUE` to go on,
    /// `EXECUTEMANY_PAUSED` when the transport asked us to pause (await `drain()`),
    /// `EXECUTEMANY_FAILED` when the server already reported an error (stop sending),
    /// `EXECUTEMANY_FLUSHED` when a batch went out (let the loop run once).
    fn executemany_add(slf: &Bound<'_, Self>, args: &Bound<'_, PyAny>) -> PyResult<u8> {
        ops::executemany_add(slf, args)
    }

    /// Finish a streamed executemany with Sync. With `failed` (the client side failed
    /// midway) rows not yet sent are dropped; with `rollback` too, the server is first made
    /// to fail the pipeline, so nothing of it is committed.
    #[pyo3(signature = (failed=false, rollback=false))]
    fn executemany_end(slf: &Bound<'_, Self>, failed: bool, rollback: bool) -> PyResult<()> {
        ops::executemany_end(slf, failed, rollback)
    }

    /// Open a pipeline (see `pipeline.rs`): add statements with `pipeline_prepare` and
    /// `pipeline_execute`, then `pipeline_end`. With `sync_each` every statement is followed
    /// by its own Sync; otherwise one Sync at the end makes it one implicit transaction. The
    /// future resolves once every reply is in (each statement's result goes to its own).
    fn pipeline_begin(slf: &Bound<'_, Self>, sync_each: bool) -> PyResult<PyObject> {
        pipeline::begin(slf, sync_each)
    }

    /// Parse and describe `query` as statement `name` inside the open pipeline (sent by the
    /// next `pipeline_flush`); the future resolves to its `StatementState`. `index` is the caller's statement
    /// number (0-based) for messages, `None` for the driver's own queries.
    #[pyo3(signature = (name, query, index=None))]
    fn pipeline_prepare(
        slf: &Bound<'_, Self>,
        name: String,
        query: String,
        index: Option<usize>,
    ) -> PyResult<PyObject> {
        pipeline::prepare(slf, name, query, index)
    }

    /// Bind `args` to `state` and execute it inside the open pipeline. Returns `(future,
    /// status)`: the future resolves to the rows (up to `limit`, 0 = all) or, without
    /// `want_rows`, to the command tag; `status` is an `EXECUTEMANY_*` code. A bad argument
    /// raises `DataError` naming statement `index` (0-based) before anything of it is sent.
    #[pyo3(signature = (state, args, limit=0, record_class=None, want_rows=true, index=None))]
    #[allow(clippy::too_many_arguments)]
    fn pipeline_execute(
        slf: &Bound<'_, Self>,
        state: Py<StatementState>,
        args: &Bound<'_, PyAny>,
        limit: i32,
        record_class: Option<Py<PyType>>,
        want_rows: bool,
        index: Option<usize>,
    ) -> PyResult<(PyObject, u8)> {
        pipeline::execute(slf, state, args, limit, record_class, want_rows, index)
    }

    /// Send what the open pipeline has buffered, asking the server for its replies so far;
    /// returns an `EXECUTEMANY_*` code.
    fn pipeline_flush(slf: &Bound<'_, Self>) -> PyResult<u8> {
        pipeline::flush(slf)
    }

    /// End the open pipeline. With `failed`, statements still buffered are dropped (their
    /// futures fail with `reason`); with `rollback` too, a one-Sync pipeline is rolled back.
    #[pyo3(signature = (failed=false, rollback=false, reason=None))]
    fn pipeline_end(
        slf: &Bound<'_, Self>,
        failed: bool,
        rollback: bool,
        reason: Option<String>,
    ) -> PyResult<()> {
        pipeline::end(slf, failed, rollback, reason)
    }

    /// Send `sql` as a simple query without waiting for it: the next operation may follow on
    /// the wire at once, and its caller sees only its own results. For the pool's session
    /// reset, which then costs no round trip. Outside a transaction only (the transaction
    /// status must be right the moment the call returns); if the query fails, the connection
    /// is closed.
    ///
    /// With `hold`, the query is written with the next operation's messages if one starts
    /// within the next couple of loop passes (a pool handing the connection straight to a
    /// waiting task), else on its own: one write and one server wake-up fewer per request.
    #[pyo3(signature = (sql, hold=false))]
    fn send_unawaited(slf: &Bound<'_, Self>, sql: &str, hold: bool) -> PyResult<()> {
        ops::send_unawaited(slf, sql, hold)
    }

    /// `send_unawaited(sql, hold=True)` if the connection is open, idle and outside a
    /// transaction; else nothing. Returns whether it was held for the next operation.
    fn send_reset_if_idle(slf: &Bound<'_, Self>, sql: &str) -> PyResult<bool> {
        ops::send_reset_if_idle(slf, sql)
    }

    /// Write what `send_unawaited(hold=True)` held back, if no operation took it along.
    fn flush_held(slf: &Bound<'_, Self>) -> PyResult<()> {
        ops::flush_held(slf)
    }

    /// Run `sql` with the simple-query protocol (several statements allowed); resolves to the
    /// last command tag.
    fn simple_query(slf: &Bound<'_, Self>, sql: String) -> PyResult<PyObject> {
        ops::simple_query(slf, sql)
    }

    /// Close the server-side statement.
    fn close_statement(slf: &Bound<'_, Self>, state: Py<StatementState>) -> PyResult<PyObject> {
        ops::close_statement(slf, state)
    }

    /// Bind `args` to `state` as the named `portal` without executing it (cursors).
    fn bind_portal(
        slf: &Bound<'_, Self>,
        state: Py<StatementState>,
        args: &Bound<'_, PyAny>,
        portal: &str,
    ) -> PyResult<PyObject> {
        ops::bind_portal(slf, state, args, portal)
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
        ops::execute_portal(slf, state, portal, limit, record_class)
    }

    /// Close a portal (cursor) before its transaction ends.
    fn close_portal(slf: &Bound<'_, Self>, portal: &str) -> PyResult<PyObject> {
        ops::close_portal(slf, portal)
    }

    /// Start `COPY ... TO STDOUT`; read the data with `copy_out_read`. Resolves to the
    /// command tag ('COPY n') once the server is done.
    fn copy_out(slf: &Bound<'_, Self>, sql: String) -> PyResult<PyObject> {
        copy_ops::copy_out(slf, sql)
    }

    /// Future of the next COPY OUT chunks (a list of bytes), or `None` once the COPY ended.
    fn copy_out_read(slf: &Bound<'_, Self>) -> PyResult<PyObject> {
        copy_ops::copy_out_read(slf)
    }

    /// Stop buffering COPY OUT data the caller no longer wants (its sink failed); the COPY
    /// still has to be cancelled or run to its end.
    fn copy_out_discard(slf: &Bound<'_, Self>) -> PyResult<()> {
        copy_ops::copy_out_discard(slf)
    }

    /// Start `COPY ... FROM STDIN`. Returns `(ready, done)`: `ready` resolves when the
    /// server accepts data (or fails with the server's error), `done` at the end with the
    /// command tag.
    fn copy_in(slf: &Bound<'_, Self>, sql: String) -> PyResult<(PyObject, PyObject)> {
        copy_ops::copy_in(slf, sql)
    }

    /// Send one CopyData message. Returns whether the transport asked us to pause: then
    /// await `drain()` before sending more.
    fn copy_in_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyBytes>) -> PyResult<bool> {
        copy_ops::copy_in_data(slf, data)
    }

    /// End the COPY FROM STDIN successfully (CopyDone) or, with `error`, abort it (CopyFail).
    #[pyo3(signature = (error=None))]
    fn copy_in_end(slf: &Bound<'_, Self>, error: Option<&str>) -> PyResult<()> {
        copy_ops::copy_in_end(slf, error)
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
        lifecycle::terminate(slf, graceful)
    }

    /// Close the transport at once, without Terminate.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        lifecycle::abort(slf)
    }
}

/// The transports' native receive path for `PGProtocol` (see `runtime::transports::native`).
fn receive_native(protocol: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<()> {
    PGProtocol::receive(protocol.downcast::<PGProtocol>()?, data)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PGProtocol>()?;
    register_native_receiver(&m.py().get_type::<PGProtocol>(), receive_native);
    m.add("EXECUTEMANY_CONTINUE", ops::executemany_status::CONTINUE)?;
    m.add("EXECUTEMANY_PAUSED", ops::executemany_status::PAUSED)?;
    m.add("EXECUTEMANY_FAILED", ops::executemany_status::FAILED)?;
    m.add("EXECUTEMANY_FLUSHED", ops::executemany_status::FLUSHED)?;
    m.add_class::<StatementState>()?;
    Ok(())
}
