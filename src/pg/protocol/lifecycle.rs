//! The connection's life: starting an operation, login, and failing everything pending when
//! the connection goes away (lost, terminated, aborted, or a fatal server error).
//!
//! A lost connection fails the waiter, the idle, drain and COPY waiters in one go, after the
//! connection's own cleanup callback (`on_lost`), so callers resume to a consistent
//! connection. A FATAL server error is reported rather than a bare "connection lost".

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::effects::{run_effects, with_effects, Effect};
use super::server_error::conn_lost_error;
use super::statement::StatementState;
use super::{Op, PGProtocol, Phase};
use crate::pg::errors::{interface_error, Exc};

impl PGProtocol {
    pub(super) fn transport(&self, py: Python<'_>) -> PyResult<PyObject> {
        match &self.transport {
            Some(t) => Ok(t.clone_ref(py)),
            None => Err(interface_error(py, "the protocol has no transport")),
        }
    }

    /// `out` behind what `send_unawaited(hold=True)` held back, which must reach the server
    /// first: every operation that starts while bytes are held sends them this way.
    pub(super) fn after_held(&mut self, out: BytesMut) -> BytesMut {
        if self.held.is_empty() {
            return out;
        }
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(&out);
        all
    }

    pub(super) fn check_ready(&self, py: Python<'_>) -> PyResult<()> {
        match self.phase {
            Phase::Ready => {}
            Phase::Closed => {
                return Err(Exc::ConnectionDoesNotExistError.err(py, "connection is closed"))
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
    pub(super) fn begin(
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
        let out = self.after_held(out);
        if !out.is_empty() {
            fx.push(Effect::Write(transport, out.freeze()));
        }
        Ok(fut)
    }

    /// Send `out` and wait for an Execute-like operation on `state` to finish.
    pub(super) fn begin_execute(
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

    /// The connection is unusable: fail everything pending and close the transport.
    pub(super) fn fail_connection(&mut self, py: Python<'_>, err: PyErr, fx: &mut Vec<Effect>) {
        self.fail_connection_keep_transport(py, err, fx);
        if let Some(t) = self.transport.as_ref() {
            fx.push(Effect::CloseTransport(t.clone_ref(py)));
        }
    }

    /// The connection is unusable from now on: fail everything pending. The transport is
    /// left alone (a graceful Terminate waits for the server to close it).
    pub(super) fn fail_connection_keep_transport(
        &mut self,
        py: Python<'_>,
        err: PyErr,
        fx: &mut Vec<Effect>,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        let op = std::mem::replace(&mut self.op, Op::Idle);
        // A FATAL ErrorResponse (e.g. AdminShutdown from pg_terminate_backend) says more than
        // "connection lost": the pending operation gets the server's own error, also when it
        // arrived while a query sent ahead (send_unawaited) was still being answered.
        let from_server = self.error.take().or_else(|| self.unawaited_error.take());
        let err = match from_server {
            Some(server_err) if self.waiter.is_some() => {
                // asyncpg's shape: "closed in the middle of operation: <server's reason>",
                // with the server's error as the cause
                let reason = server_err.value(py).to_string();
                let wrapped = Exc::ConnectionDoesNotExistError.err(
                    py,
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
        if let Op::Pipeline(p) = op {
            p.reject_all(py, &err, fx);
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

    pub(super) fn write_startup(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) -> PyResult<()> {
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

    pub(super) fn record_error(&mut self, err: PyErr) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }
}

/// `PGProtocol.connection_made`: keep the transport and start the login.
pub(super) fn connection_made(slf: &Bound<'_, PGProtocol>, transport: PyObject) -> PyResult<()> {
    let py = slf.py();
    with_effects(slf, |this, fx| {
        this.transport = Some(transport);
        if this.phase == Phase::AwaitingTransport {
            this.write_startup(py, fx)?;
        }
        Ok(())
    })
}

/// `PGProtocol.connection_lost`: every pending await fails, `exc` as the cause.
pub(super) fn connection_lost(slf: &Bound<'_, PGProtocol>, exc: Option<PyObject>) -> PyResult<()> {
    let py = slf.py();
    with_effects(slf, |this, fx| {
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
        this.fail_connection(py, err, fx);
        this.transport = None;
        this.transport_lost = true;
        for w in this.closed_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
        Ok(())
    })
}

/// `PGProtocol.resume_writing`: drain waiters go on.
pub(super) fn resume_writing(slf: &Bound<'_, PGProtocol>) -> PyResult<()> {
    let py = slf.py();
    with_effects(slf, |this, fx| {
        this.writing_paused = false;
        for w in this.drain_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
        Ok(())
    })
}

/// `PGProtocol.terminate`: Terminate, then close now or (graceful) let the server close.
pub(super) fn terminate(slf: &Bound<'_, PGProtocol>, graceful: bool) -> PyResult<()> {
    let py = slf.py();
    with_effects(slf, |this, fx| {
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
        let err = Exc::ConnectionDoesNotExistError.err(py, "connection was closed");
        this.on_lost = None;
        this.fail_connection_keep_transport(py, err, fx);
        Ok(())
    })
}

/// `PGProtocol.abort`: fail everything and drop the transport's buffered output.
pub(super) fn abort(slf: &Bound<'_, PGProtocol>) -> PyResult<()> {
    let py = slf.py();
    let transport = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
    let mut fx = Vec::new();
    {
        let mut this = slf.borrow_mut();
        this.on_lost = None;
        this.fail_connection(py, conn_lost_error(py), &mut fx);
    }
    // fail_connection asked for close(); abort() drops buffered output instead
    fx.retain(|f| !matches!(f, Effect::CloseTransport(_)));
    run_effects(py, fx)?;
    if let Some(t) = transport {
        t.call_method0(py, "abort")?;
    }
    Ok(())
}
