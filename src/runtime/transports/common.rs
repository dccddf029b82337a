//! What every transport of ours does the same way: report failures to the loop's exception
//! handler, schedule `connection_lost`, validate water marks, answer `get_extra_info`.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

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

/// `(high, low)` from `set_write_buffer_limits` arguments, with asyncio's defaults and check.
pub fn water_marks(
    high: Option<i64>,
    low: Option<i64>,
    default_high: usize,
) -> PyResult<(usize, usize)> {
    let high = high.unwrap_or(match low {
        Some(l) => 4 * l,
        None => default_high as i64,
    });
    let low = low.unwrap_or(high / 4);
    if !(high >= low && low >= 0) {
        return Err(PyValueError::new_err(format!(
            "high ({high}) must be >= low ({low}) must be >= 0"
        )));
    }
    Ok((high as usize, low as usize))
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
/// the socket or pipe object. Both may already be gone; neither is an error then.
pub fn release_descriptor(
    loop_obj: &Py<PyAny>,
    sock: &Py<PyAny>,
    fd: i32,
    attached: bool,
    py: Python<'_>,
) {
    if attached {
        let _ = loop_obj.call_method1(py, intern!(py, "_detach_transport"), (fd,));
    }
    let _ = sock.call_method0(py, intern!(py, "close"));
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
