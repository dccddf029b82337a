//! `LoopCore`: the native half of `asyncpg_rs.Loop` — ready queue, timer heap, reactor and
//! the run loop itself. The Python class `asyncpg_rs.eventloop.Loop` subclasses it and adds
//! the parts of asyncio's loop API that are not on the hot path.
//!
//! One iteration, as asyncio's: re-arm fired descriptors, poll (without blocking when
//! callbacks are ready), queue the I/O callbacks, queue the timers that are due, then run the
//! callbacks that were ready when the iteration began; callbacks they schedule wait for the
//! next iteration. `stop()` ends the loop after the current iteration.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{
    PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::cell::GilCell;
use super::clock::{monotonic, thread_ident};
use super::handle::{Handle, TimerHandle};
use super::reactor::{Direction, Reactor};
use super::sockets;
use super::timers::TimerHeap;
use super::transports::Owner;

/// Polls skipped in a row while callbacks keep the loop busy and only the loop's own
/// descriptors are watched; after this many the loop looks at them anyway.
const MAX_SKIPPED_POLLS: u32 = 64;
/// Rebuild the timer heap when more than this fraction of it is cancelled handles…
const CANCELLED_FRACTION: usize = 2;
/// …and it holds at least this many.
const MIN_CANCELLED_REBUILD: usize = 100;

#[pyclass(module = "asyncpg_rs._native", subclass, frozen)]
pub struct LoopCore {
    ready: GilCell<VecDeque<Py<Handle>>>,
    timers: GilCell<TimerHeap>,
    cancelled_in_heap: Arc<AtomicUsize>,
    reactor: Reactor,
    stopping: AtomicBool,
    closed: AtomicBool,
    running: AtomicBool,
    debug: AtomicBool,
    slow_callback_bits: AtomicU64,
    /// `threading.get_ident()` of the thread running the loop, 0 when not running.
    thread_id: AtomicU64,
    skipped_polls: AtomicU32,
    /// `set_task_factory`'s callable; None: `asyncio.Task`.
    task_factory: GilCell<Option<Py<PyAny>>>,
}

/// Run `f`, turning a panic into its message instead of unwinding further.
fn guard_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned())
    })
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// `asyncio.Task(coro, loop=loop[, name=...][, context=...])`, as one vectorcall with keyword
/// names (no kwargs dict): every `create_task` comes through here.
fn new_task<'py>(
    core: &Bound<'py, LoopCore>,
    coro: &Bound<'py, PyAny>,
    name: Option<&Bound<'py, PyAny>>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = core.py();
    static TASK: pyo3::sync::GILOnceCell<(Py<PyAny>, [Py<PyTuple>; 4])> =
        pyo3::sync::GILOnceCell::new();
    let (task, kwnames) = TASK.get_or_try_init(py, || {
        let class = py
            .import(intern!(py, "asyncio"))?
            .getattr(intern!(py, "Task"))?
            .unbind();
        let names = [
            PyTuple::new(py, ["loop"])?.unbind(),
            PyTuple::new(py, ["loop", "name"])?.unbind(),
            PyTuple::new(py, ["loop", "context"])?.unbind(),
            PyTuple::new(py, ["loop", "name", "context"])?.unbind(),
        ];
        Ok::<_, PyErr>((class, names))
    })?;
    let mut args = [
        coro.as_ptr(),
        core.as_ptr(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    ];
    let which = match (name, context) {
        (None, None) => 0,
        (Some(n), None) => {
            args[2] = n.as_ptr();
            1
        }
        (None, Some(c)) => {
            args[2] = c.as_ptr();
            2
        }
        (Some(n), Some(c)) => {
            args[2] = n.as_ptr();
            args[3] = c.as_ptr();
            3
        }
    };
    // SAFETY: every pointer in `args` is a borrowed reference kept alive by the caller's
    // `Bound`s for the whole call; one positional argument, then the named ones.
    unsafe {
        let result = pyo3::ffi::PyObject_Vectorcall(
            task.as_ptr(),
            args.as_ptr(),
            1,
            kwnames[which].as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, result)
    }
}

/// A descriptor from an int or an object with `fileno()`, as asyncio's selectors accept.
pub fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = match obj.extract::<i64>() {
        Ok(fd) => fd,
        Err(_) => {
            let fileno = obj.call_method0(intern!(obj.py(), "fileno")).map_err(|_| {
                PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            fileno.extract::<i64>().map_err(|_| {
                PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
        }
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as RawFd)
}

impl LoopCore {
    pub(crate) fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// `add_reader`, `remove_reader` and the writer pair must not touch a descriptor a
    /// transport owns in the reactor: asyncio raises the same.
    fn ensure_no_transport(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        match self.reactor.transport_of(py, fd) {
            None => Ok(()),
            Some(transport) => Err(PyRuntimeError::new_err(format!(
                "File descriptor {fd} is used by transport {}",
                transport.object(py).repr()?
            ))),
        }
    }

    /// A transport's buffer filled (or drained): watch (or stop watching) writability.
    pub(crate) fn set_transport_writing(
        &self,
        py: Python<'_>,
        fd: RawFd,
        writing: bool,
    ) -> PyResult<()> {
        self.reactor.set_transport_writing(py, fd, writing)
    }

    #[inline]
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    /// What asyncio checks in debug mode before scheduling: the right thread, a real callback.
    fn debug_checks(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        threadsafe: bool,
    ) -> PyResult<()> {
        if !threadsafe {
            let owner = self.thread_id.load(Ordering::Relaxed);
            if owner != 0 && owner != thread_ident() {
                return Err(PyRuntimeError::new_err(
                    "Non-thread-safe operation invoked on an event loop other than the current one",
                ));
            }
        }
        let coroutines = py.import(intern!(py, "asyncio"))?;
        if coroutines
            .call_method1(intern!(py, "iscoroutine"), (callback,))?
            .is_truthy()?
            || coroutines
                .call_method1(intern!(py, "iscoroutinefunction"), (callback,))?
                .is_truthy()?
        {
            return Err(PyTypeError::new_err(format!(
                "coroutines cannot be used with {method}()"
            )));
        }
        Ok(())
    }

    fn check_callable(callback: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
        if callback.is_callable() {
            Ok(())
        } else {
            Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}(), got {}",
                callback.repr().map(|r| r.to_string()).unwrap_or_default()
            )))
        }
    }

    fn new_handle<'py>(
        &self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
        threadsafe: bool,
    ) -> PyResult<Handle> {
        Self::check_callable(&callback, method)?;
        let debug = self.debug.load(Ordering::Relaxed);
        if debug {
            self.debug_checks(py, &callback, method, threadsafe)?;
        }
        let handle = Handle::new(py, callback, args, context)?;
        if debug {
            let stack = py
                .import(intern!(py, "traceback"))?
                .call_method0(intern!(py, "extract_stack"))?;
            handle.set_source_traceback(py, stack.unbind());
        }
        Ok(handle)
    }

    fn schedule_at<'py>(
        slf: &Bound<'py, Self>,
        when: f64,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let me = slf.get();
        me.check_closed()?;
        if when.is_nan() {
            return Err(PyValueError::new_err("when must be a number, not NaN"));
        }
        let base = me.new_handle(py, callback, args, context, method, false)?;
        let init = PyClassInitializer::from(base)
            .add_subclass(TimerHandle::new(when, me.cancelled_in_heap.clone()));
        let timer = Py::new(py, init)?;
        me.timers.borrow_mut(py)?.push(when, timer.clone_ref(py));
        Ok(timer)
    }

    fn report_callback_error(
        slf: &Bound<'_, Self>,
        handle: &Py<Handle>,
        err: PyErr,
    ) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let context = PyDict::new(py);
        let handle_repr = handle.bind(py).repr()?.to_string();
        context.set_item(
            "message",
            format!(
                "Exception in callback {}",
                &handle_repr[1..handle_repr.len() - 1]
            ),
        )?;
        context.set_item("exception", err.value(py))?;
        context.set_item("handle", handle)?;
        if let Some(tb) = handle.get().source_traceback_of(py) {
            context.set_item("source_traceback", tb)?;
        }
        slf.call_method1(intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    /// A Rust panic inside one callback's processing is a bug of ours: report it through the
    /// exception handler, like a failing callback, and keep the loop (and the process) alive.
    fn report_panic(
        slf: &Bound<'_, Self>,
        outcome: Result<PyResult<()>, String>,
        source: impl FnOnce() -> Py<PyAny>,
    ) -> PyResult<()> {
        match outcome {
            Ok(result) => result,
            Err(message) => {
                let py = slf.py();
                let context = PyDict::new(py);
                context.set_item(
                    "message",
                    format!("internal error in the asyncpg_rs event loop: {message}"),
                )?;
                context.set_item("exception", PyRuntimeError::new_err(message).value(py))?;
                context.set_item("source", source())?;
                slf.call_method1(intern!(py, "call_exception_handler"), (context,))?;
                Ok(())
            }
        }
    }

    fn run_handle(slf: &Bound<'_, Self>, handle: &Py<Handle>, debug: bool) -> PyResult<()> {
        let py = slf.py();
        let h = handle.get();
        if !debug {
            let outcome = match h.run(py) {
                Ok(()) => Ok(()),
                Err(err) => Self::report_callback_error(slf, handle, err),
            };
            h.finish(py);
            return outcome;
        }
        let started = monotonic();
        let outcome = h.run(py);
        let took = monotonic() - started;
        if took >= f64::from_bits(slf.get().slow_callback_bits.load(Ordering::Relaxed)) {
            let logger = py
                .import(intern!(py, "asyncio.log"))?
                .getattr(intern!(py, "logger"))?;
            // a string, not the handle: a log record formatted later (a queue handler, a
            // mock) would find the handle already without its callback
            logger.call_method1(
                intern!(py, "warning"),
                (
                    "Executing %s took %.3f seconds",
                    h.describe_for_log(py, handle.bind(py).as_any()),
                    took,
                ),
            )?;
        }
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(err) => Self::report_callback_error(slf, handle, err),
        };
        h.finish(py);
        outcome
    }

    /// Drop cancelled timers from the top of the heap, and rebuild the heap when they
    /// dominate it, so a program that keeps cancelling timeouts does not grow it.
    fn prune_timers(&self, py: Python<'_>) -> PyResult<()> {
        let mut dropped = Vec::new();
        {
            let mut timers = self.timers.borrow_mut(py)?;
            let cancelled = self.cancelled_in_heap.load(Ordering::Relaxed);
            if timers.len() >= MIN_CANCELLED_REBUILD
                && cancelled * CANCELLED_FRACTION > timers.len()
            {
                dropped = timers.remove_where(|h| h.bind(py).as_super().get().is_cancelled());
            }
            while let Some((_, top)) = timers.peek() {
                if !top.bind(py).as_super().get().is_cancelled() {
                    break;
                }
                dropped.extend(timers.pop());
            }
        }
        for timer in &dropped {
            timer.get().unschedule(true);
        }
        drop(dropped);
        Ok(())
    }

    fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        me.reactor.rearm(py)?;
        me.prune_timers(py)?;

        let earlier = me.ready.borrow_mut(py)?.len();
        let has_ready = earlier > 0;
        let next_timer = me.timers.borrow_mut(py)?.peek().map(|(when, _)| when);
        let timeout = if has_ready || me.stopping.load(Ordering::Relaxed) {
            Some(Duration::ZERO)
        } else {
            next_timer.map(|when| {
                Duration::from_secs_f64((when - monotonic()).clamp(0.0, 86400.0 * 365.0))
            })
        };

        // Nothing but the loop's own descriptors to look at and work waiting: a poll would
        // only cost a system call. Look anyway every so often, for signal wake-ups.
        let skip = timeout == Some(Duration::ZERO)
            && !me.reactor.has_user_watches()
            && me.skipped_polls.load(Ordering::Relaxed) < MAX_SKIPPED_POLLS;
        if skip {
            me.skipped_polls.fetch_add(1, Ordering::Relaxed);
        } else {
            me.skipped_polls.store(0, Ordering::Relaxed);
            let (events, interrupted) = me.reactor.poll(py, timeout)?;
            if interrupted {
                // Run Python-level signal handlers now (KeyboardInterrupt for Ctrl-C).
                py.check_signals()?;
            }
            if !events.is_empty() {
                let mut due = Vec::with_capacity(events.len());
                let mut transports = Vec::new();
                let mut sock_due = Vec::new();
                for ready in &events {
                    me.reactor
                        .handles_for(py, ready, &mut due, &mut transports, &mut sock_due)?;
                }
                me.ready
                    .borrow_mut(py)?
                    .extend(due.into_iter().filter(|h| !h.get().is_cancelled()));
                // Callbacks scheduled before this poll come first (asyncio's ready queue is
                // FIFO, and uvloop runs it before polling): a task created just now must
                // run before a datagram or a read its protocol waits for is delivered.
                if earlier > 0 && !(transports.is_empty() && sock_due.is_empty()) {
                    Self::run_ready(slf, earlier)?;
                }
                // Transports run their protocol callbacks right away, as uvloop's do.
                for (transport, readable, writable, read_closed) in transports {
                    let outcome =
                        guard_panic(|| transport.on_ready(py, readable, writable, read_closed));
                    Self::report_panic(slf, outcome, || transport.object(py).unbind())?;
                }
                // So do socket operations: the read, then the future's result.
                for (fd, direction, op) in sock_due {
                    let outcome = guard_panic(|| sockets::run_due(slf, fd, direction, op));
                    Self::report_panic(slf, outcome, || py.None())?;
                }
            }
        }

        if next_timer.is_some() {
            let deadline = monotonic();
            let mut due = Vec::new();
            {
                let mut timers = me.timers.borrow_mut(py)?;
                while let Some(timer) = timers.pop_due(deadline) {
                    due.push(timer);
                }
            }
            if !due.is_empty() {
                let mut moved = Vec::with_capacity(due.len());
                for timer in due {
                    let bound = timer.into_bound(py);
                    let cancelled = bound.as_super().get().is_cancelled();
                    bound.get().unschedule(cancelled);
                    if !cancelled {
                        moved.push(bound.into_super().unbind());
                    }
                }
                me.ready.borrow_mut(py)?.extend(moved);
            }
        }

        let todo = me.ready.borrow_mut(py)?.len();
        Self::run_ready(slf, todo)
    }

    /// Run the first `count` handles of the ready queue (those added meanwhile wait).
    fn run_ready(slf: &Bound<'_, Self>, count: usize) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let debug = me.debug.load(Ordering::Relaxed);
        for _ in 0..count {
            let Some(handle) = me.ready.borrow_mut(py)?.pop_front() else {
                break;
            };
            // as a `Bound`, its release at the end of the turn is a plain decref
            let handle = handle.into_bound(py);
            if handle.get().is_cancelled() {
                continue;
            }
            let outcome = guard_panic(|| Self::run_handle(slf, handle.as_unbound(), debug));
            Self::report_panic(slf, outcome, || handle.clone().into_any().unbind())?;
        }
        Ok(())
    }

    /// A new handle for `callback(*args)` at the end of the ready queue.
    fn enqueue<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let me = slf.get();
        me.check_closed()?;
        let handle = Py::new(
            py,
            me.new_handle(py, callback, args, context, method, threadsafe)?,
        )?;
        me.ready.borrow_mut(py)?.push_back(handle.clone_ref(py));
        Ok(handle)
    }

    fn watch(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        direction: Direction,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        internal: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let me = slf.get();
        me.check_closed()?;
        let fd = fileobj_to_fd(fd)?;
        me.ensure_no_transport(py, fd)?;
        let method = if direction == Direction::Read {
            "add_reader"
        } else {
            "add_writer"
        };
        let handle = Py::new(
            py,
            me.new_handle(py, callback, args, None, method, false)?
                .persistent(),
        )?;
        let old = me
            .reactor
            .set(py, fd, direction, Some(handle.clone_ref(py)), internal)?;
        if let Some(old) = old {
            old.get().cancel_silently(py);
        }
        Ok(handle)
    }

    fn unwatch(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        direction: Direction,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let fd = fileobj_to_fd(fd)?;
        if me.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        me.ensure_no_transport(py, fd)?;
        match me.reactor.set(py, fd, direction, None, false)? {
            Some(old) => {
                old.get().cancel_silently(py);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Ok(LoopCore {
            ready: GilCell::new(VecDeque::with_capacity(256)),
            timers: GilCell::new(TimerHeap::default()),
            cancelled_in_heap: Arc::new(AtomicUsize::new(0)),
            reactor: Reactor::new()?,
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            slow_callback_bits: AtomicU64::new(0.1f64.to_bits()),
            thread_id: AtomicU64::new(0),
            skipped_polls: AtomicU32::new(0),
            task_factory: GilCell::new(None),
        })
    }

    /// A new ``asyncio.Future`` (CPython's C future) attached to this loop.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        static FUTURE: pyo3::sync::GILOnceCell<Py<PyAny>> = pyo3::sync::GILOnceCell::new();
        let future = FUTURE.get_or_try_init(py, || {
            py.import(intern!(py, "asyncio"))?
                .getattr(intern!(py, "Future"))
                .map(Bound::unbind)
        })?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), slf)?;
        future.bind(py).call((), Some(&kwargs))
    }

    /// The loop's clock: seconds on ``time.monotonic()``'s clock.
    fn time(&self) -> f64 {
        monotonic()
    }

    /// Schedule ``callback(*args)`` for the next iteration; returns a :class:`Handle`.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::enqueue(slf, callback, args, context, "call_soon", false)
    }

    /// :meth:`call_soon` from any thread: wakes the loop if it is waiting.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let handle = Self::enqueue(slf, callback, args, context, "call_soon_threadsafe", true)?;
        slf.get().reactor.wake()?;
        Ok(handle)
    }

    /// Schedule ``callback(*args)`` after ``delay`` seconds; returns a :class:`TimerHandle`.
    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later<'py>(
        slf: &Bound<'py, Self>,
        delay: Option<f64>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let delay = delay.ok_or_else(|| PyTypeError::new_err("delay must not be None"))?;
        Self::schedule_at(
            slf,
            monotonic() + delay,
            callback,
            args,
            context,
            "call_later",
        )
    }

    /// Schedule ``callback(*args)`` at loop time ``when``; returns a :class:`TimerHandle`.
    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at<'py>(
        slf: &Bound<'py, Self>,
        when: Option<f64>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = when.ok_or_else(|| PyTypeError::new_err("when cannot be None"))?;
        Self::schedule_at(slf, when, callback, args, context, "call_at")
    }

    /// Call ``callback(*args)`` whenever ``fd`` (or ``fd.fileno()``) is readable.
    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<()> {
        Self::watch(slf, fd, Direction::Read, callback, args, false).map(drop)
    }

    /// :meth:`add_reader` returning the :class:`Handle`, so a waiter can tell whether its own
    /// watch is still the one installed.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::watch(slf, fd, Direction::Read, callback, args, false)
    }

    /// :meth:`add_writer` returning the :class:`Handle`.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::watch(slf, fd, Direction::Write, callback, args, false)
    }

    /// Stop watching ``fd`` for reading; returns whether it was watched.
    fn remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::unwatch(slf, fd, Direction::Read)
    }

    /// Call ``callback(*args)`` whenever ``fd`` (or ``fd.fileno()``) is writable.
    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<()> {
        Self::watch(slf, fd, Direction::Write, callback, args, false).map(drop)
    }

    /// Stop watching ``fd`` for writing; returns whether it was watched.
    fn remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::unwatch(slf, fd, Direction::Write)
    }

    /// Watch the loop's own descriptor (the signal wake-up socket): it does not make the
    /// loop poll between callbacks.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_internal_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<()> {
        Self::watch(slf, fd, Direction::Read, callback, args, true).map(drop)
    }

    fn _is_watched(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, write: bool) -> PyResult<bool> {
        let fd = fileobj_to_fd(fd)?;
        let direction = if write {
            Direction::Write
        } else {
            Direction::Read
        };
        Ok(slf.get().reactor.is_watched(slf.py(), fd, direction))
    }

    /// Schedule ``coro`` as an ``asyncio.Task`` (or what the task factory makes). Keywords
    /// beyond ``name`` and ``context`` (Python 3.14's ``eager_start``, say) go to the task.
    #[pyo3(signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        me.check_closed()?;
        let factory = me
            .task_factory
            .borrow_mut(py)?
            .as_ref()
            .map(|f| f.clone_ref(py));
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        if let Some(extra) = kwargs.filter(|k| !k.is_empty()) {
            // the 3.14 way: every keyword goes to the factory or the task as given
            let all = extra.copy()?;
            if let Some(name) = name {
                all.set_item(intern!(py, "name"), name)?;
            }
            if let Some(ctx) = context {
                all.set_item(intern!(py, "context"), ctx)?;
            }
            return match factory {
                Some(factory) => factory.bind(py).call((slf, coro), Some(&all)),
                None => {
                    all.set_item(intern!(py, "loop"), slf)?;
                    py.import(intern!(py, "asyncio"))?
                        .getattr(intern!(py, "Task"))?
                        .call((coro,), Some(&all))
                }
            };
        }
        let Some(factory) = factory else {
            // (asyncio drops the last frame of a debug-mode task's source traceback: its own
            // create_task; called natively, there is no such frame to drop)
            return new_task(slf, coro, name, context);
        };
        let task = match context {
            None => factory.bind(py).call1((slf, coro))?,
            Some(ctx) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "context"), ctx)?;
                factory.bind(py).call((slf, coro), Some(&kwargs))?
            }
        };
        if let Some(name) = name {
            match task.call_method1(intern!(py, "set_name"), (name,)) {
                Err(e) if !e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
                    return Err(e)
                }
                _ => {}
            }
        }
        Ok(task)
    }

    /// Use ``factory(loop, coro, **kwargs)`` to make tasks; None restores the default.
    fn set_task_factory(&self, py: Python<'_>, factory: Bound<'_, PyAny>) -> PyResult<()> {
        let factory = if factory.is_none() {
            None
        } else if factory.is_callable() {
            Some(factory.unbind())
        } else {
            return Err(PyTypeError::new_err(
                "task factory must be a callable or None",
            ));
        };
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py)?, factory);
        drop(old);
        Ok(())
    }

    /// The task factory, or None for the default.
    fn get_task_factory(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self
            .task_factory
            .borrow_mut(py)?
            .as_ref()
            .map(|f| f.clone_ref(py)))
    }

    /// Whether debug mode is on.
    fn get_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// Turn debug mode on or off.
    fn set_debug(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug.store(enabled.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    /// In debug mode, callbacks slower than this many seconds are logged.
    #[getter]
    fn get_slow_callback_duration(&self) -> f64 {
        f64::from_bits(self.slow_callback_bits.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_slow_callback_duration(&self, value: f64) {
        self.slow_callback_bits
            .store(value.to_bits(), Ordering::Relaxed);
    }

    /// Whether the loop is running.
    fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Whether the loop was closed.
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stop after the current iteration.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Run iterations until :meth:`stop`; the Python layer does the bookkeeping around it.
    fn _run_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        me.check_closed()?;
        if me.running.swap(true, Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        me.thread_id.store(thread_ident(), Ordering::Relaxed);
        let outcome = loop {
            if let Err(err) = Self::run_once(slf) {
                break Err(err);
            }
            if me.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        me.stopping.store(false, Ordering::Relaxed);
        me.thread_id.store(0, Ordering::Relaxed);
        me.running.store(false, Ordering::Relaxed);
        outcome
    }

    /// Mark closed and drop every queued callback and watch.
    fn _close_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        if me.running.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        me.closed.store(true, Ordering::Relaxed);
        let ready = me.ready.take(py);
        let timers = me.timers.borrow_mut(py)?.drain();
        let (watches, transports) = me.reactor.clear(py);
        me.cancelled_in_heap.store(0, Ordering::Relaxed);
        // Handles are not tracked by the GC: drop their callbacks, in case something else
        // still holds one of them in a cycle.
        for h in ready.iter().chain(watches.iter()) {
            h.get().cancel_silently(py);
        }
        for t in &timers {
            t.bind(py).as_super().get().cancel_silently(py);
        }
        drop((ready, timers, watches));
        for transport in transports {
            transport.abandon(py);
        }
        Ok(())
    }

    /// Let a stream transport own `fd` (readiness goes straight to it).
    fn _attach_transport(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        transport: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        slf.get().check_closed()?;
        let owner = Owner::from_object(transport)
            .ok_or_else(|| PyTypeError::new_err("not a transport of asyncpg_rs"))?;
        slf.get()
            .reactor
            .set_transport(slf.py(), fd, Some(owner))
            .map(drop)
    }

    /// Stop watching a transport's descriptor.
    fn _detach_transport(slf: &Bound<'_, Self>, fd: RawFd) -> PyResult<()> {
        slf.get()
            .reactor
            .set_transport(slf.py(), fd, None)
            .map(drop)
    }

    /// The transport that owns ``fd``, if any (``add_reader`` must not steal it).
    fn _transport_of<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let fd = fileobj_to_fd(fd)?;
        let py = slf.py();
        Ok(slf.get().reactor.transport_of(py, fd).map(|t| t.object(py)))
    }

    /// ``sock_recv`` on a plain socket: the bytes, a future for them, or ``NotImplemented``
    /// (then ``Loop.sock_recv`` goes asyncio's way).
    fn _sock_recv(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, n: isize) -> PyResult<Py<PyAny>> {
        slf.get().check_closed()?;
        sockets::sock_recv(slf, sock, n)
    }

    /// ``sock_recv_into``: the count, a future for it, or ``NotImplemented``.
    fn _sock_recv_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        slf.get().check_closed()?;
        sockets::sock_recv_into(slf, sock, buf)
    }

    /// ``sock_sendall``: ``None`` once all is sent now, else a future, or ``NotImplemented``.
    fn _sock_sendall(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        slf.get().check_closed()?;
        sockets::sock_sendall(slf, sock, data)
    }

    /// A future for ``attempt(*args)``, retried each time ``sock`` is readable (``write``:
    /// writable) until it stops raising ``BlockingIOError``; ``NotImplemented`` when the
    /// socket cannot be tracked.
    #[pyo3(signature = (sock, write, attempt, *args))]
    fn _sock_wait(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        write: bool,
        attempt: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        slf.get().check_closed()?;
        sockets::sock_wait(slf, sock, write, attempt, args)
    }

    /// The coroutine awaiting ``future`` (a pending ``sock_*`` operation on ``sock``) was
    /// cancelled or closed: drop the operation and give back the socket's io reference now.
    fn _sock_abandon(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        // a socket closed for good (or detached) says -1: then the search goes everywhere
        let fd = sock
            .call_method0(intern!(py, "fileno"))
            .and_then(|n| n.extract::<RawFd>())
            .unwrap_or(-1);
        slf.get().reactor.sock_abandon(py, fd, future)
    }

    /// Number of timers in the heap, cancelled ones included (for tests and monitoring).
    fn _timer_count(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(slf.get().timers.borrow_mut(slf.py())?.len())
    }

    /// Number of descriptors the reactor keeps a record of (for tests and monitoring).
    fn _watch_count(slf: &Bound<'_, Self>) -> PyResult<usize> {
        slf.get().reactor.watch_count(slf.py())
    }

    /// Number of callbacks waiting in the ready queue.
    fn _ready_count(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(slf.get().ready.borrow_mut(slf.py())?.len())
    }
}
