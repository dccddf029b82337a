//! The query operations behind `PGProtocol`'s methods: each writes its messages, records in
//! `Op` what it waits for and returns the future resolved at `ReadyForQuery`.
//!
//! executemany is streamed: every argument row is encoded before anything of it is written,
//! Bind/Execute pairs go out in batches of about `EXECUTEMANY_FLUSH`, and one Sync ends the
//! whole pipeline (one round trip, atomic).

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::bind::{reparse_if_unnamed, write_bind, Site};
use super::effects::operation;
use super::statement::StatementState;
use super::{Op, PGProtocol, Phase, EXECUTEMANY_FLUSH};
use crate::pg::errors::interface_error;
use crate::runtime::transports::stream::transport_write;

/// What `executemany_add` tells its caller.
pub(super) mod executemany_status {
    /// Go on adding rows.
    pub const CONTINUE: u8 = 0;
    /// The transport asked us to pause: await `drain()` first.
    pub const PAUSED: u8 = 1;
    /// The server already reported an error: stop sending.
    pub const FAILED: u8 = 2;
    /// A batch just went to the transport: let the loop run once, so that an error the
    /// server sent meanwhile is read (a transport that never pauses would otherwise keep
    /// the whole iterable flowing to a server that already failed it).
    pub const FLUSHED: u8 = 3;

    /// The code for a sender that just added to the stream (executemany, pipelines).
    pub fn of(failed: bool, writing_paused: bool, flushed: bool) -> u8 {
        if failed {
            FAILED
        } else if writing_paused {
            PAUSED
        } else if flushed {
            FLUSHED
        } else {
            CONTINUE
        }
    }
}

fn invalid_query(py: Python<'_>, e: std::io::Error) -> PyErr {
    interface_error(py, format!("invalid query: {e}"))
}

fn io_fault(py: Python<'_>, e: std::io::Error) -> PyErr {
    interface_error(py, e.to_string())
}

fn open_statement(py: Python<'_>, st: &StatementState) -> PyResult<()> {
    if st.is_closed() {
        return Err(interface_error(py, "the prepared statement is closed"));
    }
    Ok(())
}

pub(super) fn prepare(
    slf: &Bound<'_, PGProtocol>,
    name: String,
    query: String,
) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(query.len() + 64);
        frontend::parse(&name, &query, std::iter::empty(), &mut out)
            .map_err(|e| invalid_query(py, e))?;
        frontend::describe(b'S', &name, &mut out).map_err(|e| io_fault(py, e))?;
        frontend::sync(&mut out);
        let q = Some(query.clone());
        let op = Op::Prepare {
            name,
            query,
            params: Vec::new(),
            columns: Vec::new(),
        };
        this.begin(py, op, out, q, fx)
    })
}

pub(super) fn bind_execute(
    slf: &Bound<'_, PGProtocol>,
    state: Py<StatementState>,
    args: &Bound<'_, PyAny>,
    portal: &str,
    limit: i32,
    record_class: Option<Py<PyType>>,
    want_rows: bool,
) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let st = state.get();
        open_statement(py, st)?;
        let mut out = BytesMut::with_capacity(256);
        reparse_if_unnamed(py, st, &mut out)?;
        write_bind(py, &mut out, portal, st, args, Site::Query)?;
        if st.name.is_empty() && !st.columns.is_empty() {
            // re-parsed since it was described: the server says what the rows are now, so
            // DDL in between cannot make us decode them with the old types' codecs
            frontend::describe(b'P', portal, &mut out).map_err(|e| io_fault(py, e))?;
        }
        frontend::execute(portal, limit, &mut out).map_err(|e| io_fault(py, e))?;
        frontend::sync(&mut out);
        this.begin_execute(py, state, record_class, want_rows, out, fx)
    })
}

pub(super) fn executemany_begin(
    slf: &Bound<'_, PGProtocol>,
    state: Py<StatementState>,
    record_class: Option<Py<PyType>>,
    want_rows: bool,
) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let st = state.get();
        open_statement(py, st)?;
        let mut out = BytesMut::new();
        reparse_if_unnamed(py, st, &mut out)?;
        this.many_buf.clear();
        this.many_count = 0;
        this.begin_execute(py, state, record_class, want_rows, out, fx)
    })
}

pub(super) fn executemany_add(
    slf: &Bound<'_, PGProtocol>,
    args: &Bound<'_, PyAny>,
) -> PyResult<u8> {
    let py = slf.py();
    let flush = {
        let mut this = slf.borrow_mut();
        let this = &mut *this;
        let Op::Execute { state, .. } = &this.op else {
            return Err(interface_error(py, "no executemany() in progress"));
        };
        let index = this.many_count;
        write_bind(
            py,
            &mut this.many_buf,
            "",
            state.get(),
            args,
            Site::Many(index),
        )?;
        frontend::execute("", 0, &mut this.many_buf).map_err(|e| io_fault(py, e))?;
        this.many_count += 1;
        if this.many_buf.len() >= EXECUTEMANY_FLUSH {
            let data = bytes::Bytes::copy_from_slice(&this.many_buf);
            this.many_buf.clear();
            Some((this.transport(py)?, data))
        } else {
            None
        }
    };
    let flushed = flush.is_some();
    if let Some((transport, data)) = flush {
        transport_write(py, &transport, &data)?;
    }
    let this = slf.borrow();
    Ok(executemany_status::of(
        this.error.is_some(),
        this.writing_paused,
        flushed,
    ))
}

pub(super) fn executemany_end(
    slf: &Bound<'_, PGProtocol>,
    failed: bool,
    rollback: bool,
) -> PyResult<()> {
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
        frontend::execute("__asyncpg_rs_abort__", 0, &mut out).map_err(|e| io_fault(py, e))?;
    }
    frontend::sync(&mut out);
    transport_write(py, &transport, &out)
}

pub(super) fn send_unawaited(slf: &Bound<'_, PGProtocol>, sql: &str, hold: bool) -> PyResult<()> {
    let py = slf.py();
    {
        let this = slf.borrow();
        this.check_ready(py)?;
        if this.xact_status != b'I' {
            return Err(interface_error(
                py,
                "send_unawaited: the connection is inside a transaction",
            ));
        }
    }
    write_unawaited(slf, sql, hold)
}

/// `send_unawaited(sql, hold=True)` where the connection is open, idle and outside a
/// transaction, else nothing: the pool's release asks "may the reset ride ahead of the next
/// query?" and sends it in one call instead of four. Returns whether it was sent.
pub(super) fn send_reset_if_idle(slf: &Bound<'_, PGProtocol>, sql: &str) -> PyResult<bool> {
    {
        let this = slf.borrow();
        if this.phase != Phase::Ready || !matches!(this.op, Op::Idle) || this.xact_status != b'I' {
            return Ok(false);
        }
    }
    write_unawaited(slf, sql, true)?;
    Ok(true)
}

/// The write of `send_unawaited`, its checks made.
fn write_unawaited(slf: &Bound<'_, PGProtocol>, sql: &str, hold: bool) -> PyResult<()> {
    let py = slf.py();
    let (transport, out, schedule_flush) = {
        let mut this = slf.borrow_mut();
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(sql, &mut out).map_err(|e| invalid_query(py, e))?;
        let transport = this.transport(py)?;
        this.unawaited += 1;
        if hold {
            let first = this.held.is_empty();
            this.held.extend_from_slice(&out);
            out.clear();
            (transport, out, first.then(|| this.loop_.clone_ref(py)))
        } else {
            let out = this.after_held(out);
            (transport, out, None)
        }
    };
    if let Some(loop_) = schedule_flush {
        // Two passes of the ready queue: a task woken by the release that held this (the
        // pool's next waiter) runs in the first and takes the held bytes along with its query.
        let flush = slf.getattr(pyo3::intern!(py, "flush_held"))?;
        let call_soon = loop_.getattr(py, pyo3::intern!(py, "call_soon"))?;
        loop_.call_method1(py, pyo3::intern!(py, "call_soon"), (call_soon, flush))?;
        return Ok(());
    }
    // outside the borrow: a write may reach back into the protocol (connection_lost)
    transport_write(py, &transport, &out)
}

pub(super) fn flush_held(slf: &Bound<'_, PGProtocol>) -> PyResult<()> {
    let py = slf.py();
    let (transport, out) = {
        let mut this = slf.borrow_mut();
        if this.held.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut this.held);
        match (&this.transport, this.phase) {
            (Some(t), Phase::Ready) if !this.transport_lost => (t.clone_ref(py), out),
            // the connection is gone or going: the held query would not be answered
            _ => return Ok(()),
        }
    };
    transport_write(py, &transport, &out)
}

pub(super) fn simple_query(slf: &Bound<'_, PGProtocol>, sql: String) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(&sql, &mut out).map_err(|e| invalid_query(py, e))?;
        this.begin(py, Op::Simple, out, Some(sql), fx)
    })
}

pub(super) fn close_statement(
    slf: &Bound<'_, PGProtocol>,
    state: Py<StatementState>,
) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(64);
        frontend::close(b'S', &state.get().name, &mut out).map_err(|e| io_fault(py, e))?;
        frontend::sync(&mut out);
        this.begin(py, Op::Close { state }, out, None, fx)
    })
}

pub(super) fn bind_portal(
    slf: &Bound<'_, PGProtocol>,
    state: Py<StatementState>,
    args: &Bound<'_, PyAny>,
    portal: &str,
) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let st = state.get();
        let mut out = BytesMut::with_capacity(256);
        reparse_if_unnamed(py, st, &mut out)?;
        write_bind(py, &mut out, portal, st, args, Site::Query)?;
        frontend::sync(&mut out);
        this.begin_execute(py, state, None, false, out, fx)
    })
}

pub(super) fn execute_portal(
    slf: &Bound<'_, PGProtocol>,
    state: Py<StatementState>,
    portal: &str,
    limit: i32,
    record_class: Option<Py<PyType>>,
) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(64);
        frontend::execute(portal, limit, &mut out).map_err(|e| io_fault(py, e))?;
        frontend::sync(&mut out);
        this.begin_execute(py, state, record_class, true, out, fx)
    })
}

pub(super) fn close_portal(slf: &Bound<'_, PGProtocol>, portal: &str) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(64);
        frontend::close(b'P', portal, &mut out).map_err(|e| io_fault(py, e))?;
        frontend::sync(&mut out);
        this.begin(py, Op::ClosePortal, out, None, fx)
    })
}
