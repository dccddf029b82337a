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

use std::io;
use std::os::fd::RawFd;

use bytes::{Buf, BytesMut};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict};

use super::common::{
    extra_info, is_interrupt, presented_class, release_descriptor, report,
    schedule_connection_lost, Crossing, Mark, PauseAt, ProtocolContext, WaterMarks,
};
use super::native::{native_receiver, NativeReceive};
use crate::runtime::cell::GilCell;
use crate::runtime::event_loop::LoopCore;
use crate::runtime::read_buffer::{
    bytes_filled_by, give_back_read_buffer, large_backlog, take_read_buffer, LARGE_READ, READ_CHUNK,
};

/// Full reads per readiness event before yielding to other work for an iteration. One, as
/// the stdlib loop does: a read is up to `READ_CHUNK` bytes, and the protocol decodes what it
/// got before the loop moves on, so a backlog (a big fetch) read four times in a row kept
/// timers and ready callbacks (a `wait_for` timeout, the cancellation it starts) waiting for
/// a megabyte of decoding per iteration. A short read still ends the event at once.
const READS_PER_EVENT: usize = 1;
const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// How received bytes reach the protocol.
enum Receiver {
    /// A protocol written in Rust: bytes go to it as a slice through this function.
    Native(NativeReceive),
    Buffered,
    Plain,
}

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

fn receiver_for(py: Python<'_>, protocol: &Bound<'_, PyAny>) -> Receiver {
    if let Some(receive) = native_receiver(protocol) {
        return Receiver::Native(receive);
    }
    if protocol.hasattr(intern!(py, "get_buffer")).unwrap_or(false)
        && protocol
            .hasattr(intern!(py, "buffer_updated"))
            .unwrap_or(false)
    {
        Receiver::Buffered
    } else {
        Receiver::Plain
    }
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

fn recv(endpoint: Endpoint, fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` points to at least `len` writable bytes owned by the caller.
        let n = unsafe {
            if endpoint == Endpoint::Socket {
                libc::recv(fd, buf.cast(), len, 0)
            } else {
                libc::read(fd, buf.cast(), len)
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn send(endpoint: Endpoint, fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is a valid slice; MSG_NOSIGNAL turns SIGPIPE into EPIPE (pipes rely
        // on Python ignoring SIGPIPE, as asyncio's pipe transports do).
        let n = unsafe {
            if endpoint == Endpoint::Socket {
                libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL)
            } else {
                libc::write(fd, data.as_ptr().cast(), data.len())
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Most slices one vectored write hands the kernel (Linux's IOV_MAX); the rest is buffered.
const MAX_IOVECS: usize = 1024;

/// `sendmsg`/`writev` of the parts in order; returns how many bytes the kernel took.
fn send_vectored(endpoint: Endpoint, fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .take(MAX_IOVECS)
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    loop {
        // SAFETY: every iovec points into a slice borrowed for the whole call; the kernel
        // only reads from them. MSG_NOSIGNAL as in `send`.
        let n = unsafe {
            if endpoint == Endpoint::Socket {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iov.len() as _;
                libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
            } else {
                libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int)
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What a write did with its data.
enum Pushed {
    /// All of it went to the kernel (or nowhere: the connection is lost).
    Sent,
    /// Some waits in the buffer.
    Buffered,
    Failed(io::Error),
}

/// A bytes-like object's contents, borrowed in place for a write (copied only when the
/// buffer is not contiguous).
enum HeldBytes<'py> {
    Bytes(Bound<'py, PyBytes>),
    View(PyBuffer<u8>),
    Copied(Vec<u8>),
}

impl<'py> HeldBytes<'py> {
    fn of(data: &Bound<'py, PyAny>) -> PyResult<HeldBytes<'py>> {
        if let Ok(b) = data.downcast::<PyBytes>() {
            return Ok(HeldBytes::Bytes(b.clone()));
        }
        match PyBuffer::<u8>::get(data) {
            Ok(view) if view.is_c_contiguous() => Ok(HeldBytes::View(view)),
            Ok(view) => {
                let copy = view.to_vec(data.py());
                view.release(data.py());
                copy.map(HeldBytes::Copied)
            }
            Err(_) => Err(not_bytes_like(data)),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            HeldBytes::Bytes(b) => b.as_bytes(),
            // SAFETY: the view pins a contiguous buffer of `len_bytes` bytes until released.
            HeldBytes::View(v) => unsafe {
                std::slice::from_raw_parts(v.buf_ptr() as *const u8, v.len_bytes())
            },
            HeldBytes::Copied(c) => c,
        }
    }

    fn release(self, py: Python<'py>) {
        if let HeldBytes::View(v) = self {
            v.release(py);
        }
    }
}

fn not_bytes_like(data: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {:?}",
        data.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    ))
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

    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        for _ in 0..READS_PER_EVENT {
            let (protocol, native) = {
                let st = me.state.borrow_mut(py)?;
                if !st.read_pending || st.closing || st.reading_paused || st.eof_received {
                    return Ok(());
                }
                let Some(protocol) = st.protocol.as_ref().map(|p| p.clone_ref(py)) else {
                    return Ok(());
                };
                let native = match &st.receiver {
                    Receiver::Native(receive) => Some(Some(*receive)),
                    Receiver::Buffered => None,
                    Receiver::Plain => Some(None),
                };
                (protocol, native)
            };
            // Python protocols are called in the connection's context; the native one is not
            // (no Python runs there), which keeps its per-read path free of the enter/exit.
            let drained = match native {
                None => me.context.run(py, || {
                    Self::read_into_protocol_buffer(slf, protocol.bind(py))
                })?,
                Some(None) => me
                    .context
                    .run(py, || Self::read_chunk(slf, protocol.bind(py), None))?,
                Some(native) => Self::read_chunk(slf, protocol.bind(py), native)?,
            };
            if drained {
                return Ok(());
            }
        }
        // Budget spent with data still waiting: continue next iteration, after other work.
        Self::queue_read_continuation(slf)
    }

    /// Queue one `_read_ready` unless one is queued already.
    fn queue_read_continuation(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        {
            let mut st = me.state.borrow_mut(py)?;
            if st.read_continuation {
                return Ok(());
            }
            st.read_continuation = true;
        }
        let queued = me.loop_obj.call_method1(
            py,
            intern!(py, "call_soon"),
            (slf.getattr(intern!(py, "_read_ready"))?,),
        );
        if queued.is_err() {
            if let Ok(mut st) = me.state.borrow_mut(py) {
                st.read_continuation = false;
            }
        }
        queued.map(drop)
    }

    /// One read into our buffer, handed over as a slice (a native protocol) or bytes. Returns
    /// whether the socket is read dry (or the transport is done reading).
    fn read_chunk(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        native: Option<NativeReceive>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        if native.is_none() {
            let large = me.state.borrow_mut(py).is_ok_and(|st| st.large_reads);
            if let Some(waiting) = large.then(|| large_backlog(me.fd)).flatten() {
                if let Some(drained) = Self::read_in_place(slf, protocol, waiting)? {
                    return Ok(drained);
                }
            }
        }
        let mut buf = take_read_buffer();
        let result = recv(me.endpoint, me.fd, buf.as_mut_ptr(), buf.capacity());
        let capacity = buf.capacity();
        let outcome = Self::after_recv(slf, protocol, result, capacity, "data_received", |n| {
            // SAFETY: recv initialised the first `n` bytes of the allocation.
            let data = unsafe { std::slice::from_raw_parts(buf.as_ptr(), n) };
            match native {
                Some(receive) => receive(protocol, data),
                None => {
                    if let Ok(mut st) = me.state.borrow_mut(py) {
                        st.large_reads = n >= LARGE_READ;
                    }
                    protocol
                        .call_method1(intern!(py, "data_received"), (PyBytes::new(py, data),))
                        .map(drop)
                }
            }
        });
        give_back_read_buffer(buf);
        outcome
    }

    /// A large read for `data_received`: the `waiting` bytes (at most `READ_CHUNK` of them, as
    /// any read) straight into their bytes object. Reading all that was there drains the
    /// socket (what arrives later raises a new edge); reading part of it does not.
    /// `None` when that object could not be allocated (then the shared buffer serves).
    fn read_in_place(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        waiting: usize,
    ) -> PyResult<Option<bool>> {
        let py = slf.py();
        let me = slf.get();
        let wanted = waiting.min(READ_CHUNK);
        // `after_recv` counts a read short of its capacity as draining the socket
        let capacity = if waiting > wanted { wanted } else { usize::MAX };
        let result = bytes_filled_by(py, wanted, |at, len| recv(me.endpoint, me.fd, at, len));
        let (result, data) = match result {
            Ok(bytes) => (Ok(bytes.len()?), Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Ok(None),
            Err(e) => (Err(e), None),
        };
        Self::after_recv(slf, protocol, result, capacity, "data_received", |n| {
            if let Ok(mut st) = me.state.borrow_mut(py) {
                st.large_reads = n >= LARGE_READ;
            }
            match data {
                Some(bytes) => protocol
                    .call_method1(intern!(py, "data_received"), (bytes,))
                    .map(drop),
                None => Ok(()),
            }
        })
        .map(Some)
    }

    fn read_into_protocol_buffer(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let target = match protocol.call_method1(intern!(py, "get_buffer"), (-1,)) {
            Ok(t) => t,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
                .map(|_| true)
            }
        };
        let buffer = match PyBuffer::<u8>::get(&target) {
            Ok(b) if !b.readonly() && b.is_c_contiguous() && b.len_bytes() > 0 => b,
            Ok(_) => {
                let err =
                    PyRuntimeError::new_err("get_buffer() returned an empty or read-only buffer");
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
                .map(|_| true);
            }
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
                .map(|_| true)
            }
        };
        let len = buffer.len_bytes();
        let result = recv(me.endpoint, me.fd, buffer.buf_ptr().cast(), len);
        buffer.release(py);
        drop(target);
        Self::after_recv(slf, protocol, result, len, "buffer_updated", |n| {
            protocol
                .call_method1(intern!(py, "buffer_updated"), (n,))
                .map(drop)
        })
    }

    /// What one receive of at most `capacity` bytes led to: EOF, data for the protocol
    /// (`deliver`), nothing more to read, or a failure. Returns whether the socket is read
    /// dry (or reading is over).
    fn after_recv(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        result: io::Result<usize>,
        capacity: usize,
        callback: &str,
        deliver: impl FnOnce(usize) -> PyResult<()>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        match result {
            Ok(0) => Self::on_eof(slf, protocol).map(|_| true),
            Ok(n) => match deliver(n) {
                Ok(()) => Ok(n < capacity && !me.peer_closed(py)),
                Err(err) => {
                    let message = format!("Fatal error: protocol.{callback}() call failed.");
                    Self::fatal_error(slf, err, &message).map(|_| true)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Ok(mut st) = me.state.borrow_mut(py) {
                    st.read_pending = false;
                }
                Ok(true)
            }
            Err(e) => Self::fatal_error(slf, e.into(), "Fatal read error on socket transport")
                .map(|_| true),
        }
    }

    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let native = {
            let mut st = slf.get().state.borrow_mut(py)?;
            st.eof_received = true;
            st.read_pending = false;
            matches!(st.receiver, Receiver::Native(_))
        };
        let eof_received = || protocol.call_method0(intern!(py, "eof_received"));
        // the other receivers reach here inside the context already (`read_ready`)
        let outcome = if native {
            slf.get().context.run(py, eof_received)
        } else {
            eof_received()
        };
        match outcome {
            Ok(keep_open) => {
                // A pipe closes at EOF whatever the protocol says, as asyncio's pipes do.
                if slf.get().endpoint != Endpoint::Socket || !keep_open.is_truthy().unwrap_or(false)
                {
                    Self::close_inner(slf)?;
                }
                Ok(())
            }
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.eof_received() call failed.",
            ),
        }
    }

    fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let outcome = {
            let mut st = me.state.borrow_mut(py)?;
            let mut outcome = Ok(());
            while !st.write_buf.is_empty() {
                match send(me.endpoint, me.fd, &st.write_buf) {
                    Ok(n) => st.write_buf.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            outcome
        };
        if let Err(e) = outcome {
            return Self::fatal_error(slf, e.into(), "Fatal write error on socket transport");
        }
        Self::after_write(slf)
    }

    /// New `write_marks` (`set_*_buffer_limits`): they may pause or resume at once.
    fn set_write_marks(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let mut st = slf.get().state.borrow_mut(slf.py())?;
        st.write_marks.set(high, low)?;
        drop(st);
        Self::after_write(slf)
    }

    /// Flow control and deferred close/EOF once the buffer changed.
    fn after_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::arm_write(slf)?;
        let py = slf.py();
        let me = slf.get();
        let drained = {
            let mut st = me.state.borrow_mut(py)?;
            if st.write_buf.is_empty() {
                std::mem::take(&mut st.empty_waiters)
            } else {
                Vec::new()
            }
        };
        for waiter in drained {
            if !waiter
                .call_method0(py, intern!(py, "done"))?
                .is_truthy(py)?
            {
                waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
            }
        }
        enum Next {
            Nothing,
            Pause(Py<PyAny>),
            Resume(Py<PyAny>),
        }
        let (next, shutdown, closing) = {
            let mut st = me.state.borrow_mut(py)?;
            let size = st.write_buf.len();
            let mut shutdown = false;
            // Resume before a closing transport counts as done: the protocol may still have
            // data for it (SSLProtocol's close_notify and the records queued behind a
            // pause), and asyncio's transports take it and flush it before connection_lost.
            let next = match (st.write_marks.crossing(size), &st.protocol) {
                (Some(Crossing::Pause), Some(p)) => Next::Pause(p.clone_ref(py)),
                (Some(Crossing::Resume), Some(p)) => Next::Resume(p.clone_ref(py)),
                _ => Next::Nothing,
            };
            if size == 0 && st.eof_written && !st.closing {
                shutdown = true;
            }
            (next, shutdown, st.closing)
        };
        if shutdown {
            // SAFETY: plain syscall on our descriptor.
            unsafe { libc::shutdown(me.fd, libc::SHUT_WR) };
        }
        let (result, what) = match next {
            // an open transport's every write passes here: no second look at the state
            Next::Nothing if !closing => return Ok(()),
            Next::Nothing => return Self::lost_if_closed_and_flushed(slf),
            Next::Pause(p) => (
                me.context
                    .run(py, || p.call_method0(py, intern!(py, "pause_writing"))),
                "protocol.pause_writing() failed",
            ),
            Next::Resume(p) => (
                me.context
                    .run(py, || p.call_method0(py, intern!(py, "resume_writing"))),
                "protocol.resume_writing() failed",
            ),
        };
        if let Err(err) = result {
            if is_interrupt(py, &err) {
                return Err(err);
            }
            report(&me.loop_obj, slf.as_any(), None, &err, what)?;
        }
        Self::lost_if_closed_and_flushed(slf)
    }

    /// A closing transport whose buffer is empty (after the protocol had its chance to add
    /// more) is done: `connection_lost` follows.
    fn lost_if_closed_and_flushed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let done = {
            let mut st = slf.get().state.borrow_mut(py)?;
            let done = st.write_buf.is_empty() && st.closing && !st.lost;
            if done {
                st.lost = true;
            }
            done
        };
        if done {
            Self::schedule_connection_lost(slf, py.None())?;
        }
        Ok(())
    }

    /// Write from Rust: the driver's fast path and `write()` both end here.
    pub fn write_slice(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        Self::write_parts(slf, &[data])
    }

    /// Write the parts in order: at once with one vectored system call when nothing is
    /// buffered, and what the kernel does not take into the buffer.
    pub fn write_parts(slf: &Bound<'_, Self>, parts: &[&[u8]]) -> PyResult<()> {
        let pushed = Self::push_parts(slf, parts)?;
        Self::finish_write(slf, pushed)
    }

    /// The part of a write that reads the data (callers lending Python buffers release them
    /// before `finish_write` runs protocol callbacks, which might resize those objects).
    fn push_parts(slf: &Bound<'_, Self>, parts: &[&[u8]]) -> PyResult<Pushed> {
        let py = slf.py();
        let me = slf.get();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(Pushed::Sent);
        }
        let mut st = me.state.borrow_mut(py)?;
        if st.eof_written {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        if st.sendfile_busy {
            return Err(PyRuntimeError::new_err(
                "unable to write; sendfile is in progress",
            ));
        }
        if st.lost {
            st.writes_after_lost += 1;
            return Ok(Pushed::Sent);
        }
        let mut sent = 0;
        if st.write_buf.is_empty() {
            let result = match parts {
                [one] => send(me.endpoint, me.fd, one),
                _ => send_vectored(me.endpoint, me.fd, parts),
            };
            match result {
                Ok(n) => sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Ok(Pushed::Failed(e)),
            }
            if sent == total {
                return Ok(Pushed::Sent);
            }
        }
        // keep what the kernel did not take, in order
        let mut skip = sent;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            st.write_buf.extend_from_slice(&part[skip..]);
            skip = 0;
        }
        Ok(Pushed::Buffered)
    }

    fn finish_write(slf: &Bound<'_, Self>, pushed: Pushed) -> PyResult<()> {
        match pushed {
            Pushed::Sent => Ok(()),
            Pushed::Buffered => Self::after_write(slf),
            Pushed::Failed(e) => {
                Self::fatal_error(slf, e.into(), "Fatal write error on socket transport")
            }
        }
    }

    /// `write`/`writelines` of Python objects, borrowed in place for the system call.
    fn write_objects(slf: &Bound<'_, Self>, held: Vec<HeldBytes<'_>>) -> PyResult<()> {
        let py = slf.py();
        let parts: Vec<&[u8]> = held.iter().map(HeldBytes::as_slice).collect();
        let pushed = Self::push_parts(slf, &parts);
        drop(parts);
        for h in held {
            h.release(py);
        }
        Self::finish_write(slf, pushed?)
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
        if let Ok(mut st) = slf.get().state.borrow_mut(slf.py()) {
            st.read_continuation = false;
        }
        Self::read_ready(slf)
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

    /// Set the write buffer's high and low water marks (bytes).
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        Self::set_write_marks(slf, high, low)
    }

    /// ``(low, high)`` water marks.
    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.write_marks.limits())
    }

    /// Bytes waiting to be sent.
    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.state.borrow_mut(py)?.write_buf.len())
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
        let receiver = receiver_for(py, &protocol);
        let old = {
            let mut st = self.state.borrow_mut(py)?;
            st.receiver = receiver;
            st.protocol.replace(protocol.unbind())
        };
        drop(old);
        Ok(())
    }

    /// The current protocol.
    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol(py).unwrap_or_else(|| py.None())
    }

    /// Whether this is a socket (``loop.sendfile`` can use ``os.sendfile`` on it).
    #[getter]
    fn _is_socket(&self) -> bool {
        self.endpoint == Endpoint::Socket
    }

    /// ``loop.sendfile`` takes (``True``) or gives back the socket: meanwhile writes raise.
    fn _set_sendfile_busy(&self, py: Python<'_>, busy: bool) -> PyResult<()> {
        self.state.borrow_mut(py)?.sendfile_busy = busy;
        Ok(())
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

/// Write `data` to `transport`: directly when it is one of ours, else via ``write()``.
pub fn transport_write(py: Python<'_>, transport: &Py<PyAny>, data: &[u8]) -> PyResult<()> {
    let bound = transport.bind(py);
    if let Ok(ours) = bound.downcast::<StreamTransport>() {
        return StreamTransport::write_slice(ours, data);
    }
    if let Ok(tls) = bound.downcast::<super::tls::TlsTransport>() {
        return super::tls::tls_write(tls, &[data]);
    }
    bound
        .call_method1(intern!(py, "write"), (PyBytes::new(py, data),))
        .map(drop)
}

/// Whether `transport` is this loop's plain stream transport, where `transport_write_parts`
/// sends header and body in one vectored system call (elsewhere they may be framed apart).
pub fn is_stream_transport(transport: &Bound<'_, PyAny>) -> bool {
    transport.downcast::<StreamTransport>().is_ok()
}

/// Write a header and a large body without copying the body: as two slices on our
/// transports, as ``writelines([head, body])`` elsewhere (one ``write`` where there is no
/// ``writelines``).
pub fn transport_write_parts(
    py: Python<'_>,
    transport: &Py<PyAny>,
    head: &[u8],
    body: &Bound<'_, PyBytes>,
) -> PyResult<()> {
    let bound = transport.bind(py);
    if let Ok(ours) = bound.downcast::<StreamTransport>() {
        return StreamTransport::write_parts(ours, &[head, body.as_bytes()]);
    }
    if let Ok(tls) = bound.downcast::<super::tls::TlsTransport>() {
        return super::tls::tls_write(tls, &[head, body.as_bytes()]);
    }
    let parts = pyo3::types::PyList::new(
        py,
        [PyBytes::new(py, head).into_any(), body.clone().into_any()],
    )?;
    match bound.call_method1(intern!(py, "writelines"), (parts,)) {
        Ok(_) => Ok(()),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
            let mut joined = Vec::with_capacity(head.len() + body.as_bytes().len());
            joined.extend_from_slice(head);
            joined.extend_from_slice(body.as_bytes());
            transport_write(py, transport, &joined)
        }
        Err(e) => Err(e),
    }
}
