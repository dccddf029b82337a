//! State that only the thread holding the GIL touches.
//!
//! The loop's queues are reached from Python calls only (`call_soon`, `call_soon_threadsafe`
//! from any thread, the run loop itself), and every one of those holds the GIL. So the GIL is
//! the lock: a [`GilCell`] is a `RefCell` that may be shared between threads because nobody
//! can reach it without the GIL. Borrows must never span a call into Python (a callback, or the
//! drop of a Python object whose finaliser might call back into the loop); the `RefCell`
//! borrow flag turns such a mistake into an error instead of undefined behaviour.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::Python;

pub struct GilCell<T>(RefCell<T>);

// SAFETY: every access takes a `Python` token, i.e. happens with the GIL held, and the
// extension module is built for the GIL-enabled interpreter (pyo3's default `gil_used`),
// so no two threads touch the inner value at the same time.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// Mutable access for the span of one expression; `None` if a borrow is already live
    /// (a re-entrant call from a finaliser, say).
    #[inline]
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<RefMut<'a, T>> {
        self.0.try_borrow_mut().ok()
    }

    /// Mutable access; re-entrant use is a logic error, reported as a Python exception by the
    /// caller through [`reentrant`].
    #[inline]
    pub fn borrow_mut<'a>(&'a self, py: Python<'_>) -> pyo3::PyResult<RefMut<'a, T>> {
        self.try_borrow_mut(py).ok_or_else(reentrant)
    }
}

impl<T> GilCell<T> {
    /// Shared access, also for the garbage collector's traversal, which runs with the GIL
    /// held but hands us no token; `None` while a mutable borrow is live.
    pub fn try_borrow_for_gc(&self) -> Option<Ref<'_, T>> {
        self.0.try_borrow().ok()
    }
}

impl<T: Default> GilCell<T> {
    /// Move the value out, leaving the default; the caller drops it outside any borrow.
    pub fn take(&self, py: Python<'_>) -> T {
        self.try_borrow_mut(py)
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

fn reentrant() -> pyo3::PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("event loop state used re-entrantly")
}
