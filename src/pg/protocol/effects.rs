//! Effects: what a protocol method wants done in Python, collected under the borrow and run
//! after it.
//!
//! Transports call their protocol back synchronously (`pause_writing` from inside `write`,
//! `connection_lost` from inside `close`), and a future's done-callbacks may call into the
//! protocol too. A method therefore mutates `PGProtocol` inside a short borrow that only
//! records [`Effect`]s, drops the borrow, and then performs them; nothing that can call back
//! runs while the protocol is borrowed. [`with_effects`] and [`operation`] are that pattern.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::PGProtocol;
use crate::runtime::transports::stream::transport_write;

/// A Python-visible action deferred until the protocol is no longer borrowed.
pub(super) enum Effect {
    Write(PyObject, bytes::Bytes),
    Resolve(PyObject, PyObject),
    Reject(PyObject, PyErr),
    CallSoon(PyObject, PyObject, Vec<PyObject>),
    CloseTransport(PyObject),
    Call(PyObject, &'static str),
    /// Call a Python callable right away (after the borrow), not via call_soon.
    Invoke(PyObject, Vec<PyObject>),
}

/// Perform `effects` in order; every one runs even when an earlier one failed, and the
/// first failure is returned.
pub(super) fn run_effects(py: Python<'_>, effects: Vec<Effect>) -> PyResult<()> {
    let mut first_err: Option<PyErr> = None;
    for fx in effects {
        let r = match fx {
            Effect::Write(transport, data) => transport_write(py, &transport, &data),
            Effect::Resolve(fut, value) => settle(py, &fut, Ok(value)),
            Effect::Reject(fut, err) => settle(py, &fut, Err(err)),
            Effect::CallSoon(loop_, cb, args) => {
                let mut all = Vec::with_capacity(args.len() + 1);
                all.push(cb);
                all.extend(args);
                PyTuple::new(py, all).and_then(|t| loop_.call_method1(py, "call_soon", t).map(drop))
            }
            Effect::CloseTransport(transport) => transport.call_method0(py, "close").map(drop),
            Effect::Call(obj, method) => obj.call_method0(py, method).map(drop),
            Effect::Invoke(cb, args) => {
                PyTuple::new(py, args).and_then(|t| cb.call1(py, t).map(drop))
            }
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Resolve a future unless the caller already gave up on it (timeout, cancellation).
///
/// Settling is tried first and an already-done future is detected by its InvalidStateError:
/// that saves a `done()` call on every query, and giving up is the rare case.
pub(super) fn settle(py: Python<'_>, fut: &PyObject, outcome: PyResult<PyObject>) -> PyResult<()> {
    let fut = fut.bind(py);
    let r = match outcome {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
    };
    match r {
        Ok(_) => Ok(()),
        Err(e) if fut.call_method0("done")?.is_truthy()? => {
            drop(e);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Run `step` on the borrowed protocol, then the effects it collected. A failing step
/// drops what it collected: nothing of a refused call reaches Python.
pub(super) fn with_effects<T>(
    slf: &Bound<'_, PGProtocol>,
    step: impl FnOnce(&mut PGProtocol, &mut Vec<Effect>) -> PyResult<T>,
) -> PyResult<T> {
    let mut fx = Vec::new();
    let value = {
        let mut this = slf.borrow_mut();
        step(&mut this, &mut fx)?
    };
    run_effects(slf.py(), fx)?;
    Ok(value)
}

/// [`with_effects`] for an operation that needs an idle, ready connection.
pub(super) fn operation<T>(
    slf: &Bound<'_, PGProtocol>,
    step: impl FnOnce(&mut PGProtocol, &mut Vec<Effect>) -> PyResult<T>,
) -> PyResult<T> {
    with_effects(slf, |this, fx| {
        this.check_ready(slf.py())?;
        step(this, fx)
    })
}
