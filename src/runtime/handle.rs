//! `Handle` and `TimerHandle`: a scheduled callback, as `loop.call_soon` / `call_later` return.
//!
//! A handle owns its callback, the positional arguments as the tuple `call_soon` received, and
//! the `contextvars.Context` to run in (a copy of the caller's when none was given, as asyncio
//! does). Running it enters the context and vectorcalls the callback with the tuple's items:
//! no Python frame of ours in between.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use super::cell::GilCell;

pub struct Callback {
    pub func: Py<PyAny>,
    pub args: Py<PyTuple>,
}

/// A callback scheduled on the loop (`asyncio.Handle`'s interface).
///
/// Not tracked by the garbage collector: the loop holds a handle only until it runs, is
/// cancelled or the loop closes, and each of those drops the callback ([`Handle::finish`],
/// `cancel`), so a handle cannot keep a reference cycle alive. Tracking would make every
/// collection walk every pending timer.
#[pyclass(module = "asyncpg_rs._native", subclass, frozen, weakref)]
pub struct Handle {
    callback: GilCell<Option<Callback>>,
    /// Kept for the handle's life (asyncio's `get_context()` works after the call too).
    /// Released in `Drop` with a plain decref: a handle is only ever freed by its
    /// `tp_dealloc`, with the GIL held.
    context: std::mem::ManuallyDrop<Py<PyAny>>,
    cancelled: AtomicBool,
    /// Runs each time its descriptor is ready (add_reader/add_writer) rather than once.
    persistent: bool,
    /// Where it was scheduled from, in debug mode (a `traceback.StackSummary`).
    source_traceback: GilCell<Option<Py<PyAny>>>,
}

/// `PyContext_CopyCurrent()`: what asyncio's handles run in when no context is given.
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

impl Handle {
    pub fn new(
        py: Python<'_>,
        func: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        let context = match context {
            Some(ctx) if !ctx.is_none() => ctx.unbind(),
            _ => copy_context(py)?,
        };
        Ok(Handle {
            callback: GilCell::new(Some(Callback {
                func: func.unbind(),
                args: args.unbind(),
            })),
            context: std::mem::ManuallyDrop::new(context),
            cancelled: AtomicBool::new(false),
            persistent: false,
            source_traceback: GilCell::new(None),
        })
    }

    /// A handle that runs every time its descriptor is ready.
    pub fn persistent(mut self) -> Handle {
        self.persistent = true;
        self
    }

    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn set_source_traceback(&self, py: Python<'_>, tb: Py<PyAny>) {
        let old = self
            .source_traceback
            .try_borrow_mut(py)
            .map(|mut slot| slot.replace(tb));
        drop(old);
    }

    pub fn source_traceback_of(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback
            .try_borrow_mut(py)
            .and_then(|slot| slot.as_ref().map(|tb| tb.clone_ref(py)))
    }

    fn parts(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyTuple>)> {
        let slot = self.callback.try_borrow_for_gc()?;
        slot.as_ref()
            .map(|cb| (cb.func.clone_ref(py), cb.args.clone_ref(py)))
    }

    /// Run the callback in its context. `Err` is whatever the callback raised.
    pub fn run(&self, py: Python<'_>) -> PyResult<()> {
        // A shared borrow for the duration of the call: if the callback cancels its own
        // handle, `cancel` finds the slot borrowed and only sets the flag, so the references
        // used here stay alive until the call returns.
        let Some(slot) = self.callback.try_borrow_for_gc() else {
            return Ok(());
        };
        let Some(cb) = slot.as_ref() else {
            return Ok(());
        };
        // SAFETY: the three objects are kept alive by `slot` for the whole call; a tuple's
        // items are a contiguous array of its size, which is what vectorcall takes.
        unsafe {
            let ctx = self.context.as_ptr();
            if ffi::PyContext_Enter(ctx) != 0 {
                return Err(PyErr::fetch(py));
            }
            let tuple = cb.args.as_ptr();
            let nargs = ffi::PyTuple_GET_SIZE(tuple) as usize;
            let items = (*(tuple as *mut ffi::PyTupleObject)).ob_item.as_ptr();
            let result =
                ffi::PyObject_Vectorcall(cb.func.as_ptr(), items, nargs, std::ptr::null_mut());
            let outcome = if result.is_null() {
                Err(PyErr::fetch(py))
            } else {
                ffi::Py_DECREF(result);
                Ok(())
            };
            if ffi::PyContext_Exit(ctx) != 0 {
                let exit_error = PyErr::fetch(py);
                return outcome.and(Err(exit_error));
            }
            outcome
        }
    }

    /// After the loop ran a one-shot handle: let go of the callback and its arguments,
    /// which breaks any cycle through the handle (a callback's object holding its own handle).
    pub fn finish(&self, py: Python<'_>) {
        // A watch cancelled by its own callback (remove_reader from inside it) could not drop
        // its callback then, the call still using it: drop it now, or a cycle through the
        // callback's closure and the untracked handle would never be collected.
        if !self.persistent || self.is_cancelled() {
            let old = self
                .callback
                .try_borrow_mut(py)
                .and_then(|mut slot| slot.take());
            // Dropped as `Bound`s: a plain decref, without pyo3's check for a held GIL.
            if let Some(cb) = old {
                drop((cb.func.into_bound(py), cb.args.into_bound(py)));
            }
        }
    }

    /// Cancel from the loop's side (a watch replaced or removed).
    pub fn cancel_silently(&self, py: Python<'_>) {
        self.cancel_inner(py);
    }

    fn cancel_inner(&self, py: Python<'_>) -> bool {
        if self.cancelled.swap(true, Ordering::Relaxed) {
            return false;
        }
        // Drop the callback to break reference cycles, as asyncio does.
        let old = self.callback.try_borrow_mut(py).map(|mut slot| slot.take());
        drop(old);
        true
    }

    /// What a slow-callback warning names: the task a task's step belongs to, else the
    /// handle's repr (callback, arguments, where it is defined), as asyncio's loop does.
    pub fn describe_for_log(&self, py: Python<'_>, this: &Bound<'_, PyAny>) -> String {
        if let Some((func, _)) = self.parts(py) {
            if let Ok(owner) = func.bind(py).getattr(pyo3::intern!(py, "__self__")) {
                let is_task = py
                    .import(pyo3::intern!(py, "asyncio"))
                    .and_then(|m| m.getattr(pyo3::intern!(py, "Task")))
                    .and_then(|task| owner.is_instance(&task))
                    .unwrap_or(false);
                if is_task {
                    if let Ok(r) = owner.repr() {
                        return r.to_string();
                    }
                }
            }
        }
        this.repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| format!("<Handle {}>", self.describe(py)))
    }

    fn describe(&self, py: Python<'_>) -> String {
        match self.parts(py) {
            Some((func, args)) => format_callback(py, func.bind(py), args.bind(py)),
            None => String::new(),
        }
    }
}

/// `name(arg, ...) at file:line`, as asyncio's reprs show a callback.
pub fn format_callback(
    py: Python<'_>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> String {
    let name = func
        .getattr(pyo3::intern!(py, "__qualname__"))
        .ok()
        .and_then(|n| n.downcast_into::<PyString>().ok().map(|s| s.to_string()))
        .or_else(|| func.repr().ok().map(|r| r.to_string()))
        .unwrap_or_else(|| "<callback>".to_owned());
    let mut out = name;
    out.push('(');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match arg.repr() {
            Ok(r) => out.push_str(&r.to_string()),
            Err(_) => out.push_str("<unrepresentable>"),
        }
    }
    out.push(')');
    if let Ok(code) = func.getattr(pyo3::intern!(py, "__code__")) {
        if let (Ok(file), Ok(line)) = (code.getattr("co_filename"), code.getattr("co_firstlineno"))
        {
            out.push_str(&format!(" at {file}:{line}"));
        }
    }
    out
}

#[pymethods]
impl Handle {
    /// Cancel the callback; a cancelled handle is skipped when its turn comes.
    fn cancel(&self, py: Python<'_>) {
        self.cancel_inner(py);
    }

    /// Whether :meth:`cancel` was called.
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The ``contextvars.Context`` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        (*self.context).clone_ref(py)
    }

    /// Run the callback now, in its context (what the loop does when its turn comes).
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        let outcome = self.run(py);
        if self.is_cancelled() {
            self.finish(py);
        }
        outcome
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback_of(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.is_cancelled() {
            "cancelled "
        } else {
            ""
        };
        format!("<Handle {state}{}>", self.describe(py))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: pyo3 drops a pyclass's contents from its tp_dealloc, which CPython calls
        // with the GIL held; the context is a reference we own and drop exactly once.
        unsafe {
            let context = std::mem::ManuallyDrop::take(&mut self.context);
            ffi::Py_DECREF(context.into_ptr());
        }
    }
}

/// A callback scheduled for a point in time (`asyncio.TimerHandle`'s interface).
#[pyclass(module = "asyncpg_rs._native", extends = Handle, frozen)]
pub struct TimerHandle {
    when: f64,
    /// Still in the loop's timer heap (not yet due, or due and not yet moved to the ready queue).
    scheduled: AtomicBool,
    /// The loop's count of cancelled handles still in its heap; it rebuilds the heap when
    /// they dominate.
    cancelled_in_heap: Arc<AtomicUsize>,
}

impl TimerHandle {
    pub fn new(when: f64, cancelled_in_heap: Arc<AtomicUsize>) -> TimerHandle {
        TimerHandle {
            when,
            scheduled: AtomicBool::new(true),
            cancelled_in_heap,
        }
    }

    /// The heap let go of this handle. A cancelled handle leaving the heap was counted in
    /// `cancelled_in_heap` (it was cancelled while scheduled), so the count drops by one.
    pub fn unschedule(&self, cancelled: bool) {
        if self.scheduled.swap(false, Ordering::Relaxed) && cancelled {
            self.cancelled_in_heap.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn when_due(&self) -> f64 {
        self.when
    }
}

#[pymethods]
impl TimerHandle {
    /// The loop time (``loop.time()``) at which the callback is due.
    fn when(&self) -> f64 {
        self.when
    }

    /// Cancel the callback; the loop drops cancelled timers lazily.
    fn cancel(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let me = slf.get();
        let base: &Handle = slf.as_super().get();
        if base.cancel_inner(py) && me.scheduled.load(Ordering::Relaxed) {
            me.cancelled_in_heap.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let py = slf.py();
        let base: &Handle = slf.as_super().get();
        let state = if base.is_cancelled() {
            "cancelled "
        } else {
            ""
        };
        format!(
            "<TimerHandle {state}when={} {}>",
            slf.get().when,
            base.describe(py)
        )
    }
}
