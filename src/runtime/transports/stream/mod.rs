//! `StreamTransport`: a connected stream socket (TCP or Unix) as an asyncio transport.
//!
//! The reactor hands readiness straight to the transport, edge-triggered: it reads until the
//! kernel has no more (or a per-event budget is spent, then it continues on the next
//! iteration) and writes until the kernel stops taking bytes. Writes go out eagerly; what the
//! kernel does not take is buffered and flushed when the socket turns writable, with
//! `pause_writing`/`resume_writing` around the high/low water marks.
//!
//! Received bytes go to the protocol as asyncio prescribes: `get_buffer`/`buffer_updated` for
//! a `BufferedProtocol`, `data_received(bytes)` otherwise — and when the protocol's type was
//! registered as native (the driver's protocol, see `native`), as a Rust slice with no
//! Python call or bytes object at all.
//!
//! This file holds the object, its state and its Python face; the read path (`read`) and
//! the write path (`write`) have their own.

mod read;
mod write;

use std::os::fd::RawFd;

use bytes::BytesMut;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use super::common::{
    extra_info, is_interrupt, presented_class, release_descriptor, report,
    schedule_connection_lost, Mark, PauseAt, ProtocolContext, WaterMarks,
};
use crate::runtime::cell::GilCell;
use crate::runtime::event_loop::LoopCore;
use read::{receiver_for, Receiver};
use write::HeldBytes;
pub use write::{is_stream_transport, transport_write, transport_write_parts};

const DEFAULT_HIGH_WATER: usize = 64 * 1024;

struct State {
    protocol: Option<Py<PyAny>>,
    receiver: Receiver,
    write_buf: BytesMut,
    closing: bool,
    /// `_call_connection_lost` is scheduled or done.
    lost: bool,
    /// Writes attempted after the connection was lost (asyncio warns after a few).
    writes_after_lost: u32,
    eof_written: bool,
    eof_received: bool,
    reading_paused: bool,
    /// The socket reported readable and we have not read it dry yet.
    read_pending: bool,
    /// A `_read_ready` continuation is in the ready queue. One is enough: each read that
    /// leaves data behind used to queue another, so the queued reads multiplied while a large
    /// result streamed in and a loop iteration grew to megabytes of decoding, which is what a
    /// timeout or a concurrent task waited behind.
    read_continuation: bool,
    /// The peer hung up (EPOLLHUP/RDHUP): read until EOF, a short read proves nothing.
    peer_closed: bool,
    /// The last read brought at least `LARGE_READ` bytes: for a `data_received` protocol,
    /// receive the next one in place (see `read_buffer`).
    large_reads: bool,
    /// `loop.sendfile` owns the socket: a write now would land inside the file's bytes.
    sendfile_busy: bool,
    /// The write buffer's marks, and whether the protocol was told to pause writing.
    write_marks: WaterMarks,
    attached: bool,
    /// The reactor watches writability for us (only while data is buffered).
    write_armed: bool,
    /// Futures waiting for the write buffer to drain (`loop.sendfile`).
    empty_waiters: Vec<Py<PyAny>>,
}

impl State {
    /// The protocol and how bytes reach it change together; the old protocol is returned.
    fn swap_protocol(&mut self, new: Bound<'_, PyAny>, receiver: Receiver) -> Option<Py<PyAny>> {
        self.receiver = receiver;
        self.protocol.replace(new.unbind())
    }
}

/// `dict`: code that patches a transport's methods on the instance (tests mocking
/// `pause_reading`, APM agents) works as on asyncio's transports.
#[pyclass(module = "asyncpg_rs._native", frozen, weakref, dict)]
pub struct StreamTransport {
    loop_obj: Py<PyAny>,
    sock: Py<PyAny>,
    fd: RawFd,
    extra: Py<PyDict>,
    server: Option<Py<PyAny>>,
    endpoint: Endpoint,
    /// A write pipe's descriptor turns readable when its reader goes away: true for pipes
    /// and sockets only; a terminal turns readable when someone types.
    readable_means_hangup: bool,
    /// Where Python protocol callbacks run (see `ProtocolContext`).
    context: ProtocolContext,
    state: GilCell<State>,
}

/// What the descriptor is: a socket, or one end of a pipe (or a character device).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Socket,
    ReadPipe,
    WritePipe,
}

fn is_pipe_or_socket(fd: RawFd) -> bool {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open (the caller got it from the object's fileno) and `st` is writable.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK)
}

impl StreamTransport {
    /// Arm or disarm writability in the reactor when the buffer's emptiness changed.
    fn arm_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let wanted = {
            let mut st = me.state.borrow_mut(py)?;
            let wanted = !st.write_buf.is_empty() && !st.lost;
            if !st.attached || st.write_armed == wanted {
                return Ok(());
            }
            st.write_armed = wanted;
            wanted
        };
        match me.loop_obj.bind(py).downcast::<LoopCore>() {
            Ok(core) => core.get().set_transport_writing(py, me.fd, wanted),
            Err(_) => Ok(()),
        }
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .try_borrow_mut(py)
            .and_then(|s| s.protocol.as_ref().map(|p| p.clone_ref(py)))
    }

    fn peer_closed(&self, py: Python<'_>) -> bool {
        self.state
            .try_borrow_mut(py)
            .is_some_and(|st| st.peer_closed)
    }

    /// Report a failure the way asyncio's transports do, then close without flushing.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_interrupt(py, &err) {
            return Err(err);
        }
        let me = slf.get();
        // Connection resets and the like are the peer's doing, not a bug worth a log line.
        if !err.is_instance_of::<pyo3::exceptions::PyOSError>(py) {
            report(&me.loop_obj, slf.as_any(), me.protocol(py), &err, message)?;
        }
        Self::force_close(slf, Some(err.value(py).clone().into_any().unbind()))
    }

    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        schedule_connection_lost(&slf.get().loop_obj, slf.as_any(), exc)
    }

    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let dropped = {
            let mut st = me.state.borrow_mut(py)?;
            if st.lost {
                return Ok(());
            }
            st.closing = true;
            st.lost = true;
            std::mem::take(&mut st.write_buf)
        };
        drop(dropped);
        Self::schedule_connection_lost(slf, exc.unwrap_or_else(|| py.None()))
    }

    /// Readiness from the reactor.
    pub fn on_ready(
        slf: &Bound<'_, Self>,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> PyResult<()> {
        let endpoint = slf.get().endpoint;
        if endpoint == Endpoint::WritePipe {
            if readable && slf.get().readable_means_hangup {
                // A write end turns "readable" when the reader went away.
                let unsent = slf.get().state.borrow_mut(slf.py())?.write_buf.len();
                if unsent > 0 {
                    let err = pyo3::exceptions::PyBrokenPipeError::new_err(());
                    return Self::force_close(
                        slf,
                        Some(err.value(slf.py()).clone().into_any().unbind()),
                    );
                }
                return Self::close_inner(slf);
            }
            return if writable { Self::flush(slf) } else { Ok(()) };
        }
        let writable = writable && endpoint == Endpoint::Socket;
        if writable {
            Self::flush(slf)?;
        }
        if readable {
            let continuation_queued = match slf.get().state.borrow_mut(slf.py()) {
                Ok(mut st) => {
                    st.read_pending = true;
                    st.peer_closed |= read_closed;
                    st.read_continuation
                }
                Err(_) => false,
            };
            // the queued continuation reads it, in turn with the other ready callbacks
            if !continuation_queued {
                Self::read_ready(slf)?;
            }
        }
        Ok(())
    }

    fn close_inner(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let schedule = {
            let mut st = me.state.borrow_mut(py)?;
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if st.write_buf.is_empty() && !st.lost {
                st.lost = true;
                true
            } else {
                false
            }
        };
        if schedule {
            Self::schedule_connection_lost(slf, py.None())?;
        }
        Ok(())
    }

    /// A read pipe cannot write nor a write pipe read: asyncio's abstract transport methods
    /// raise `NotImplementedError` (its pipe transports lack the method), where ours would
    /// otherwise fail the pipe with EBADF (a write) or pause nothing (a read).
    fn check_direction(&self, forbidden: Endpoint, what: &str) -> PyResult<()> {
        if self.endpoint == forbidden {
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(format!(
                "this pipe transport cannot {what}: it is the pipe's other end"
            )));
        }
        Ok(())
    }

    /// The loop closed under us: forget the protocol without calling it.
    pub fn abandon(&self, py: Python<'_>) {
        let old = self.state.try_borrow_mut(py).map(|mut st| {
            st.closing = true;
            st.lost = true;
            st.protocol.take()
        });
        drop(old);
    }
}

#[pymethods]
impl StreamTransport {
    #[new]
    #[pyo3(signature = (event_loop, sock, protocol, extra, server=None, kind="socket", context=None))]
    fn new(
        event_loop: Bound<'_, PyAny>,
        sock: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        extra: Bound<'_, PyDict>,
        server: Option<Bound<'_, PyAny>>,
        kind: &str,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let endpoint = match kind {
            "socket" => Endpoint::Socket,
            "read_pipe" => Endpoint::ReadPipe,
            "write_pipe" => Endpoint::WritePipe,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown transport kind {other:?}"
                )))
            }
        };
        let py = event_loop.py();
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(PyValueError::new_err("the socket is closed"));
        }
        let receiver = receiver_for(py, &protocol);
        let readable_means_hangup = endpoint == Endpoint::WritePipe && is_pipe_or_socket(fd);
        let context = ProtocolContext::capture(py, context.as_ref())?;
        Ok(StreamTransport {
            loop_obj: event_loop.unbind(),
            sock: sock.unbind(),
            fd,
            extra: extra.unbind(),
            server: server.filter(|s| !s.is_none()).map(Bound::unbind),
            endpoint,
            readable_means_hangup,
            context,
            state: GilCell::new(State {
                protocol: Some(protocol.unbind()),
                receiver,
                write_buf: BytesMut::new(),
                closing: false,
                lost: false,
                writes_after_lost: 0,
                eof_written: false,
                eof_received: false,
                reading_paused: false,
                read_pending: false,
                read_continuation: false,
                peer_closed: false,
                large_reads: false,
                sendfile_busy: false,
                write_marks: WaterMarks::new(DEFAULT_HIGH_WATER, PauseAt::Above),
                attached: false,
                write_armed: false,
                empty_waiters: Vec::new(),
            }),
        })
    }

    /// Start watching the socket (after ``connection_made``).
    fn _start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        {
            let mut st = me.state.borrow_mut(py)?;
            if st.attached || st.lost {
                return Ok(());
            }
            st.attached = true;
        }
        me.loop_obj
            .call_method1(py, intern!(py, "_attach_transport"), (me.fd, slf))?;
        // data written before we were watched (in connection_made, say) still has to go
        Self::arm_write(slf)
    }

    /// Continue reading data the socket already reported (after a pause or a spent budget).
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::continue_reading(slf)
    }

    /// A future resolved once everything written so far has been handed to the kernel.
    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let waiter = me.loop_obj.call_method0(py, intern!(py, "create_future"))?;
        let mut st = me.state.borrow_mut(py)?;
        if st.lost {
            drop(st);
            let err = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            waiter.call_method1(py, intern!(py, "set_exception"), (err.value(py),))?;
        } else if st.write_buf.is_empty() {
            drop(st);
            waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
        } else {
            st.empty_waiters.push(waiter.clone_ref(py));
        }
        Ok(waiter)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (protocol, attached, waiters) = {
            let mut st = me.state.borrow_mut(py)?;
            let attached = std::mem::replace(&mut st.attached, false);
            (
                st.protocol.take(),
                attached,
                std::mem::take(&mut st.empty_waiters),
            )
        };
        for waiter in waiters {
            if !waiter
                .call_method0(py, intern!(py, "done"))?
                .is_truthy(py)?
            {
                let err =
                    pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
                waiter.call_method1(py, intern!(py, "set_exception"), (err.value(py),))?;
            }
        }
        let result = match &protocol {
            Some(p) => me
                .context
                .run(py, || {
                    p.call_method1(py, intern!(py, "connection_lost"), (exc,))
                })
                .map(drop),
            None => Ok(()),
        };
        release_descriptor(&me.loop_obj, &me.sock, &me.extra, me.fd, attached, py);
        if let Some(server) = &me.server {
            let _ = server.call_method1(py, intern!(py, "_detach"), (slf,));
        }
        // Let go of the protocol, as asyncio's transports do: protocols usually hold their
        // transport, and that cycle must not outlive the connection.
        drop(protocol);
        result
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.loop_obj)?;
        visit.call(&self.sock)?;
        visit.call(&self.extra)?;
        visit.call(self.context.object())?;
        if let Some(server) = &self.server {
            visit.call(server)?;
        }
        if let Some(st) = self.state.try_borrow_for_gc() {
            if let Some(p) = &st.protocol {
                visit.call(p)?;
            }
            for w in &st.empty_waiters {
                visit.call(w)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self, py: Python<'_>) {
        let dropped = self
            .state
            .try_borrow_mut(py)
            .map(|mut st| (st.protocol.take(), std::mem::take(&mut st.empty_waiters)));
        drop(dropped);
    }

    /// Send ``data`` (bytes-like); what the socket cannot take now is buffered.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        slf.get().check_direction(Endpoint::ReadPipe, "write")?;
        if data.is_instance_of::<pyo3::types::PyString>() {
            return Err(PyTypeError::new_err(
                "data argument must be a bytes-like object, not 'str'",
            ));
        }
        let held = HeldBytes::of(data)?;
        let pushed = Self::push_parts(slf, &[held.as_slice()]);
        held.release(slf.py());
        Self::finish_write(slf, pushed?)
    }

    /// Write each item of ``list_of_data`` in order.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        slf.get().check_direction(Endpoint::ReadPipe, "write")?;
        // every item's buffer held while the kernel reads it: one vectored write, no join
        let mut held = Vec::new();
        for item in list_of_data.try_iter()? {
            held.push(HeldBytes::of(&item?)?);
        }
        Self::write_objects(slf, held)
    }

    /// Close the write side once the buffer is flushed.
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        me.check_direction(Endpoint::ReadPipe, "write")?;
        if me.endpoint != Endpoint::Socket {
            // a pipe's end of file is its closing
            return Self::close_inner(slf);
        }
        let now = {
            let mut st = me.state.borrow_mut(py)?;
            if st.closing || st.eof_written {
                return Ok(());
            }
            st.eof_written = true;
            st.write_buf.is_empty()
        };
        if now {
            // SAFETY: plain syscall on our descriptor.
            unsafe { libc::shutdown(me.fd, libc::SHUT_WR) };
        }
        Ok(())
    }

    /// Stream sockets can half-close; a write pipe's EOF is its closing.
    fn can_write_eof(&self) -> bool {
        self.endpoint != Endpoint::ReadPipe
    }

    /// Set the write buffer's high and low water marks (bytes).
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let me = slf.get();
        me.state.borrow_mut(slf.py())?.write_marks.set(high, low)?;
        Self::after_write(slf)
    }

    /// ``loop.sendfile`` takes (``True``) or gives back the socket: meanwhile writes raise.
    fn _set_sendfile_busy(&self, py: Python<'_>, busy: bool) -> PyResult<()> {
        self.state.borrow_mut(py)?.sendfile_busy = busy;
        Ok(())
    }

    /// ``(low, high)`` water marks.
    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.write_marks.limits())
    }

    /// Bytes waiting to be sent.
    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.state.borrow_mut(py)?.write_buf.len())
    }

    /// Whether this is a socket (``loop.sendfile`` can use ``os.sendfile`` on it).
    #[getter]
    fn _is_socket(&self) -> bool {
        self.endpoint == Endpoint::Socket
    }

    /// Close after flushing buffered data; the protocol gets ``connection_lost(None)``.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_inner(slf)
    }

    /// Close now with ``exc`` for ``connection_lost`` (asyncio's SSL protocol calls this).
    #[pyo3(signature = (exc=None))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        Self::force_close(slf, exc.filter(|e| !e.is_none(slf.py())))
    }

    /// Close now, dropping buffered data.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    /// Whether the transport is closing or closed.
    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.try_borrow_mut(py).is_none_or(|st| st.closing)
    }

    /// Stop delivering received data until :meth:`resume_reading`.
    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.check_direction(Endpoint::WritePipe, "read")?;
        let mut st = self.state.borrow_mut(py)?;
        if !st.closing {
            st.reading_paused = true;
        }
        Ok(())
    }

    /// Deliver received data again.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        me.check_direction(Endpoint::WritePipe, "read")?;
        let pending = {
            let mut st = me.state.borrow_mut(py)?;
            if st.closing || !st.reading_paused {
                return Ok(());
            }
            st.reading_paused = false;
            st.read_pending
        };
        if pending {
            Self::queue_read_continuation(slf)?;
        }
        Ok(())
    }

    /// Whether received data is being delivered.
    fn is_reading(&self, py: Python<'_>) -> bool {
        self.state
            .try_borrow_mut(py)
            .is_some_and(|st| !st.closing && !st.reading_paused && !st.eof_received)
    }

    /// ``'peername'``, ``'sockname'``, ``'socket'``, … as asyncio's socket transports give.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        extra_info(py, &self.extra, name, default)
    }

    /// Replace the protocol that receives data (how STARTTLS-style upgrades work).
    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let how = receiver_for(py, &protocol);
        let old = self.state.borrow_mut(py)?.swap_protocol(protocol, how);
        // dropped with the state let go: the last reference may run Python
        drop(old);
        Ok(())
    }

    /// The current protocol.
    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol(py).unwrap_or_else(|| py.None())
    }

    /// The loop this transport runs on.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_obj.clone_ref(py)
    }

    /// The ``contextvars.Context`` protocol callbacks run in (``start_tls`` keeps it).
    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.object().clone_ref(py)
    }

    /// What `isinstance` sees: asyncio's `Transport`, `ReadTransport` or `WriteTransport`.
    #[getter(__class__)]
    fn presented_class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static SOCKET: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        static READ_PIPE: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        static WRITE_PIPE: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        match self.endpoint {
            Endpoint::Socket => presented_class(py, &SOCKET, "SocketTransport"),
            Endpoint::ReadPipe => presented_class(py, &READ_PIPE, "ReadPipeTransport"),
            Endpoint::WritePipe => presented_class(py, &WRITE_PIPE, "WritePipeTransport"),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.state.try_borrow_mut(py) {
            Some(st) => format!(
                "<StreamTransport fd={} {}{} bufsize={}>",
                self.fd,
                if st.lost {
                    "closed"
                } else if st.closing {
                    "closing"
                } else {
                    "open"
                },
                if st.reading_paused {
                    " read=paused"
                } else {
                    ""
                },
                st.write_buf.len()
            ),
            None => format!("<StreamTransport fd={}>", self.fd),
        }
    }
}
