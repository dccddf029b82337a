//! `RowValues`: a row's values in memory from CPython's object allocator.
//!
//! A fetch makes one of these per row. As a `Box<[PyObject]>` each cost a glibc `malloc` and
//! `free` (with glibc's consolidation passes when the result list grew) and a thread-local
//! GIL check per value dropped: about a quarter of the instructions of a 1,000-row fetch.
//! A tuple instead costs as much again in GC bookkeeping (linking, untracking, and gen-0
//! passes triggered by the allocation count). `PyObject_Malloc` is CPython's small-object
//! allocator: a few dozen instructions, no GC involvement.
//!
//! Every operation happens with the GIL held: creation and filling take a `Python` token,
//! and the values are dropped only from the `Record`/`RecordParts` deallocation (which
//! CPython runs under the GIL) or from code that holds a token (a row abandoned half-decoded).

use std::ptr::NonNull;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

pub struct RowValues {
    /// `len` slots, each NULL (not filled yet) or an owned reference.
    ptr: NonNull<*mut ffi::PyObject>,
    len: usize,
}

// SAFETY: the slots are only read, written or released with the GIL held (see the module
// comment), which serialises every access as it does for `Py<T>`; the allocation itself
// belongs to CPython's allocator, usable from any thread holding the GIL.
unsafe impl Send for RowValues {}
// SAFETY: as for Send: shared access reads slots only under the GIL.
unsafe impl Sync for RowValues {}

impl RowValues {
    /// `len` empty slots; the caller fills each with [`RowValues::set`].
    pub fn new(_py: Python<'_>, len: usize) -> PyResult<Self> {
        let bytes = len
            .max(1)
            .checked_mul(std::mem::size_of::<*mut ffi::PyObject>())
            .ok_or_else(|| pyo3::exceptions::PyMemoryError::new_err("row too wide"))?;
        // SAFETY: the GIL is held (`_py`); PyObject_Malloc returns memory for `bytes` bytes,
        // suitably aligned for pointers, or NULL when out of memory.
        let raw = unsafe { ffi::PyObject_Malloc(bytes) }.cast::<*mut ffi::PyObject>();
        let ptr = NonNull::new(raw).ok_or_else(|| pyo3::exceptions::PyMemoryError::new_err(()))?;
        for i in 0..len {
            // SAFETY: `i < len` slots fit in the allocation; each starts NULL (not filled).
            // (A loop rather than PyObject_Calloc, whose memset call costs more for a few
            // slots than the stores.)
            unsafe { ptr.as_ptr().add(i).write(std::ptr::null_mut()) };
        }
        Ok(RowValues { ptr, len })
    }

    pub fn from_vec(py: Python<'_>, values: Vec<PyObject>) -> PyResult<Self> {
        let mut row = RowValues::new(py, values.len())?;
        for (i, v) in values.into_iter().enumerate() {
            row.set(i, v);
        }
        Ok(row)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Put `value` in slot `i` (what was there is released); panics unless `i < len`.
    pub fn set(&mut self, i: usize, value: PyObject) {
        assert!(i < self.len, "RowValues::set out of range");
        // SAFETY: `i` is in range; `&mut self` and the `PyObject` (which needs the GIL to
        // exist) mean the GIL is held; the slot holds NULL or an owned reference, released
        // here before it is overwritten by the reference `into_ptr` gives up.
        unsafe {
            let slot = self.ptr.as_ptr().add(i);
            let old = *slot;
            *slot = value.into_ptr();
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
    }

    /// The value in slot `i` (None for a slot not filled, which a finished row never has).
    pub fn get<'py>(&self, py: Python<'py>, i: usize) -> Option<Bound<'py, PyAny>> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i` is in range and the GIL is held (`py`); the slot is NULL or a live
        // reference this row owns, borrowed here and turned into a new one.
        unsafe {
            let p = *self.ptr.as_ptr().add(i);
            (!p.is_null()).then(|| Bound::from_borrowed_ptr(py, p))
        }
    }

    pub fn iter<'a, 'py>(
        &'a self,
        py: Python<'py>,
    ) -> impl ExactSizeIterator<Item = Bound<'py, PyAny>> + 'a
    where
        'py: 'a,
    {
        (0..self.len).map(move |i| self.get(py, i).unwrap_or_else(|| py.None().into_bound(py)))
    }

    pub fn tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.iter(py))
    }

    pub fn clone_ref(&self, py: Python<'_>) -> PyResult<Self> {
        let mut row = RowValues::new(py, self.len)?;
        for (i, v) in self.iter(py).enumerate() {
            row.set(i, v.unbind());
        }
        Ok(row)
    }
}

impl Drop for RowValues {
    fn drop(&mut self) {
        // SAFETY: dropped only with the GIL held (module comment). Every slot is NULL or an
        // owned reference, released once; the memory came from PyObject_Calloc.
        unsafe {
            for i in 0..self.len {
                let p = *self.ptr.as_ptr().add(i);
                if !p.is_null() {
                    ffi::Py_DECREF(p);
                }
            }
            ffi::PyObject_Free(self.ptr.as_ptr().cast());
        }
    }
}
