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

use std::collections::VecDeque;
use std::os::raw::c_char;

use pyo3::exceptions::{
    PyConnectionAbortedError, PyConnectionResetError, PyNotImplementedError, PyRuntimeError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

use super::common::{
    is_interrupt, presented_class, Crossing, Mark, PauseAt, ProtocolContext, WaterMarks,
};
use super::native::{native_receiver, NativeReceive};
use super::stream::StreamTransport;
use crate::runtime::cell::GilCell;

/// asyncio's defaults (`asyncio.constants`): seconds, and KiB for the water marks.
const HANDSHAKE_TIMEOUT: f64 = 60.0;
const SHUTDOWN_TIMEOUT: f64 = 30.0;
const READ_HIGH_WATER: usize = 256 * 1024;
const WRITE_HIGH_WATER: usize = 512 * 1024;
/// Writes after the connection is gone are dropped; past this many a warning is logged.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;
/// Plaintext decrypted per read event before it is handed on (asyncio reads 256 KiB too).
const PLAINTEXT_CHUNK: usize = 256 * 1024;
/// The most plaintext one TLS record carries.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;
/// Below this, a slice handed to `_ssl` is copied into bytes; above, lent as a memoryview.
const LEND_AT: usize = 4096;

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

/// How plaintext reaches the application's protocol.
#[derive(Clone, Copy)]
enum Receiver {
    Native(NativeReceive),
    Buffered,
    Plain,
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

/// The `ssl` and `asyncio` names this module needs, looked up once.
struct Names {
    want_read: Py<PyType>,
    syscall: Py<PyType>,
    zero_return: Py<PyType>,
    ssl_error: Py<PyType>,
    cert_error: Py<PyType>,
    cancelled: Py<PyType>,
    memory_bio: Py<PyAny>,
    sslobject: Py<PyType>,
    logger: Py<PyAny>,
}

static NAMES: GILOnceCell<Names> = GILOnceCell::new();

fn names(py: Python<'_>) -> PyResult<&'static Names> {
    NAMES.get_or_try_init(py, || {
        let ssl = py.import("ssl")?;
        let ty = |name: &str| -> PyResult<Py<PyType>> {
            Ok(ssl.getattr(name)?.downcast_into::<PyType>()?.unbind())
        };
        Ok(Names {
            want_read: ty("SSLWantReadError")?,
            syscall: ty("SSLSyscallError")?,
            zero_return: ty("SSLZeroReturnError")?,
            ssl_error: ty("SSLError")?,
            cert_error: ty("CertificateError")?,
            cancelled: py
                .import("asyncio")?
                .getattr("CancelledError")?
                .downcast_into::<PyType>()?
                .unbind(),
            memory_bio: ssl.getattr("MemoryBIO")?.unbind(),
            sslobject: ty("SSLObject")?,
            logger: py.import("asyncio.log")?.getattr("logger")?.unbind(),
        })
    })
}

/// `SSLWantReadError` or `SSLSyscallError`: the `SSLObject` needs more input (asyncio
/// treats both alike).
fn is_again(py: Python<'_>, err: &PyErr) -> bool {
    names(py).is_ok_and(|n| {
        err.is_instance(py, n.want_read.bind(py)) || err.is_instance(py, n.syscall.bind(py))
    })
}

fn is_ssl_error(py: Python<'_>, err: &PyErr) -> bool {
    names(py).is_ok_and(|n| err.is_instance(py, n.ssl_error.bind(py)))
}

/// A memoryview over memory we own, for one call into `_ssl`, released right after it (so
/// nothing can reach the memory through it later; a released view raises on any access).
fn with_view<'py, R>(
    py: Python<'py>,
    ptr: *mut u8,
    len: usize,
    writable: bool,
    call: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<R>,
) -> PyResult<R> {
    let flags = if writable {
        ffi::PyBUF_WRITE
    } else {
        ffi::PyBUF_READ
    };
    // SAFETY: `ptr` points to `len` bytes the caller owns (writable when asked) and keeps
    // alive and unmoved for this whole function; the view is released before we return.
    let view = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyMemoryView_FromMemory(ptr as *mut c_char, len as ffi::Py_ssize_t, flags),
        )?
    };
    let result = call(&view);
    let released = view.call_method0(intern!(py, "release"));
    match (result, released) {
        (Ok(r), Ok(_)) => Ok(r),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// `obj.method(data)` with `data` as a bytes-like argument: copied into bytes when small,
/// lent as a read-only memoryview when large.
fn call_with_data<'py>(
    obj: &Bound<'py, PyAny>,
    method: &Bound<'py, pyo3::types::PyString>,
    data: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if data.len() < LEND_AT {
        return obj.call_method1(method, (PyBytes::new(py, data),));
    }
    with_view(py, data.as_ptr() as *mut u8, data.len(), false, |view| {
        obj.call_method1(method, (view,))
    })
}

thread_local! {
    /// Where plaintext is decrypted to, shared by the thread's TLS transports (each read
    /// event hands its plaintext on before the next starts; a re-entrant one gets its own).
    static PLAINTEXT: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

fn take_plaintext_buffer() -> Vec<u8> {
    PLAINTEXT
        .with(|c| c.take())
        .unwrap_or_else(|| vec![0; PLAINTEXT_CHUNK])
}

fn give_back_plaintext_buffer(buf: Vec<u8>) {
    PLAINTEXT.with(|c| c.set(Some(buf)));
}

fn receiver_for(py: Python<'_>, protocol: &Bound<'_, PyAny>) -> Receiver {
    if let Some(receive) = native_receiver(protocol) {
        return Receiver::Native(receive);
    }
    // asyncio's rule (an `asyncio.BufferedProtocol` with `get_buffer`), and uvloop's for a
    // protocol that can only take a buffer (`get_buffer` and `buffer_updated`, no
    // `data_received`)
    let has = |name: &Bound<'_, pyo3::types::PyString>| protocol.hasattr(name).unwrap_or(false);
    let buffered = has(intern!(py, "get_buffer"))
        && (py
            .import("asyncio")
            .and_then(|m| m.getattr("BufferedProtocol"))
            .and_then(|c| protocol.is_instance(&c))
            .unwrap_or(false)
            || (has(intern!(py, "buffer_updated")) && !has(intern!(py, "data_received"))));
    if buffered {
        Receiver::Buffered
    } else {
        Receiver::Plain
    }
}

/// Ciphertext from the stream transport below (the native receive function `native` hands
/// out for this type).
pub(crate) fn receive_ciphertext(protocol: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<()> {
    let tls = protocol.downcast::<TlsTransport>()?;
    TlsTransport::on_ciphertext(tls, data)
}

fn format_seconds(s: f64) -> String {
    // as Python prints a float: 60.0, 0.5
    if s.fract() == 0.0 && s.abs() < 1e16 {
        format!("{s:.1}")
    } else {
        format!("{s}")
    }
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

    fn wakeup_waiter(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let Some(waiter) = slf.get().state.borrow_mut(py)?.waiter.take() else {
            return Ok(());
        };
        let waiter = waiter.bind(py);
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            match exc {
                Some(e) if !e.is_none() => {
                    waiter.call_method1(intern!(py, "set_exception"), (e,))?
                }
                _ => waiter.call_method1(intern!(py, "set_result"), (py.None(),))?,
            };
        }
        Ok(())
    }

    fn cancel_timer(py: Python<'_>, timer: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(t) = timer {
            t.call_method0(py, intern!(py, "cancel"))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ incoming

    fn on_ciphertext(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        call_with_data(me.incoming.bind(py), intern!(py, "write"), data)?;
        match me.phase(py) {
            Phase::Handshake => Self::do_handshake(slf),
            Phase::Wrapped => Self::do_read(slf),
            Phase::Flushing => Self::do_flush(slf),
            Phase::Shutdown => Self::do_shutdown(slf),
            Phase::Unwrapped => Ok(()),
        }
    }

    fn do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        match slf.get().hot.call_method0(py, intern!(py, "do_handshake")) {
            Ok(_) => Self::on_handshake_complete(slf, None),
            Err(e) if is_again(py, &e) => Self::process_outgoing(slf),
            Err(e) if is_ssl_error(py, &e) => Self::on_handshake_complete(slf, Some(e)),
            Err(e) => Err(e),
        }
    }

    fn on_handshake_complete(slf: &Bound<'_, Self>, failure: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let timer = me.state.borrow_mut(py)?.handshake_timer.take();
        Self::cancel_timer(py, timer)?;
        let outcome = match failure {
            Some(e) => Err(e),
            None => {
                me.set_phase(py, Phase::Wrapped)?;
                me.sslobj.call_method0(py, intern!(py, "getpeercert"))
            }
        };
        let peercert = match outcome {
            Ok(cert) => cert,
            Err(err) => {
                if is_interrupt(py, &err) {
                    return Err(err);
                }
                me.set_phase(py, Phase::Unwrapped)?;
                let cert_failure =
                    names(py).is_ok_and(|n| err.is_instance(py, n.cert_error.bind(py)));
                let message = if cert_failure {
                    "SSL handshake failed on verifying the certificate"
                } else {
                    "SSL handshake failed"
                };
                let value = err.value(py).clone().into_any();
                Self::fatal_error(slf, err, message)?;
                return Self::wakeup_waiter(slf, Some(&value));
            }
        };
        let sslobj = me.sslobj.bind(py);
        let extra = me.extra.bind(py);
        extra.set_item("peercert", peercert)?;
        extra.set_item("cipher", sslobj.call_method0(intern!(py, "cipher"))?)?;
        extra.set_item(
            "compression",
            sslobj.call_method0(intern!(py, "compression"))?,
        )?;
        extra.set_item("ssl_object", sslobj)?;
        let made = {
            let mut st = me.state.borrow_mut(py)?;
            if st.app_phase == AppPhase::Init {
                st.app_phase = AppPhase::Made;
                st.protocol.as_ref().map(|p| p.clone_ref(py))
            } else {
                None
            }
        };
        if let Some(protocol) = made {
            Self::call_app(
                slf,
                protocol.bind(py),
                intern!(py, "connection_made"),
                PyTuple::new(py, [slf.as_any()])?,
            )?;
        }
        Self::wakeup_waiter(slf, None)?;
        // Plaintext that came with the handshake's last flight waits an iteration: after
        // start_tls the caller learns of this transport only in the waiter's callback, and
        // data handed over now would reach a protocol still writing to the plain transport.
        me.loop_obj.call_method1(
            py,
            intern!(py, "call_soon"),
            (slf.getattr(intern!(py, "_resume"))?,),
        )?;
        Ok(())
    }

    fn do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (paused, backlog) = {
            let st = me.state.borrow_mut(py)?;
            if !matches!(st.phase, Phase::Wrapped | Phase::Flushing) {
                return Ok(());
            }
            (st.app_reading_paused, !st.backlog.is_empty())
        };
        let result = (|| {
            if !paused {
                Self::read_plaintext(slf)?;
                if backlog {
                    Self::do_write(slf)?;
                } else {
                    Self::process_outgoing(slf)?;
                }
            }
            Self::control_ssl_reading(slf)
        })();
        match result {
            Ok(()) => Ok(()),
            Err(err) => Self::fatal_error(slf, err, "Fatal error on SSL protocol"),
        }
    }

    /// Decrypt what the incoming BIO holds and hand it to the application: one delivery
    /// per read event as a rule (several TLS records make one `data_received` call, as with
    /// asyncio), more only past `PLAINTEXT_CHUNK` bytes.
    fn read_plaintext(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let plain = matches!(me.state.borrow_mut(py)?.receiver, Receiver::Plain);
        let mut close_notify = false;
        let mut more = true;
        if plain {
            // straight into the bytes object data_received gets: no copy of the plaintext
            let (closed, full) = Self::read_into_new_bytes(slf)?;
            close_notify = closed;
            more = full && !me.state.borrow_mut(py)?.app_reading_paused;
        }
        if more && !close_notify {
            let mut buf = take_plaintext_buffer();
            let result = Self::read_plaintext_into(slf, &mut buf);
            give_back_plaintext_buffer(buf);
            close_notify = result?;
        }
        if close_notify {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    /// Decrypt records into `len` bytes at `ptr` until the BIO holds no complete record, the
    /// peer's close_notify arrives, or the room is used up. Returns the bytes written and
    /// whether close_notify arrived.
    fn read_records(slf: &Bound<'_, Self>, ptr: *mut u8, len: usize) -> PyResult<(usize, bool)> {
        let py = slf.py();
        let me = slf.get();
        let hot = me.hot.bind(py);
        let incoming = me.incoming.bind(py);
        let mut filled = 0;
        while filled < len {
            let room = len - filled;
            // SAFETY: the caller lends `len` writable bytes at `ptr` for this call.
            let at = unsafe { ptr.add(filled) };
            let read = with_view(py, at, room, true, |view| {
                hot.call_method1(intern!(py, "read"), (room, view))?
                    .extract::<usize>()
            });
            let n = match read {
                Ok(n) => n.min(room),
                Err(e) if is_again(py, &e) => break,
                // `_ssl` raises this instead of returning 0 when our close_notify went first
                Err(e) if names(py).is_ok_and(|n| e.is_instance(py, n.zero_return.bind(py))) => {
                    return Ok((filled, true))
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok((filled, true));
            }
            filled += n;
            // OpenSSL takes a record at a time from the BIO (no read-ahead) and a record's
            // plaintext fitted the room: an empty BIO means the next read could only say
            // "want read", which costs an exception.
            if n < room
                && incoming
                    .getattr(intern!(py, "pending"))?
                    .extract::<usize>()?
                    == 0
            {
                break;
            }
        }
        Ok((filled, false))
    }

    /// For a `data_received` protocol: decrypt into a new bytes object sized for what the
    /// BIO holds (plus one record OpenSSL may hold already), shrink it and deliver it.
    /// Returns (close_notify, the object filled up so more may wait).
    fn read_into_new_bytes(slf: &Bound<'_, Self>) -> PyResult<(bool, bool)> {
        let py = slf.py();
        let me = slf.get();
        let pending: usize = me
            .incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)?;
        let capacity = (pending + MAX_RECORD_PLAINTEXT).min(PLAINTEXT_CHUNK);
        // SAFETY: a new bytes object is ours alone until handed out: we fill at most
        // `capacity` bytes of it through `read_records`, then shrink it to what was written
        // (a failed resize frees it and nulls the pointer), so no unwritten byte is visible.
        let (data, closed, full) = unsafe {
            let mut obj =
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), capacity as ffi::Py_ssize_t);
            if obj.is_null() {
                return Err(PyErr::fetch(py));
            }
            let ptr = ffi::PyBytes_AsString(obj).cast::<u8>();
            let (filled, closed) = match Self::read_records(slf, ptr, capacity) {
                Ok(r) => r,
                Err(e) => {
                    ffi::Py_DECREF(obj);
                    return Err(e);
                }
            };
            if filled == 0 {
                ffi::Py_DECREF(obj);
                return Ok((closed, false));
            }
            if filled != capacity && ffi::_PyBytes_Resize(&mut obj, filled as ffi::Py_ssize_t) != 0
            {
                return Err(PyErr::fetch(py));
            }
            (Bound::from_owned_ptr(py, obj), closed, filled == capacity)
        };
        let protocol = me.app_protocol(py);
        if let Some(protocol) = protocol {
            Self::call_app(
                slf,
                protocol.bind(py),
                intern!(py, "data_received"),
                PyTuple::new(py, [data])?,
            )?;
        }
        Ok((closed, full))
    }

    /// Decrypt through the thread's plaintext buffer, delivering each time it fills.
    /// Returns whether the peer's close_notify arrived.
    fn read_plaintext_into(slf: &Bound<'_, Self>, buf: &mut [u8]) -> PyResult<bool> {
        let py = slf.py();
        loop {
            let (filled, closed) = Self::read_records(slf, buf.as_mut_ptr(), buf.len())?;
            if filled > 0 {
                Self::deliver(slf, &buf[..filled])?;
            }
            if closed || filled < buf.len() || slf.get().state.borrow_mut(py)?.app_reading_paused {
                return Ok(closed);
            }
        }
    }

    fn deliver(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (protocol, receiver) = {
            let st = me.state.borrow_mut(py)?;
            match &st.protocol {
                Some(p) => (p.clone_ref(py), st.receiver),
                None => return Ok(()),
            }
        };
        let protocol = protocol.bind(py);
        match receiver {
            Receiver::Native(receive) => receive(protocol, data),
            Receiver::Plain => Self::call_app(
                slf,
                protocol,
                intern!(py, "data_received"),
                PyTuple::new(py, [PyBytes::new(py, data)])?,
            )
            .map(drop),
            Receiver::Buffered => {
                let mut rest = data;
                while !rest.is_empty() {
                    let target = Self::call_app(
                        slf,
                        protocol,
                        intern!(py, "get_buffer"),
                        PyTuple::new(py, [rest.len()])?,
                    )?;
                    let view = pyo3::buffer::PyBuffer::<u8>::get(&target)?;
                    if view.readonly() || !view.is_c_contiguous() || view.len_bytes() == 0 {
                        view.release(py);
                        return Err(PyRuntimeError::new_err(
                            "get_buffer() returned an empty or read-only buffer",
                        ));
                    }
                    let n = view.len_bytes().min(rest.len());
                    // SAFETY: the view pins a writable contiguous buffer of at least `n`
                    // bytes until released, and `rest` does not overlap it (it is ours).
                    unsafe {
                        std::ptr::copy_nonoverlapping(rest.as_ptr(), view.buf_ptr().cast(), n)
                    };
                    view.release(py);
                    drop(target);
                    Self::call_app(
                        slf,
                        protocol,
                        intern!(py, "buffer_updated"),
                        PyTuple::new(py, [n])?,
                    )?;
                    rest = &rest[n..];
                }
                Ok(())
            }
        }
    }

    fn call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let protocol = {
            let mut st = me.state.borrow_mut(py)?;
            if st.app_phase != AppPhase::Made {
                return Ok(());
            }
            st.app_phase = AppPhase::Eof;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        match Self::call_app(
            slf,
            protocol.bind(py),
            intern!(py, "eof_received"),
            PyTuple::empty(py),
        ) {
            Ok(keep_open) => {
                if keep_open.is_truthy().unwrap_or(false) {
                    names(py)?.logger.call_method1(
                        py,
                        intern!(py, "warning"),
                        ("returning true from eof_received() has no effect when using ssl",),
                    )?;
                }
                Ok(())
            }
            Err(err) => Self::fatal_error(slf, err, "Error calling eof_received()"),
        }
    }

    /// New `in_marks` (`set_*_buffer_limits`): they may pause or resume at once.
    fn set_in_marks(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let mut st = slf.get().state.borrow_mut(slf.py())?;
        st.in_marks.set(high, low)?;
        drop(st);
        Self::control_ssl_reading(slf)
    }

    /// Pause the stream transport while undecrypted input piles up (the application is not
    /// reading), resume it once that drained.
    fn control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (paused, app_paused, high) = {
            let st = me.state.borrow_mut(py)?;
            (
                st.in_marks.paused(),
                st.app_reading_paused,
                st.in_marks.high(),
            )
        };
        // A reading application empties the BIO each event: below a record's size, nothing
        // to look at (the getattr is skipped on the hot path).
        if !paused && !app_paused && high > 64 * 1024 {
            return Ok(());
        }
        let size: usize = me
            .incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)?;
        let crossing = me.state.borrow_mut(py)?.in_marks.crossing(size);
        if let Some(crossing) = crossing {
            let method = match crossing {
                Crossing::Pause => intern!(py, "pause_reading"),
                Crossing::Resume => intern!(py, "resume_reading"),
            };
            if let Some(lower) = me.lower(py) {
                lower.call_method0(py, method)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ outgoing

    /// Encrypt the application's `parts` (or queue them: during the handshake, or behind a
    /// backlog) and send the records.
    pub fn write_parts(slf: &Bound<'_, Self>, parts: &[&[u8]]) -> PyResult<()> {
        Self::write_data(slf, parts, None)
    }

    /// `write_parts`, with the Python object holding the one part when there is one (it
    /// goes to `_ssl` as it is).
    fn write_data(
        slf: &Bound<'_, Self>,
        parts: &[&[u8]],
        object: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let direct = {
            let mut st = me.state.borrow_mut(py)?;
            match st.phase {
                Phase::Flushing | Phase::Shutdown | Phase::Unwrapped => {
                    st.conn_lost += 1;
                    let warn = st.conn_lost > LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                    drop(st);
                    if warn {
                        names(py)?.logger.call_method1(
                            py,
                            intern!(py, "warning"),
                            ("SSL connection is closed",),
                        )?;
                    }
                    return Ok(());
                }
                Phase::Wrapped if st.backlog.is_empty() => true,
                _ => {
                    let mut joined = Vec::with_capacity(total);
                    for p in parts {
                        joined.extend_from_slice(p);
                    }
                    st.backlog.push_back(joined);
                    st.backlog_size += total;
                    false
                }
            }
        };
        let result = if direct {
            Self::encrypt_now(slf, parts, total, object)
        } else if me.phase(py) == Phase::Wrapped {
            Self::do_write(slf)
        } else {
            Ok(())
        };
        match result {
            Ok(()) => Ok(()),
            Err(err) => Self::fatal_error(slf, err, "Fatal error on SSL protocol"),
        }
    }

    /// The common write: nothing queued, so straight into the `SSLObject` (several parts as
    /// one record run: joined first, as records per small part would cost bytes and time).
    fn encrypt_now(
        slf: &Bound<'_, Self>,
        parts: &[&[u8]],
        total: usize,
        object: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let joined;
        let data: &[u8] = if parts.len() == 1 {
            parts[0]
        } else {
            let mut j = Vec::with_capacity(total);
            for p in parts {
                j.extend_from_slice(p);
            }
            joined = j;
            &joined
        };
        let written = match object {
            Some(obj) if parts.len() == 1 => {
                me.hot.bind(py).call_method1(intern!(py, "write"), (obj,))
            }
            _ => call_with_data(me.hot.bind(py), intern!(py, "write"), data),
        };
        let taken = match written {
            Ok(n) => n.extract::<usize>()?.min(data.len()),
            Err(e) if is_again(py, &e) => 0,
            Err(e) => return Err(e),
        };
        if taken < data.len() {
            let mut st = me.state.borrow_mut(py)?;
            st.backlog.push_back(data[taken..].to_vec());
            st.backlog_size += data.len() - taken;
        }
        Self::process_outgoing(slf)
    }

    /// Feed the backlog to the `SSLObject` until it is empty or refused, then send.
    fn do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        loop {
            let Some(chunk) = me.state.borrow_mut(py)?.backlog.pop_front() else {
                break;
            };
            let taken = match call_with_data(me.hot.bind(py), intern!(py, "write"), &chunk) {
                Ok(n) => n.extract::<usize>()?.min(chunk.len()),
                Err(e) if is_again(py, &e) => 0,
                Err(e) => {
                    me.state.borrow_mut(py)?.backlog.push_front(chunk);
                    return Err(e);
                }
            };
            let mut st = me.state.borrow_mut(py)?;
            st.backlog_size -= taken;
            if taken < chunk.len() {
                st.backlog.push_front(chunk[taken..].to_vec());
                break;
            }
        }
        Self::process_outgoing(slf)
    }

    /// Hand the records in the outgoing BIO to the stream transport (unless it asked us to
    /// pause), then pause or resume the application's writing.
    fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (paused, lower) = {
            let st = me.state.borrow_mut(py)?;
            (
                st.ssl_writing_paused,
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        if !paused {
            if let Some(lower) = lower {
                let data = me.outgoing.call_method0(py, intern!(py, "read"))?;
                let data = data.bind(py).downcast::<PyBytes>()?;
                if !data.as_bytes().is_empty() {
                    let lower = lower.bind(py);
                    match lower.downcast::<StreamTransport>() {
                        Ok(stream) => StreamTransport::write_slice(stream, data.as_bytes())?,
                        Err(_) => {
                            lower.call_method1(intern!(py, "write"), (data,))?;
                        }
                    }
                }
            }
        }
        Self::control_app_writing(slf)
    }

    fn write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        let pending: usize = self
            .outgoing
            .getattr(py, intern!(py, "pending"))?
            .extract(py)?;
        Ok(pending + self.state.borrow_mut(py)?.backlog_size)
    }

    /// New `out_marks` (`set_*_buffer_limits`): they may pause or resume at once.
    fn set_out_marks(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let mut st = slf.get().state.borrow_mut(slf.py())?;
        st.out_marks.set(high, low)?;
        drop(st);
        Self::control_app_writing(slf)
    }

    fn control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (ssl_paused, backlog) = {
            let st = me.state.borrow_mut(py)?;
            (st.ssl_writing_paused, st.backlog_size)
        };
        // unpaused, the outgoing BIO was just emptied: only the backlog counts
        let size = if ssl_paused {
            me.write_buffer_size(py)?
        } else {
            backlog
        };
        let (crossing, protocol) = {
            let mut st = me.state.borrow_mut(py)?;
            let Some(crossing) = st.out_marks.crossing(size) else {
                return Ok(());
            };
            (crossing, st.protocol.as_ref().map(|p| p.clone_ref(py)))
        };
        let (method, what) = match crossing {
            Crossing::Pause => (
                intern!(py, "pause_writing"),
                "protocol.pause_writing() failed",
            ),
            Crossing::Resume => (
                intern!(py, "resume_writing"),
                "protocol.resume_writing() failed",
            ),
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        if let Err(err) = Self::call_app(slf, protocol.bind(py), method, PyTuple::empty(py)) {
            if is_interrupt(py, &err) {
                return Err(err);
            }
            let ctx = PyDict::new(py);
            ctx.set_item("message", what)?;
            ctx.set_item("exception", err.value(py))?;
            ctx.set_item("transport", slf)?;
            ctx.set_item("protocol", slf)?;
            me.loop_obj
                .call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ shutdown

    fn start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let phase = {
            let mut st = me.state.borrow_mut(py)?;
            if matches!(
                st.phase,
                Phase::Flushing | Phase::Shutdown | Phase::Unwrapped
            ) {
                return Ok(());
            }
            st.closed = true;
            st.phase
        };
        if phase == Phase::Handshake {
            return Self::abort_inner(slf, None);
        }
        me.set_phase(py, Phase::Flushing)?;
        let timer = me.loop_obj.call_method1(
            py,
            intern!(py, "call_later"),
            (
                me.shutdown_timeout,
                slf.getattr(intern!(py, "_check_shutdown_timeout"))?,
            ),
        )?;
        me.state.borrow_mut(py)?.shutdown_timer = Some(timer);
        Self::do_flush(slf)
    }

    fn do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::do_read(slf)?;
        {
            let mut st = slf.get().state.borrow_mut(py)?;
            if st.phase != Phase::Flushing {
                return Ok(());
            }
            st.phase = Phase::Shutdown;
        }
        Self::do_shutdown(slf)
    }

    fn do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let eof = me.state.borrow_mut(py)?.eof_received;
        let result = if eof {
            Ok(())
        } else {
            // Application data still arriving after our close_notify is discarded first:
            // OpenSSL's shutdown fails on it ("application data after close notify").
            if Self::discard_plaintext(slf)? {
                Self::call_eof_received(slf)?;
            }
            let name = if me.hot_is_c {
                intern!(py, "shutdown")
            } else {
                intern!(py, "unwrap")
            };
            me.hot.call_method0(py, name).map(drop)
        };
        match result {
            Ok(()) => {
                Self::process_outgoing(slf)?;
                Self::call_eof_received(slf)?;
                Self::on_shutdown_complete(slf, None)
            }
            Err(e) if is_again(py, &e) => Self::process_outgoing(slf),
            Err(e) if is_ssl_error(py, &e) => Self::on_shutdown_complete(slf, Some(e)),
            Err(e) => Err(e),
        }
    }

    /// Read and drop what plaintext the incoming BIO holds; returns whether the peer's
    /// close_notify came with it.
    fn discard_plaintext(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let mut buf = take_plaintext_buffer();
        let result = loop {
            match Self::read_records(slf, buf.as_mut_ptr(), buf.len()) {
                Ok((_, true)) => break Ok(true),
                Ok((n, false)) if n < buf.len() => break Ok(false),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        give_back_plaintext_buffer(buf);
        result
    }

    fn on_shutdown_complete(slf: &Bound<'_, Self>, failure: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let timer = me.state.borrow_mut(py)?.shutdown_timer.take();
        Self::cancel_timer(py, timer)?;
        if let Some(err) = failure {
            return Self::fatal_error(slf, err, "Fatal error on transport");
        }
        if let Some(lower) = me.lower(py) {
            me.loop_obj.call_method1(
                py,
                intern!(py, "call_soon"),
                (lower.getattr(py, intern!(py, "close"))?,),
            )?;
        }
        Ok(())
    }

    fn abort_inner(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        me.set_phase(py, Phase::Unwrapped)?;
        if let Some(lower) = me.lower(py) {
            match exc {
                Some(e) => lower.call_method1(py, intern!(py, "_force_close"), (e,))?,
                None => lower.call_method0(py, intern!(py, "abort"))?,
            };
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
        let handshake_timeout = match ssl_handshake_timeout {
            None => HANDSHAKE_TIMEOUT,
            Some(t) if t > 0.0 => t,
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "ssl_handshake_timeout should be a positive number, got {}",
                    format_seconds(t)
                )))
            }
        };
        let shutdown_timeout = match ssl_shutdown_timeout {
            None => SHUTDOWN_TIMEOUT,
            Some(t) if t > 0.0 => t,
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "ssl_shutdown_timeout should be a positive number, got {}",
                    format_seconds(t)
                )))
            }
        };
        let n = names(py)?;
        let sslcontext = if sslcontext.is_none() || !sslcontext.is_truthy()? {
            py.import("asyncio.sslproto")?
                .getattr("_create_transport_context")?
                .call1((server_side, server_hostname.clone()))?
        } else {
            sslcontext
        };
        // a server name only on the client side, and only a non-empty one
        let hostname = match server_hostname {
            Some(h) if !server_side && h.is_truthy()? => Some(h),
            _ => None,
        };
        let incoming = n.memory_bio.call0(py)?;
        let outgoing = n.memory_bio.call0(py)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("server_side", server_side)?;
        kwargs.set_item("server_hostname", hostname)?;
        let sslobj = sslcontext.call_method(
            intern!(py, "wrap_bio"),
            (incoming.clone_ref(py), outgoing.clone_ref(py)),
            Some(&kwargs),
        )?;
        let hot_is_c = sslobj.get_type().is(n.sslobject.bind(py));
        let hot = if hot_is_c {
            sslobj.getattr(intern!(py, "_sslobj"))?
        } else {
            sslobj.clone()
        };
        let extra = PyDict::new(py);
        extra.set_item("sslcontext", &sslcontext)?;
        let receiver = receiver_for(py, &app_protocol);
        // the context the caller passes (the one `connection_made` is scheduled in, or an
        // upgraded connection's own), else the current one
        let context = ProtocolContext::capture(py, context.as_ref())?;
        if let Some(w) = &waiter {
            if w.is_none() {
                return Err(PyTypeError::new_err("waiter must be a future or None"));
            }
        }
        Ok(TlsTransport {
            loop_obj: event_loop.unbind(),
            sslobj: sslobj.unbind(),
            hot: hot.unbind(),
            hot_is_c,
            incoming,
            outgoing,
            extra: extra.unbind(),
            context,
            handshake_timeout,
            shutdown_timeout,
            state: GilCell::new(State {
                phase: Phase::Unwrapped,
                app_phase: if call_connection_made {
                    AppPhase::Init
                } else {
                    AppPhase::Made
                },
                transport: None,
                protocol: Some(app_protocol.unbind()),
                receiver,
                waiter: waiter.filter(|w| !w.is_none()).map(Bound::unbind),
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
            }),
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
        let py = slf.py();
        let me = slf.get();
        {
            let mut st = me.state.borrow_mut(py)?;
            st.transport = Some(transport.unbind());
            st.phase = Phase::Handshake;
        }
        let timer = me.loop_obj.call_method1(
            py,
            intern!(py, "call_later"),
            (
                me.handshake_timeout,
                slf.getattr(intern!(py, "_check_handshake_timeout"))?,
            ),
        )?;
        me.state.borrow_mut(py)?.handshake_timer = Some(timer);
        Self::do_handshake(slf)
    }

    /// The stream transport below is gone.
    fn connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let _ = me.outgoing.call_method0(py, intern!(py, "read"));
        let (lost, backlog, timers, protocol) = {
            let mut st = me.state.borrow_mut(py)?;
            st.backlog_size = 0;
            st.conn_lost += 1;
            st.closed = true;
            let lost = st.phase != Phase::Handshake
                && matches!(st.app_phase, AppPhase::Made | AppPhase::Eof);
            if lost {
                st.app_phase = AppPhase::Lost;
            }
            st.phase = Phase::Unwrapped;
            (
                lost,
                std::mem::take(&mut st.backlog),
                [st.handshake_timer.take(), st.shutdown_timer.take()],
                st.protocol.take(),
            )
        };
        drop(backlog);
        if let (true, Some(protocol)) = (lost, &protocol) {
            let kwargs = PyDict::new(py);
            kwargs.set_item("context", me.context.object().bind(py))?;
            me.loop_obj.bind(py).call_method(
                intern!(py, "call_soon"),
                (protocol.getattr(py, intern!(py, "connection_lost"))?, &exc),
                Some(&kwargs),
            )?;
        }
        let transport = me.state.borrow_mut(py)?.transport.take();
        drop(transport);
        drop(protocol);
        Self::wakeup_waiter(slf, Some(&exc))?;
        for t in timers {
            Self::cancel_timer(py, t)?;
        }
        Ok(())
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
        let py = slf.py();
        let me = slf.get();
        let (phase, app_paused) = {
            let mut st = me.state.borrow_mut(py)?;
            st.eof_received = true;
            (st.phase, st.app_reading_paused)
        };
        let result = (|| -> PyResult<Option<bool>> {
            match phase {
                Phase::Handshake => {
                    let err = PyConnectionResetError::new_err(());
                    Self::on_handshake_complete(slf, Some(err))?;
                }
                Phase::Wrapped => {
                    me.set_phase(py, Phase::Flushing)?;
                    if app_paused {
                        return Ok(Some(true));
                    }
                    Self::do_flush(slf)?;
                }
                Phase::Flushing => {
                    Self::do_write(slf)?;
                    me.set_phase(py, Phase::Shutdown)?;
                    Self::do_shutdown(slf)?;
                }
                Phase::Shutdown => Self::do_shutdown(slf)?,
                Phase::Unwrapped => {}
            }
            Ok(None)
        })();
        if result.is_err() {
            if let Some(lower) = me.lower(py) {
                lower.call_method0(py, intern!(py, "close"))?;
            }
        }
        result
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
        let me = slf.get();
        let py = slf.py();
        if me.phase(py) == Phase::Handshake {
            let err = PyConnectionAbortedError::new_err(format!(
                "SSL handshake is taking longer than {} seconds: aborting the connection",
                format_seconds(me.handshake_timeout)
            ));
            Self::fatal_error(slf, err, "Fatal error on transport")?;
        }
        Ok(())
    }

    fn _check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        let py = slf.py();
        if matches!(me.phase(py), Phase::Flushing | Phase::Shutdown) {
            if let Some(lower) = me.lower(py) {
                let err = PyTimeoutError::new_err("SSL shutdown timed out");
                lower.call_method1(py, intern!(py, "_force_close"), (err.value(py),))?;
            }
        }
        Ok(())
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
        if let Ok(b) = data.downcast::<PyBytes>() {
            return Self::write_data(slf, &[b.as_bytes()], Some(data));
        }
        let is_bytes_like = data.is_instance_of::<pyo3::types::PyByteArray>()
            || data.is_instance_of::<pyo3::types::PyMemoryView>();
        if !is_bytes_like {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data)?;
        let copy = buffer.to_vec(slf.py())?;
        buffer.release(slf.py());
        Self::write_parts(slf, &[&copy])
    }

    /// Encrypt and send each item of ``list_of_data`` in order.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let mut joined = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
            let buffer = pyo3::buffer::PyBuffer::<u8>::get(&item)?;
            joined.extend_from_slice(&buffer.to_vec(py)?);
            buffer.release(py);
        }
        Self::write_parts(slf, &[&joined])
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

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.state
            .try_borrow_mut(py)
            .is_some_and(|st| !st.app_reading_paused)
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
        slf.get().loop_obj.call_method1(
            py,
            intern!(py, "call_soon"),
            (slf.getattr(intern!(py, "_resume"))?,),
        )?;
        Ok(())
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        Self::set_out_marks(slf, high, low)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.out_marks.limits())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.write_buffer_size(py)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_read_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        Self::set_in_marks(slf, high, low)
    }

    fn get_read_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.in_marks.limits())
    }

    fn get_read_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)
    }

    /// Whether the application's writing is paused (``loop.sendfile``'s fallback asks).
    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.state
            .try_borrow_mut(py)
            .is_some_and(|st| st.out_marks.paused())
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
        let receiver = receiver_for(py, &protocol);
        let old = {
            let mut st = self.state.borrow_mut(py)?;
            st.receiver = receiver;
            st.protocol.replace(protocol.unbind())
        };
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

/// Write from Rust to a TLS transport (the driver's writes over TLS).
pub fn tls_write(slf: &Bound<'_, TlsTransport>, parts: &[&[u8]]) -> PyResult<()> {
    TlsTransport::write_parts(slf, parts)
}
