//! `loop.sock_recv`, `sock_recv_into` and `sock_sendall` on plain sockets, done in Rust.
//!
//! asyncio's way (try, then `add_reader`, retry in a Python callback, `remove_reader`) costs
//! an `epoll_ctl` to register and another to unregister on every wait, a failed `recv` before
//! each wait, and a Python callback per readiness. Here a socket stays registered with the
//! reactor between operations (edge-triggered), and the reactor remembers whether the kernel
//! has said "nothing to read" since the last edge. A `sock_recv` that would block then costs
//! no system call at all until data arrives, and the receive itself runs in Rust when the
//! reactor reports it, completing the future with no Python callback in between.
//!
//! Only exact `socket.socket` objects with a plain buffer take this path. The other `sock_*`
//! operations, and these for a subclass that may override `recv` or an odd buffer format,
//! try once in Python and then wait here too, as a Python attempt (`OpKind::Call`) retried
//! at each readiness of the same persistent registration.

use std::io;
use std::os::fd::RawFd;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyMemoryError, PyRuntimeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyTuple, PyWeakrefReference};
use pyo3::IntoPyObjectExt;

use super::event_loop::LoopCore;
use super::reactor::{Direction, Reactor};
use super::read_buffer::{
    bytes_filled_by, give_back_read_buffer, large_backlog, take_read_buffer, LARGE_READ, READ_CHUNK,
};
use super::transports::is_interrupt;

/// A socket operation waiting for readiness, holding the socket's io reference meanwhile.
pub struct SockOp {
    kind: OpKind,
    /// Dropped with the operation (done, replaced, abandoned, or the loop closed).
    _io_ref: Option<IoRef>,
}

/// What a waiting socket operation does.
enum OpKind {
    Recv {
        future: Py<PyAny>,
        n: usize,
        /// Reads on this socket have been large: size the bytes object by what is there.
        large: bool,
    },
    RecvInto {
        future: Py<PyAny>,
        buffer: Py<PyAny>,
    },
    SendAll {
        future: Py<PyAny>,
        data: Py<PyAny>,
        sent: usize,
    },
    /// Any other operation, as a Python callable retried at each readiness until it stops
    /// raising `BlockingIOError` (or returning the `_AGAIN` sentinel of `_sockets.py`).
    Call {
        future: Py<PyAny>,
        attempt: Py<PyAny>,
        args: Py<PyTuple>,
    },
}

impl SockOp {
    /// `kind`, waiting on `sock`: as `socket.socket`'s own file objects do (`makefile`), it
    /// takes an io reference, so that `sock.close()` meanwhile only marks the socket closed
    /// and the descriptor stays open (and in epoll) until the operation ends. Without it the
    /// descriptor closes under the operation, epoll forgets it, and the future never settles.
    fn waiting(sock: &Bound<'_, PyAny>, kind: OpKind) -> PyResult<SockOp> {
        Ok(SockOp {
            kind,
            _io_ref: IoRef::take(sock)?,
        })
    }

    /// `kind` tried at once, not waiting: no io reference.
    fn now(kind: OpKind) -> SockOp {
        SockOp {
            kind,
            _io_ref: None,
        }
    }

    pub fn future(&self) -> &Py<PyAny> {
        match &self.kind {
            OpKind::Recv { future, .. }
            | OpKind::RecvInto { future, .. }
            | OpKind::SendAll { future, .. }
            | OpKind::Call { future, .. } => future,
        }
    }
}

/// One io reference on a `socket.socket` (its `_io_refs`), given back on drop with the
/// socket's own `_decref_socketios`, which really closes it if `close()` came meanwhile.
struct IoRef(Py<PyAny>);

impl IoRef {
    /// `None` for an object that is not a `socket.socket` (it has no io references), or
    /// only claims to be one (a `Mock(spec=socket.socket)`: its `_io_refs` is no number).
    fn take(sock: &Bound<'_, PyAny>) -> PyResult<Option<IoRef>> {
        let py = sock.py();
        if !sock.is_instance(socket_class(py)?)? {
            return Ok(None);
        }
        let refs = sock.getattr(intern!(py, "_io_refs"));
        let Some(refs) = refs.ok().and_then(|n| n.extract::<isize>().ok()) else {
            return Ok(None);
        };
        sock.setattr(intern!(py, "_io_refs"), refs + 1)?;
        Ok(Some(IoRef(sock.clone().unbind())))
    }
}

impl Drop for IoRef {
    fn drop(&mut self) {
        Python::with_gil(|py| {
            let sock = self.0.bind(py);
            if let Err(err) = sock.call_method0(intern!(py, "_decref_socketios")) {
                // a drop cannot raise: report it as the interpreter does a failing __del__
                err.write_unraisable(py, Some(sock));
            }
        });
    }
}

/// The reactor's record of a socket used through these operations.
pub struct SockWatch {
    /// Which socket object: the descriptor number alone could have been closed and reused.
    socket: Py<PyWeakrefReference>,
    /// False once the kernel said there is nothing to read, until the next readiness edge.
    pub readable: bool,
    /// A TCP stream: a short read drains it (as tokio relies on), so no EAGAIN round trip.
    pub tcp: bool,
    /// The peer hung up (EPOLLRDHUP): its FIN came with an edge already spent, so a short
    /// read no longer proves the socket drained; the EOF is still to be read.
    pub peer_closed: bool,
    /// The last read brought at least `LARGE_READ` bytes.
    pub large_reads: bool,
    pub reader: Option<SockOp>,
    pub writer: Option<SockOp>,
}

impl SockWatch {
    pub fn new(sock: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<SockWatch> {
        Ok(SockWatch {
            socket: PyWeakrefReference::new(sock)?.unbind(),
            readable: true,
            tcp: is_tcp(fd),
            peer_closed: false,
            large_reads: false,
            reader: None,
            writer: None,
        })
    }

    /// Whether this is the record of `sock` (and not of a socket closed since).
    pub fn is_for(&self, sock: &Bound<'_, PyAny>) -> bool {
        self.socket
            .bind(sock.py())
            .upgrade()
            .is_some_and(|s| s.is(sock))
    }

    /// The socket object is gone or closed: the record (and the kernel's) is stale.
    pub fn is_stale(&self, py: Python<'_>, fd: RawFd) -> bool {
        match self.socket.bind(py).upgrade() {
            None => true,
            // a subclass's `fileno` could run any code; only a plain socket's is asked
            Some(sock) if !socket_class(py).is_ok_and(|c| sock.get_type().is(c)) => false,
            Some(sock) => sock
                .call_method0(intern!(py, "fileno"))
                .and_then(|n| n.extract::<i64>())
                .map_or(true, |n| n != fd as i64),
        }
    }

    pub fn busy(&self) -> bool {
        self.reader.is_some() || self.writer.is_some()
    }

    /// After `got` bytes from a read of at most `asked`: what we now know of readability.
    pub fn note_read(&mut self, got: usize, asked: usize) {
        if self.tcp && got > 0 && got < asked && !self.peer_closed {
            self.readable = false;
        }
        if got > 0 {
            self.large_reads = got >= LARGE_READ;
        }
    }
}

fn is_tcp(fd: RawFd) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for getsockopt to write an int into.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    } == 0;
    if !ok || kind != libc::SOCK_STREAM {
        return false;
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value; getsockname fills at most `len`.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let ok = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } == 0;
    ok && matches!(
        addr.ss_family as libc::c_int,
        libc::AF_INET | libc::AF_INET6
    )
}

/// `recv(2)`, retried on EINTR.
fn recv(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` points to at least `len` writable bytes owned by the caller.
        let n = unsafe { libc::recv(fd, buf.cast(), len, 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// `send(2)` of all of `data` the kernel takes now; returns how much it took.
fn send_some(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        let rest = &data[sent..];
        // SAFETY: `rest` is a valid slice for the duration of the call.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), SEND_FLAGS) };
        if n >= 0 {
            sent += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock if sent > 0 => break,
            _ => return Err(err),
        }
    }
    Ok(sent)
}

fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// `recv(n)` into bytes: in place when reads have been `large`, else through the thread's
/// shared buffer (or a buffer of its own when `n` is larger than that).
fn recv_bytes(py: Python<'_>, fd: RawFd, n: usize, large: bool) -> io::Result<Py<PyAny>> {
    if large && n >= LARGE_READ {
        // a large read is cheaper to size by what is there than to copy out of the shared
        // buffer (and sizing it by `n`, as socket.recv does, then shrinking churns malloc)
        if let Some(there) = large_backlog(fd) {
            return bytes_filled_by(py, there.min(n), |at, len| recv(fd, at, len))
                .map(|b| b.into_any().unbind());
        }
    }
    let mut buf = if n <= READ_CHUNK {
        take_read_buffer()
    } else {
        // a size the caller chose: failing to get it is a MemoryError, as in socket.recv,
        // not an abort
        let mut own = Vec::new();
        own.try_reserve_exact(n)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        own
    };
    let result = recv(fd, buf.as_mut_ptr(), n);
    let out = result.map(|got| {
        // SAFETY: recv initialised the first `got` bytes of the allocation.
        let data = unsafe { std::slice::from_raw_parts(buf.as_ptr(), got) };
        PyBytes::new(py, data).into_any().unbind()
    });
    if n <= READ_CHUNK {
        give_back_read_buffer(buf);
    }
    out
}

/// An I/O error as the exception `socket` would raise (`MemoryError` for a failed
/// allocation, the errno's `OSError` subclass otherwise).
fn io_error(err: io::Error) -> PyErr {
    if err.kind() == io::ErrorKind::OutOfMemory {
        PyMemoryError::new_err("cannot allocate the receive buffer")
    } else {
        err.into()
    }
}

/// `recv_into(buffer)`, or `None` when `buffer` is not a writable, contiguous byte buffer.
fn recv_into(buffer: &Bound<'_, PyAny>, fd: RawFd) -> Option<io::Result<usize>> {
    let view = PyBuffer::<u8>::get(buffer).ok()?;
    if view.readonly() || !view.is_c_contiguous() {
        view.release(buffer.py());
        return None;
    }
    let result = recv(fd, view.buf_ptr().cast(), view.len_bytes());
    view.release(buffer.py());
    Some(result)
}

/// What an attempt at an operation came to.
enum Attempt {
    /// The kernel has nothing (more) for us: wait for the next edge.
    Again,
    /// Finished: the future's result, and how many bytes were read of how many asked.
    Done(PyResult<Py<PyAny>>, usize, usize),
}

fn attempt(py: Python<'_>, fd: RawFd, op: &mut SockOp) -> Attempt {
    match &mut op.kind {
        OpKind::Recv { n, large, .. } => match recv_bytes(py, fd, *n, *large) {
            Ok(bytes) => {
                let got = bytes.bind(py).len().unwrap_or(0);
                Attempt::Done(Ok(bytes), got, *n)
            }
            Err(e) if would_block(&e) => Attempt::Again,
            Err(e) => Attempt::Done(Err(io_error(e)), 0, 0),
        },
        OpKind::RecvInto { buffer, .. } => {
            let buffer = buffer.bind(py);
            let asked = buffer.len().unwrap_or(0);
            match recv_into(buffer, fd) {
                Some(Ok(got)) => Attempt::Done(got.into_py_any(py), got, asked),
                Some(Err(e)) if would_block(&e) => Attempt::Again,
                Some(Err(e)) => Attempt::Done(Err(e.into()), 0, 0),
                None => Attempt::Done(
                    Err(PyValueError::new_err(
                        "the buffer is no longer a writable contiguous byte buffer",
                    )),
                    0,
                    0,
                ),
            }
        }
        OpKind::Call { attempt, args, .. } => match attempt.bind(py).call1(args.bind(py)) {
            Ok(result) if again_sentinel(py).is_ok_and(|again| result.is(again)) => Attempt::Again,
            Ok(result) => Attempt::Done(Ok(result.unbind()), 0, 0),
            Err(err)
                if err.is_instance_of::<PyBlockingIOError>(py)
                    || err.is_instance_of::<PyInterruptedError>(py) =>
            {
                Attempt::Again
            }
            Err(err) => Attempt::Done(Err(err), 0, 0),
        },
        OpKind::SendAll { data, sent, .. } => {
            let data = data.bind(py);
            let view = match PyBuffer::<u8>::get(data) {
                Ok(v) => v,
                Err(e) => return Attempt::Done(Err(e), 0, 0),
            };
            // SAFETY: the view pins the object's buffer until released below.
            let bytes = unsafe {
                std::slice::from_raw_parts(view.buf_ptr() as *const u8, view.len_bytes())
            };
            let rest = bytes.get(*sent..).unwrap_or(&[]);
            let result = send_some(fd, rest);
            let total = bytes.len();
            view.release(py);
            match result {
                Ok(n) => {
                    *sent += n;
                    if *sent >= total {
                        Attempt::Done(Ok(py.None()), 0, 0)
                    } else {
                        Attempt::Again
                    }
                }
                Err(e) if would_block(&e) => Attempt::Again,
                Err(e) => Attempt::Done(Err(e.into()), 0, 0),
            }
        }
    }
}

/// `_sockets._AGAIN`: what an attempt returns to say "not yet" without raising.
fn again_sentinel(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static AGAIN: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    AGAIN
        .get_or_try_init(py, || {
            py.import("asyncpg_rs.eventloop._sockets")?
                .getattr("_AGAIN")
                .map(Bound::unbind)
        })
        .map(|again| again.bind(py))
}

fn socket_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static SOCKET: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    SOCKET
        .get_or_try_init(py, || {
            py.import("socket")?.getattr("socket").map(Bound::unbind)
        })
        .map(|class| class.bind(py))
}

/// The descriptor of a socket this module handles, or `None` to leave it to asyncio's way.
fn plain_socket_fd(reactor: &Reactor, sock: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    let py = sock.py();
    if !sock.get_type().is(socket_class(py)?) {
        return Ok(None);
    }
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    if !timeout.extract::<f64>().is_ok_and(|t| t == 0.0) {
        return Err(PyValueError::new_err("the socket must be non-blocking"));
    }
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    if fd >= 0 {
        if let Some(transport) = reactor.transport_of(py, fd) {
            return Err(PyRuntimeError::new_err(format!(
                "File descriptor {fd} is used by transport {}",
                transport.object(py).repr()?
            )));
        }
    }
    Ok(Some(fd))
}

/// Settle a finished operation's future (unless it was cancelled meanwhile).
fn settle(py: Python<'_>, future: &Py<PyAny>, result: PyResult<Py<PyAny>>) -> PyResult<()> {
    let future = future.bind(py);
    if future.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    match result {
        Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
        Err(err) => future.call_method1(intern!(py, "set_exception"), (err.value(py),))?,
    };
    Ok(())
}

fn is_done(py: Python<'_>, future: &Py<PyAny>) -> bool {
    future
        .bind(py)
        .call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

/// Start an operation: done now (its result), or waiting (a future), or `NotImplemented`
/// for asyncio's way.
fn start(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    direction: Direction,
    mut op_for: impl FnMut(Py<PyAny>, bool) -> OpKind,
    mut now: impl FnMut(RawFd, bool) -> Attempt,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    let reactor = core.get().reactor();
    let Some(fd) = plain_socket_fd(reactor, sock)? else {
        return Ok(py.NotImplemented());
    };
    let (readable, large_reads) = reactor.sock_read_hints(py, fd, sock)?;
    let try_now = direction == Direction::Write || readable;
    if try_now {
        match now(fd, large_reads) {
            Attempt::Done(result, got, asked) => {
                if direction == Direction::Read {
                    reactor.sock_note_read(py, fd, sock, got, asked)?;
                }
                return result;
            }
            Attempt::Again => {}
        }
    }
    let future = core.call_method0(intern!(py, "create_future"))?.unbind();
    let op = SockOp::waiting(sock, op_for(future.clone_ref(py), large_reads))?;
    reactor.sock_wait(py, fd, sock, direction, op, try_now)?;
    Ok(future)
}

/// A receive of zero bytes: its empty answer once the socket passed the checks.
fn nothing_asked(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    answer: impl FnOnce() -> PyResult<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    match plain_socket_fd(core.get().reactor(), sock)? {
        Some(_) => answer(),
        None => Ok(core.py().NotImplemented()),
    }
}

/// `sock_recv(sock, n)`: the bytes, a future for them, or `NotImplemented`.
pub fn sock_recv(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    n: isize,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    let Ok(n) = usize::try_from(n) else {
        return Err(PyValueError::new_err("negative buffersize in recv"));
    };
    if n == 0 {
        // as socket.recv: nothing asked, nothing to wait for (the kernel would say EAGAIN)
        return nothing_asked(core, sock, || Ok(PyBytes::new(py, b"").into_any().unbind()));
    }
    start(
        core,
        sock,
        Direction::Read,
        |future, large| OpKind::Recv { future, n, large },
        |fd, large| {
            attempt(
                py,
                fd,
                &mut SockOp::now(OpKind::Recv {
                    future: py.None(),
                    n,
                    large,
                }),
            )
        },
    )
}

/// Whether `obj` lends a contiguous byte buffer (writable, when `writable`).
fn plain_buffer(obj: &Bound<'_, PyAny>, writable: bool) -> bool {
    match PyBuffer::<u8>::get(obj) {
        Ok(view) => {
            let fit = view.is_c_contiguous() && !(writable && view.readonly());
            view.release(obj.py());
            fit
        }
        Err(_) => false,
    }
}

/// `sock_recv_into(sock, buffer)`: the count, a future for it, or `NotImplemented`.
pub fn sock_recv_into(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    buffer: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    if !plain_buffer(buffer, true) {
        return Ok(py.NotImplemented());
    }
    let op_for = |future, _| OpKind::RecvInto {
        future,
        buffer: buffer.clone().unbind(),
    };
    let mut op = SockOp::now(op_for(py.None(), false));
    if buffer.len().is_ok_and(|n| n == 0) {
        // as socket.recv_into: nothing asked, nothing to wait for (the kernel would say EAGAIN)
        return nothing_asked(core, sock, || 0usize.into_py_any(py));
    }
    start(core, sock, Direction::Read, op_for, |fd, _| {
        attempt(py, fd, &mut op)
    })
}

/// `sock_sendall(sock, data)`: `None` when all went out now, else a future, or
/// `NotImplemented`.
pub fn sock_sendall(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    if !plain_buffer(data, false) {
        return Ok(py.NotImplemented());
    }
    let sent_now = std::cell::Cell::new(0);
    let mut op = SockOp::now(OpKind::SendAll {
        future: py.None(),
        data: data.clone().unbind(),
        sent: 0,
    });
    start(
        core,
        sock,
        Direction::Write,
        |future, _| OpKind::SendAll {
            future,
            data: data.clone().unbind(),
            sent: sent_now.get(),
        },
        |fd, _| {
            let outcome = attempt(py, fd, &mut op);
            if let OpKind::SendAll { sent, .. } = &op.kind {
                sent_now.set(*sent);
            }
            outcome
        },
    )
}

/// Run an operation the reactor found ready; put it back if the kernel had nothing after all.
pub fn run_due(
    core: &Bound<'_, LoopCore>,
    fd: RawFd,
    direction: Direction,
    mut op: SockOp,
) -> PyResult<()> {
    let py = core.py();
    let reactor = core.get().reactor();
    if is_done(py, op.future()) {
        // cancelled while waiting: leave the data in the socket
        return reactor.sock_finished(py, fd);
    }
    match attempt(py, fd, &mut op) {
        Attempt::Again => reactor.sock_retry(py, fd, direction, op),
        // as from any callback of the loop, Ctrl-C and exit() end the loop; the operation
        // stays pending, to be retried if the loop runs again
        Attempt::Done(Err(err), _, _) if is_interrupt(py, &err) => {
            reactor.sock_retry(py, fd, direction, op)?;
            Err(err)
        }
        Attempt::Done(result, got, asked) => {
            reactor.sock_done(py, fd, direction, got, asked)?;
            settle(py, op.future(), result)
        }
    }
}

/// Wait for `sock` to be readable (or writable), then retry `attempt(*args)` at each
/// readiness until it stops saying "not yet"; its result or error settles the future.
/// `NotImplemented` when the socket cannot be tracked (then asyncio's way, in Python).
pub fn sock_wait(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    write: bool,
    attempt: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    if fd < 0 || PyWeakrefReference::new(sock).is_err() {
        return Ok(py.NotImplemented());
    }
    let future = core.call_method0(intern!(py, "create_future"))?.unbind();
    let op = SockOp::waiting(
        sock,
        OpKind::Call {
            future: future.clone_ref(py),
            attempt: attempt.clone().unbind(),
            args: args.clone().unbind(),
        },
    )?;
    let direction = if write {
        Direction::Write
    } else {
        Direction::Read
    };
    core.get()
        .reactor()
        .sock_wait(py, fd, sock, direction, op, true)?;
    Ok(future)
}
