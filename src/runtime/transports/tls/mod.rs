//! `TlsTransport`: TLS on our loop, compiled. It is the protocol of a stream transport (the
//! TCP connection, which keeps owning the socket, its write buffer and its back-pressure)
//! and the transport of the application's protocol, and drives Python's `ssl.SSLObject`
//! over two `ssl.MemoryBIO`s in between: every `SSLContext` option, certificate,
//! verification mode and ALPN behaves as with the stdlib, and the crypto stays in OpenSSL.
//!
//! asyncio's `sslproto.SSLProtocol` does the same in Python. Here the stream transport hands
//! ciphertext over as a Rust slice (this type is a native receiver, see `native`), the
//! plaintext goes to the application's protocol as a Rust slice too when that protocol is a
//! registered native one (the driver's), and the driver's writes arrive as slices
//! (`transport_write`): no Python frame between the socket and the driver. What is left is a
//! handful of C calls into `_ssl` per read event (one `incoming.write`, one `read` per TLS
//! record, one `outgoing.read`).
//!
//! The state machine and its observable behaviour (handshake and shutdown timeouts,
//! close_notify both ways, EOF during the handshake, `SSLWantReadError` while writing,
//! read and write flow control, `write_eof` unsupported) are asyncio's.
//!
//! This file holds the object, its state and its Python face; the handshake and shutdown
//! (`handshake_shutdown`), the read path (`read`), the write path (`write`) and the `ssl`
//! module's part (`sslobject`) each have their own.

mod handshake_shutdown;
mod read;
mod sslobject;
mod write;

use std::collections::VecDeque;

use pyo3::exceptions::{PyNotImplementedError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple};

use super::common::{
    call_soon_method, is_interrupt, presented_class, Mark, PauseAt, ProtocolContext, WaterMarks,
};
use crate::runtime::cell::GilCell;
use handshake_shutdown::{timeout, HANDSHAKE_TIMEOUT, SHUTDOWN_TIMEOUT};
pub(crate) use read::receive_ciphertext;
use read::{receiver_for, Receiver};
use sslobject::{names, Wrapped};
pub use write::tls_write;

/// asyncio's default water marks (`asyncio.constants`).
const READ_HIGH_WATER: usize = 256 * 1024;
const WRITE_HIGH_WATER: usize = 512 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Unwrapped,
    Handshake,
    Wrapped,
    Flushing,
    Shutdown,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AppPhase {
    Init,
    Made,
    Eof,
    Lost,
}

struct State {
    phase: Phase,
    app_phase: AppPhase,
    /// The stream transport carrying the ciphertext (set by `connection_made`).
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    receiver: Receiver,
    waiter: Option<Py<PyAny>>,
    /// Plaintext the `SSLObject` has not taken yet (written during the handshake, or
    /// refused with `SSLWantReadError` during a renegotiation).
    backlog: VecDeque<Vec<u8>>,
    backlog_size: usize,
    /// The application closed (or aborted) this transport.
    closed: bool,
    conn_lost: u32,
    eof_received: bool,
    /// The stream transport asked us to stop writing (its buffer is over its high mark).
    ssl_writing_paused: bool,
    app_reading_paused: bool,
    /// Undecrypted input's marks; paused: we paused the stream transport below.
    in_marks: WaterMarks,
    /// The backlog's and outgoing BIO's marks; paused: we paused the application's writing.
    out_marks: WaterMarks,
    handshake_timer: Option<Py<PyAny>>,
    shutdown_timer: Option<Py<PyAny>>,
}

impl State {
    /// The protocol and how bytes reach it change together; the old protocol is returned.
    fn swap_protocol(&mut self, new: Bound<'_, PyAny>, receiver: Receiver) -> Option<Py<PyAny>> {
        self.receiver = receiver;
        self.protocol.replace(new.unbind())
    }

    fn new(
        app_phase: AppPhase,
        protocol: Py<PyAny>,
        receiver: Receiver,
        waiter: Option<Py<PyAny>>,
    ) -> State {
        State {
            phase: Phase::Unwrapped,
            app_phase,
            transport: None,
            protocol: Some(protocol),
            receiver,
            waiter,
            backlog: VecDeque::new(),
            backlog_size: 0,
            closed: false,
            conn_lost: 0,
            eof_received: false,
            ssl_writing_paused: false,
            app_reading_paused: false,
            in_marks: WaterMarks::new(READ_HIGH_WATER, PauseAt::Reaching),
            out_marks: WaterMarks::new(WRITE_HIGH_WATER, PauseAt::Reaching),
            handshake_timer: None,
            shutdown_timer: None,
        }
    }
}

#[pyclass(module = "asyncpg_rs._native", frozen, weakref)]
pub struct TlsTransport {
    loop_obj: Py<PyAny>,
    sslobj: Py<PyAny>,
    /// The object the hot calls go to: `_ssl._SSLSocket` under a plain `ssl.SSLObject`
    /// (whose methods are Python functions forwarding to it), else the `SSLObject` itself
    /// (a context's `sslobject_class` may override them).
    hot: Py<PyAny>,
    /// `hot` is the `_ssl` object: its shutdown is `shutdown()`, not `unwrap()`.
    hot_is_c: bool,
    incoming: Py<PyAny>,
    outgoing: Py<PyAny>,
    extra: Py<PyDict>,
    /// Application callbacks run in the context current when the connection was created.
    context: ProtocolContext,
    handshake_timeout: f64,
    shutdown_timeout: f64,
    state: GilCell<State>,
}

impl TlsTransport {
    fn phase(&self, py: Python<'_>) -> Phase {
        self.state
            .try_borrow_mut(py)
            .map_or(Phase::Unwrapped, |st| st.phase)
    }

    fn set_phase(&self, py: Python<'_>, phase: Phase) -> PyResult<()> {
        self.state.borrow_mut(py)?.phase = phase;
        Ok(())
    }

    fn lower(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .try_borrow_mut(py)
            .and_then(|st| st.transport.as_ref().map(|t| t.clone_ref(py)))
    }

    fn app_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .try_borrow_mut(py)
            .and_then(|st| st.protocol.as_ref().map(|p| p.clone_ref(py)))
    }

    /// `protocol.<name>(*args)` in the connection's context (directly when already inside
    /// it: a context cannot be entered twice).
    fn call_app<'py>(
        slf: &Bound<'py, Self>,
        protocol: &Bound<'py, PyAny>,
        name: &Bound<'py, pyo3::types::PyString>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get()
            .context
            .run(slf.py(), || protocol.call_method1(name, args))
    }

    fn report(slf: &Bound<'_, Self>, err: &PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let ctx = PyDict::new(py);
        ctx.set_item("message", message)?;
        ctx.set_item("exception", err.value(py))?;
        ctx.set_item("transport", me.lower(py))?;
        ctx.set_item("protocol", slf)?;
        me.loop_obj
            .call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
        Ok(())
    }

    /// Close the connection below with `err`, and report `err` unless it is the network's
    /// doing (an `OSError`) or a cancellation.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_interrupt(py, &err) {
            return Err(err);
        }
        if let Some(lower) = slf.get().lower(py) {
            lower.call_method1(py, intern!(py, "_force_close"), (err.value(py),))?;
        }
        let quiet = err.is_instance_of::<pyo3::exceptions::PyOSError>(py)
            || names(py).is_ok_and(|n| err.is_instance(py, n.cancelled.bind(py)));
        if !quiet {
            Self::report(slf, &err, message)?;
        }
        Ok(())
    }
}

#[pymethods]
impl TlsTransport {
    #[new]
    #[pyo3(signature = (
        event_loop, app_protocol, sslcontext, waiter, server_side=false, server_hostname=None,
        call_connection_made=true, ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
        context=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        event_loop: Bound<'_, PyAny>,
        app_protocol: Bound<'_, PyAny>,
        sslcontext: Bound<'_, PyAny>,
        waiter: Option<Bound<'_, PyAny>>,
        server_side: bool,
        server_hostname: Option<Bound<'_, PyAny>>,
        call_connection_made: bool,
        ssl_handshake_timeout: Option<f64>,
        ssl_shutdown_timeout: Option<f64>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = event_loop.py();
        let handshake_timeout = timeout(
            "ssl_handshake_timeout",
            ssl_handshake_timeout,
            HANDSHAKE_TIMEOUT,
        )?;
        let shutdown_timeout = timeout(
            "ssl_shutdown_timeout",
            ssl_shutdown_timeout,
            SHUTDOWN_TIMEOUT,
        )?;
        let wrapped = Wrapped::new(py, sslcontext, server_side, server_hostname)?;
        let receiver = receiver_for(py, &app_protocol);
        // the context the caller passes (the one `connection_made` is scheduled in, or an
        // upgraded connection's own), else the current one
        let context = ProtocolContext::capture(py, context.as_ref())?;
        if let Some(w) = &waiter {
            if w.is_none() {
                return Err(PyTypeError::new_err("waiter must be a future or None"));
            }
        }
        let app_phase = if call_connection_made {
            AppPhase::Init
        } else {
            AppPhase::Made
        };
        let waiter = waiter.filter(|w| !w.is_none()).map(Bound::unbind);
        Ok(TlsTransport {
            loop_obj: event_loop.unbind(),
            sslobj: wrapped.sslobj,
            hot: wrapped.hot,
            hot_is_c: wrapped.hot_is_c,
            incoming: wrapped.incoming,
            outgoing: wrapped.outgoing,
            extra: wrapped.extra,
            context,
            handshake_timeout,
            shutdown_timeout,
            state: GilCell::new(State::new(
                app_phase,
                app_protocol.unbind(),
                receiver,
                waiter,
            )),
        })
    }

    /// The transport the application sees: this object (asyncio's ``SSLProtocol`` keeps a
    /// separate one; here one object plays both parts).
    #[getter]
    fn _app_transport(slf: &Bound<'_, Self>) -> Py<TlsTransport> {
        slf.clone().unbind()
    }

    /// The ``contextvars.Context`` protocol callbacks run in (``start_tls`` keeps it).
    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.object().clone_ref(py)
    }

    /// ``start_tls`` may upgrade this transport again (TLS inside TLS), as asyncio's.
    #[getter]
    fn _start_tls_compatible(&self) -> bool {
        true
    }

    // ------------------------------------------------------------ protocol side

    /// The stream transport below is connected: start the handshake.
    fn connection_made(slf: &Bound<'_, Self>, transport: Bound<'_, PyAny>) -> PyResult<()> {
        Self::start_handshake(slf, transport)
    }

    /// The stream transport below is gone.
    fn connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::on_connection_lost(slf, exc)
    }

    /// Ciphertext as bytes (the path for a transport below that is not ours).
    fn data_received(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data)?;
        let bytes = buffer.to_vec(slf.py())?;
        buffer.release(slf.py());
        Self::on_ciphertext(slf, &bytes)
    }

    /// The peer half-closed the TCP connection.
    fn eof_received(slf: &Bound<'_, Self>) -> PyResult<Option<bool>> {
        Self::on_eof_received(slf)
    }

    /// The stream transport's buffer is over its high mark.
    fn pause_writing(&self, py: Python<'_>) -> PyResult<()> {
        self.state.borrow_mut(py)?.ssl_writing_paused = true;
        Ok(())
    }

    /// The stream transport's buffer drained: send what the outgoing BIO holds.
    fn resume_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().state.borrow_mut(slf.py())?.ssl_writing_paused = false;
        Self::process_outgoing(slf)
    }

    fn _check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::check_handshake_timeout(slf)
    }

    fn _check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::check_shutdown_timeout(slf)
    }

    /// Continue after ``resume_reading``.
    fn _resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        match slf.get().phase(slf.py()) {
            Phase::Wrapped => Self::do_read(slf),
            Phase::Flushing => Self::do_flush(slf),
            Phase::Shutdown => Self::do_shutdown(slf),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------ transport side

    /// Encrypt and send ``data`` (bytes-like).
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_object(slf, data)
    }

    /// Encrypt and send each item of ``list_of_data`` in order.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_lines(slf, list_of_data)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let me = slf.get();
        me.state.borrow_mut(slf.py())?.out_marks.set(high, low)?;
        Self::control_app_writing(slf)
    }

    /// Whether the application's writing is paused (``loop.sendfile``'s fallback asks).
    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.state
            .try_borrow_mut(py)
            .is_some_and(|st| st.out_marks.paused())
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.out_marks.limits())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.write_buffer_size(py)
    }

    /// TLS transports cannot half-close (as asyncio's): raises ``NotImplementedError``.
    fn write_eof(&self) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(()))
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    /// Flush, send close_notify, wait for the peer's (at most ``ssl_shutdown_timeout``),
    /// then close the connection; the protocol gets ``connection_lost(None)``.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let already = {
            let mut st = slf.get().state.borrow_mut(slf.py())?;
            std::mem::replace(&mut st.closed, true)
        };
        if already {
            return Ok(());
        }
        Self::start_shutdown(slf)
    }

    /// Close now, dropping what is buffered.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().state.borrow_mut(slf.py())?.closed = true;
        Self::abort_inner(slf, None)
    }

    #[pyo3(signature = (exc=None))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        slf.get().state.borrow_mut(slf.py())?.closed = true;
        Self::abort_inner(slf, exc.filter(|e| !e.is_none()))
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.try_borrow_mut(py).is_none_or(|st| st.closed)
    }

    /// Stop delivering plaintext until :meth:`resume_reading`.
    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.state.borrow_mut(py)?.app_reading_paused = true;
        Ok(())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut st = slf.get().state.borrow_mut(py)?;
            if !st.app_reading_paused {
                return Ok(());
            }
            st.app_reading_paused = false;
        }
        call_soon_method(&slf.get().loop_obj, slf.as_any(), intern!(py, "_resume"))
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_read_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let me = slf.get();
        me.state.borrow_mut(slf.py())?.in_marks.set(high, low)?;
        Self::control_ssl_reading(slf)
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.state
            .try_borrow_mut(py)
            .is_some_and(|st| !st.app_reading_paused)
    }

    fn get_read_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.in_marks.limits())
    }

    fn get_read_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)
    }

    /// ``'ssl_object'``, ``'peercert'``, ``'cipher'``, ``'compression'``, ``'sslcontext'``,
    /// then whatever the connection below answers (``'socket'``, ``'peername'``, …).
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(v) = self.extra.bind(py).get_item(name)? {
            return Ok(v.unbind());
        }
        let default = default.unwrap_or_else(|| py.None());
        match self.lower(py) {
            Some(lower) => lower.call_method1(py, intern!(py, "get_extra_info"), (name, default)),
            None => Ok(default),
        }
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let how = receiver_for(py, &protocol);
        let old = self.state.borrow_mut(py)?.swap_protocol(protocol, how);
        // dropped with the state let go: the last reference may run Python
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.app_protocol(py).unwrap_or_else(|| py.None())
    }

    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_obj.clone_ref(py)
    }

    /// What `isinstance` sees: asyncio's `Transport`.
    #[getter(__class__)]
    fn presented_class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static TLS: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        presented_class(py, &TLS, "SSLTransport")
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.loop_obj)?;
        visit.call(&self.sslobj)?;
        visit.call(&self.hot)?;
        visit.call(&self.incoming)?;
        visit.call(&self.outgoing)?;
        visit.call(&self.extra)?;
        visit.call(self.context.object())?;
        if let Some(st) = self.state.try_borrow_for_gc() {
            for obj in [
                &st.transport,
                &st.protocol,
                &st.waiter,
                &st.handshake_timer,
                &st.shutdown_timer,
            ]
            .into_iter()
            .flatten()
            {
                visit.call(obj)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self, py: Python<'_>) {
        let dropped = self.state.try_borrow_mut(py).map(|mut st| {
            (
                st.transport.take(),
                st.protocol.take(),
                st.waiter.take(),
                st.handshake_timer.take(),
                st.shutdown_timer.take(),
            )
        });
        drop(dropped);
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.state.try_borrow_mut(py) {
            Some(st) => format!(
                "<TlsTransport {:?}{}>",
                st.phase,
                if st.closed { " closed" } else { "" }
            ),
            None => "<TlsTransport>".to_string(),
        }
    }
}
