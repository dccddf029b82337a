//! What every transport of ours does the same way: report failures to the loop's exception
//! handler, schedule `connection_lost`, keep water marks, answer `get_extra_info`, and run
//! protocol callbacks in the `contextvars` context the connection was set up in.

use pyo3::exceptions::{
    PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyString};

/// The `contextvars.Context` a transport's Python protocol callbacks run in: the one that was
/// current where the connection (server, endpoint, subprocess) was set up, as uvloop does, so
/// a request-scoped variable (a tracing span, a request id) set around `create_connection`
/// is what `data_received` and `connection_lost` see, whoever triggered them.
///
/// Capture it once when the transport is made ([`ProtocolContext::capture`]) and wrap every
/// call of a *Python* protocol method in [`ProtocolContext::run`]. A protocol in Rust (the
/// native receive path) is called without it: entering a context is cheap, but not free, and
/// nothing of Python runs there to see it.
pub struct ProtocolContext(Py<PyAny>);

impl ProtocolContext {
    /// `given` (a `contextvars.Context`, as the Python layer passes when it also schedules
    /// `connection_made` in it), or a copy of the current context when `given` is None.
    pub fn capture(py: Python<'_>, given: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        match given {
            Some(ctx) if !ctx.is_none() => {
                // SAFETY: a type check on a live object.
                if unsafe { ffi::PyContext_CheckExact(ctx.as_ptr()) } == 0 {
                    return Err(PyTypeError::new_err(format!(
                        "context must be a contextvars.Context, not {}",
                        ctx.get_type().name()?
                    )));
                }
                Ok(ProtocolContext(ctx.clone().unbind()))
            }
            // SAFETY: returns a new reference or NULL with an exception set.
            _ => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())
                    .map(|c| ProtocolContext(c.unbind()))
            },
        }
    }

    /// The context object (for `call_soon(..., context=...)` and the GC).
    pub fn object(&self) -> &Py<PyAny> {
        &self.0
    }

    /// Run `call` with the context entered. A context can be entered only once at a time:
    /// when it already is (a protocol callback's own write made the transport call
    /// `pause_writing`, or `connection_made` runs in it from its handle), `call` runs as it
    /// is, inside it already.
    pub fn run<R>(&self, py: Python<'_>, call: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
        let ctx = self.0.as_ptr();
        // SAFETY: `ctx` is a live Context (checked in `capture`) kept alive by `self`;
        // Enter and Exit are paired on this thread with the GIL held.
        unsafe {
            if ffi::PyContext_Enter(ctx) != 0 {
                let err = PyErr::fetch(py);
                if err.is_instance_of::<PyRuntimeError>(py) {
                    return call();
                }
                return Err(err);
            }
            let outcome = call();
            if ffi::PyContext_Exit(ctx) != 0 {
                let exit_error = PyErr::fetch(py);
                return outcome.and(Err(exit_error));
            }
            outcome
        }
    }
}

/// `KeyboardInterrupt` and `SystemExit` propagate; nothing reports and swallows them.
pub fn is_interrupt(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// `loop.call_exception_handler({message, exception, transport, protocol})`.
pub fn report(
    loop_obj: &Py<PyAny>,
    transport: &Bound<'_, PyAny>,
    protocol: Option<Py<PyAny>>,
    err: &PyErr,
    message: &str,
) -> PyResult<()> {
    let py = transport.py();
    let ctx = PyDict::new(py);
    ctx.set_item("message", message)?;
    ctx.set_item("exception", err.value(py))?;
    ctx.set_item("transport", transport)?;
    if let Some(p) = protocol {
        ctx.set_item("protocol", p)?;
    }
    loop_obj.call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
    Ok(())
}

/// `transport._call_connection_lost(exc)` on the next iteration, as asyncio's transports do.
pub fn schedule_connection_lost(
    loop_obj: &Py<PyAny>,
    transport: &Bound<'_, PyAny>,
    exc: Py<PyAny>,
) -> PyResult<()> {
    let py = transport.py();
    let callback = transport.getattr(intern!(py, "_call_connection_lost"))?;
    loop_obj.call_method1(py, intern!(py, "call_soon"), (callback, exc))?;
    Ok(())
}

/// `loop.call_soon(obj.<method>)`: a transport's next step, after what is ready now.
pub fn call_soon_method(
    loop_obj: &Py<PyAny>,
    obj: &Bound<'_, PyAny>,
    method: &Bound<'_, PyString>,
) -> PyResult<()> {
    let py = obj.py();
    loop_obj.call_method1(py, intern!(py, "call_soon"), (obj.getattr(method)?,))?;
    Ok(())
}

/// `loop.call_later(delay, obj.<method>)`: the timer handle, to cancel when the wait is over.
pub fn call_later_method(
    loop_obj: &Py<PyAny>,
    delay: f64,
    obj: &Bound<'_, PyAny>,
    method: &Bound<'_, PyString>,
) -> PyResult<Py<PyAny>> {
    let py = obj.py();
    loop_obj.call_method1(py, intern!(py, "call_later"), (delay, obj.getattr(method)?))
}

/// A water mark as `set_*_buffer_limits` takes it: bytes, or None for asyncio's default.
pub type Mark = Option<i64>;

/// Which side of the high mark pauses: asyncio's socket transports pause once the buffer is
/// over it, its `SSLProtocol` once the buffer reaches it.
#[derive(Clone, Copy)]
pub enum PauseAt {
    Above,
    Reaching,
}

/// What a buffer's size now asks of the side filling it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    Pause,
    Resume,
}

/// A buffer's high and low water marks and whether the side filling it is paused: what
/// `set_write_buffer_limits`/`get_write_buffer_limits` (and TLS's read-buffer twins) set
/// and answer on every transport, and the one rule for when to pause and resume.
pub struct WaterMarks {
    high: usize,
    low: usize,
    default_high: usize,
    pause_at: PauseAt,
    paused: bool,
}

impl WaterMarks {
    pub fn new(default_high: usize, pause_at: PauseAt) -> Self {
        WaterMarks {
            high: default_high,
            low: default_high / 4,
            default_high,
            pause_at,
            paused: false,
        }
    }

    /// `set_*_buffer_limits(high, low)`, with asyncio's defaults and check. The caller looks
    /// at the buffer again (`crossing`): the new marks may pause or resume at once.
    pub fn set(&mut self, high: Mark, low: Mark) -> PyResult<()> {
        let high = high.unwrap_or(match low {
            Some(l) => 4 * l,
            None => self.default_high as i64,
        });
        let low = low.unwrap_or(high / 4);
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        (self.high, self.low) = (high as usize, low as usize);
        Ok(())
    }

    /// `get_*_buffer_limits()`: `(low, high)`.
    pub fn limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    pub fn high(&self) -> usize {
        self.high
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The buffer holds `size` bytes: pause past the high mark, resume at or below the low
    /// one, each once (the caller tells the other side when this says so).
    pub fn crossing(&mut self, size: usize) -> Option<Crossing> {
        let over = match self.pause_at {
            PauseAt::Above => size > self.high,
            PauseAt::Reaching => size >= self.high,
        };
        let change = if over && !self.paused {
            Crossing::Pause
        } else if size <= self.low && self.paused {
            Crossing::Resume
        } else {
            return None;
        };
        self.paused = change == Crossing::Pause;
        Some(change)
    }
}

/// `get_extra_info(name, default)` from the transport's extra dict.
pub fn extra_info(
    py: Python<'_>,
    extra: &Py<PyDict>,
    name: &Bound<'_, PyAny>,
    default: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    match extra.bind(py).get_item(name)? {
        Some(v) => Ok(v.unbind()),
        None => Ok(default.unwrap_or_else(|| py.None())),
    }
}

/// After `connection_lost`: stop watching the descriptor (if the reactor had it) and close
/// the socket or pipe object. Both may already be gone; neither is an error then. The closed
/// socket is no longer reported as `get_extra_info('socket')` (uvloop reports none once the
/// transport is closed: a transport aborted in `connection_made` has no socket to show).
pub fn release_descriptor(
    loop_obj: &Py<PyAny>,
    sock: &Py<PyAny>,
    extra: &Py<PyDict>,
    fd: i32,
    attached: bool,
    py: Python<'_>,
) {
    if attached {
        let _ = loop_obj.call_method1(py, intern!(py, "_detach_transport"), (fd,));
    }
    let _ = sock.call_method0(py, intern!(py, "close"));
    let extra = extra.bind(py);
    if extra.contains(intern!(py, "socket")).unwrap_or(false) {
        let _ = extra.del_item(intern!(py, "socket"));
    }
}

/// The asyncio transport class a transport of ours answers `__class__` with, so that
/// `isinstance(transport, asyncio.Transport)` (and its read/write/datagram kin) holds.
pub fn presented_class(
    py: Python<'_>,
    cell: &'static GILOnceCell<Py<PyAny>>,
    name: &str,
) -> PyResult<Py<PyAny>> {
    cell.get_or_try_init(py, || {
        py.import("asyncpg_rs.eventloop._transport_kinds")?
            .getattr(name)
            .map(Bound::unbind)
    })
    .map(|class| class.clone_ref(py))
}
