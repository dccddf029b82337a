//! `Record`: the immutable row object, with asyncpg's semantics.
//!
//! A row indexes like a tuple (`r[0]`, `r[-1]`, `r[1:3]`), like a mapping by column name
//! (`r['id']`, `r.get`, `keys`/`values`/`items`, `name in r`), compares and hashes like the tuple
//! of its values, and cannot be pickled or built by users. Column names and the name -> index
//! map live once per statement in [`RecordDesc`], shared by every row.
//!
//! # Layout
//!
//! A fetch makes one Record per row, so a row is one variable-size object: the object header,
//! a pointer to the statement's `RecordDesc` (an `Arc` given up with `Arc::into_raw`), then
//! the values inline (`tp_itemsize` is a pointer; `ob_size` is the number of values). The type
//! is made with the C API (`PyType_FromSpec`), not as a pyo3 class: a pyo3 class keeps its
//! fields in a fixed-size object, so the values needed a second allocation (first a
//! `Box<[PyObject]>` with glibc's `malloc`, then `PyObject_Malloc`), and creating and
//! destroying a row went through pyo3's generic initialiser, `PyType_GenericAlloc` and its
//! `memset`, and pyo3's deallocation trampoline. Now [`RecordBuilder`] takes one
//! `PyObject_Malloc` block for an exact Record, writes the header and NULL slots, and the
//! decoder fills the slots in place; `record_dealloc` decrefs the values and frees the block.
//! Measured with callgrind (docs/ARCHITECTURE.md, "What a row costs"), a fetched row went
//! from 802 to 594 instructions for `generate_series(1, 1000)`, and from 2,545 to 2,363 for
//! the 12 columns of `pg_type`.
//!
//! A row is not tracked by the cyclic GC (no `Py_TPFLAGS_HAVE_GC`): rows never form cycles
//! by themselves, and tracking would cost GC-header work per row and the gen-0 passes a large
//! fetch's allocation count sets off (docs/ARCHITECTURE.md). CPython makes the instances of a
//! Python subclass (`record_class=`) GC-tracked, as it does for any heap subclass; its rows are allocated
//! by the subclass's own `tp_alloc` (so its basic size, dict pointer and GC header are right)
//! without calling its `__new__`/`__init__`, as asyncpg does. CPython refuses non-empty
//! `__slots__` and weak references in subclasses of a variable-size type (asyncpg's Record
//! too).
//!
//! A slot is NULL until it is filled: a half-built row (a decode failed) is released by the
//! same deallocation, which skips NULL slots, and every accessor reads a NULL slot as None
//! (a half-built row of a GC-tracked subclass is reachable through `gc.get_objects()`).
//!
//! Every slot function runs with the GIL held (CPython calls it so) and catches Rust panics,
//! turning them into a Python exception (or an unraisable one in the deallocation).

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyMemoryError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::Borrowed;

/// Column names and their positions, shared by all rows of one statement.
pub struct RecordDesc {
    names: Py<PyTuple>,
    index: Py<PyDict>,
    len: usize,
}

impl RecordDesc {
    pub fn new(py: Python<'_>, names: &[&str]) -> PyResult<Arc<RecordDesc>> {
        let interned: Vec<Bound<'_, PyString>> =
            names.iter().map(|n| PyString::intern(py, n)).collect();
        let index = PyDict::new(py);
        for (i, name) in interned.iter().enumerate() {
            // with duplicate column names, lookup by name finds the last one (as asyncpg)
            index.set_item(name, i)?;
        }
        Ok(Arc::new(RecordDesc {
            len: interned.len(),
            names: PyTuple::new(py, interned)?.unbind(),
            index: index.unbind(),
        }))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column names, in order.
    pub fn names<'py>(&self, py: Python<'py>) -> Bound<'py, PyTuple> {
        self.names.bind(py).clone()
    }
}

/// The memory of a Record: the variable-size object header, the description, then
/// `ob_size` value slots (`items` marks where they start).
#[repr(C)]
struct RecordObject {
    ob_base: ffi::PyVarObject,
    /// From `Arc::into_raw`; NULL only between allocation and the builder's first store.
    desc: *const RecordDesc,
    items: [*mut ffi::PyObject; 0],
}

/// `tp_basicsize`: where the values start.
const BASIC_SIZE: usize = std::mem::offset_of!(RecordObject, items);
/// `tp_itemsize`: one object pointer per value.
const ITEM_SIZE: usize = std::mem::size_of::<*mut ffi::PyObject>();

/// Record's type object, made once by [`record_type`].
static RECORD_TYPE: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// The Record type (made on first use).
pub fn record_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    Ok(RECORD_TYPE.get_or_try_init(py, || make_type(py))?.bind(py))
}

/// A Record whose slots are being filled: owns a reference to it, so a row abandoned half
/// way (an error, a panic) is released with the values filled so far.
pub struct RecordBuilder<'py> {
    obj: Bound<'py, PyAny>,
    len: usize,
}

impl<'py> RecordBuilder<'py> {
    /// A row of `cls` (None or Record: a Record) with `len` empty slots for the columns
    /// described by `desc`; `cls` must be Record or a subclass of it.
    pub fn new(
        py: Python<'py>,
        desc: &Arc<RecordDesc>,
        len: usize,
        cls: Option<&Bound<'py, PyType>>,
    ) -> PyResult<Self> {
        let record_type = record_type(py)?;
        let nitems = isize::try_from(len).map_err(|_| PyMemoryError::new_err("record too wide"))?;
        let obj = match cls {
            Some(cls) if !cls.is(record_type) => alloc_subclass(py, cls, record_type, nitems)?,
            _ => alloc_exact(py, record_type, len, nitems)?,
        };
        let rec = obj.as_ptr().cast::<RecordObject>();
        // SAFETY: `obj` was just allocated as a Record (or subclass) instance with `len`
        // value slots after BASIC_SIZE bytes; nothing else has seen it. The desc pointer and
        // every slot are written before the object is handed out, so the deallocation finds
        // an owned `Arc` and NULL-or-owned slots.
        unsafe {
            ptr::addr_of_mut!((*rec).desc).write(Arc::into_raw(desc.clone()));
            let items = ptr::addr_of_mut!((*rec).items).cast::<*mut ffi::PyObject>();
            for i in 0..len {
                items.add(i).write(ptr::null_mut());
            }
        }
        Ok(RecordBuilder { obj, len })
    }

    /// Put `value` in slot `i` (what was there is released); panics unless `i < len`.
    pub fn set(&mut self, i: usize, value: PyObject) {
        assert!(i < self.len, "RecordBuilder::set out of range");
        let rec = self.obj.as_ptr().cast::<RecordObject>();
        // SAFETY: `i < len`, the number of slots allocated; the GIL is held (`'py`); the slot
        // holds NULL or an owned reference, released after the new one (given up by
        // `into_ptr`) is stored.
        unsafe {
            let slot = ptr::addr_of_mut!((*rec).items)
                .cast::<*mut ffi::PyObject>()
                .add(i);
            let old = slot.replace(value.into_ptr());
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
    }

    /// The finished row.
    pub fn finish(self) -> PyObject {
        self.obj.unbind()
    }
}

/// An exact Record: one `PyObject_Malloc` block, the header written by `PyObject_InitVar`
/// (which also increfs the heap type, as its instances must hold a reference to it).
fn alloc_exact<'py>(
    py: Python<'py>,
    record_type: &Bound<'py, PyType>,
    len: usize,
    nitems: isize,
) -> PyResult<Bound<'py, PyAny>> {
    let size = len
        .checked_mul(ITEM_SIZE)
        .and_then(|n| n.checked_add(BASIC_SIZE))
        .ok_or_else(|| PyMemoryError::new_err("record too wide"))?;
    // SAFETY: the GIL is held (`py`). PyObject_Malloc returns `size` bytes aligned for any
    // object, or NULL; PyObject_InitVar sets the type (increfing it), size and reference
    // count of that block, which is at least BASIC_SIZE + len pointers, so a Record of
    // `nitems` values fits (the slots are written by the caller before use). The result is
    // the one new reference, owned by the returned Bound.
    unsafe {
        let mem = ffi::PyObject_Malloc(size);
        if mem.is_null() {
            return Err(PyMemoryError::new_err(()));
        }
        let obj = ffi::PyObject_InitVar(mem.cast(), record_type.as_type_ptr(), nitems);
        Ok(Bound::from_owned_ptr(py, obj.cast()))
    }
}

/// A row of a Python subclass of Record: allocated by the subclass's `tp_alloc` (zeroed,
/// with room for a `__dict__` pointer if it has one, GC-tracked if it is a GC type) without
/// calling its `__new__` or `__init__`.
fn alloc_subclass<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyType>,
    record_type: &Bound<'py, PyType>,
    nitems: isize,
) -> PyResult<Bound<'py, PyAny>> {
    let tp = cls.as_type_ptr();
    // SAFETY: `tp` and the Record type are live type objects (borrowed from Bounds) and the
    // GIL is held; reading their size fields and calling PyType_IsSubtype is read-only.
    let fits = unsafe {
        ffi::PyType_IsSubtype(tp, record_type.as_type_ptr()) != 0
            && (*tp).tp_itemsize == ITEM_SIZE as isize
            && usize::try_from((*tp).tp_basicsize).is_ok_and(|b| b >= BASIC_SIZE)
    };
    if !fits {
        return Err(PyTypeError::new_err(format!(
            "record_class must be a subclass of Record, got {}",
            cls.repr()?
        )));
    }
    // SAFETY: as above; a type that passed PyType_Ready has a tp_alloc (inherited from
    // object if nothing else), which returns a new, zeroed instance of `tp` with `nitems`
    // items (ob_size set, type increfed) or NULL with an exception set.
    unsafe {
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        let obj = alloc(tp, nitems);
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

/// A Record of `cls` (None: Record) from a vector of values.
pub fn new_record(
    py: Python<'_>,
    desc: &Arc<RecordDesc>,
    values: Vec<PyObject>,
    cls: Option<&Bound<'_, PyType>>,
) -> PyResult<PyObject> {
    let mut row = RecordBuilder::new(py, desc, values.len(), cls)?;
    for (i, v) in values.into_iter().enumerate() {
        row.set(i, v);
    }
    Ok(row.finish())
}

// ---------------------------------------------------------------- reading a Record

/// A borrowed view of a live Record (or subclass instance).
#[derive(Clone, Copy)]
struct View<'a, 'py> {
    py: Python<'py>,
    obj: Borrowed<'a, 'py, PyAny>,
}

impl<'a, 'py> View<'a, 'py> {
    /// # Safety
    /// `obj` must be an instance of the Record type (or a subclass), built by
    /// [`RecordBuilder`] (the only way to make one).
    unsafe fn new(obj: Borrowed<'a, 'py, PyAny>) -> Self {
        View { py: obj.py(), obj }
    }

    fn rec(&self) -> *mut RecordObject {
        self.obj.as_ptr().cast()
    }

    fn len(&self) -> usize {
        // SAFETY: a Record's ob_size is the number of slots it was allocated with (>= 0).
        usize::try_from(unsafe { ffi::Py_SIZE(self.obj.as_ptr()) }).unwrap_or(0)
    }

    fn desc(&self) -> Option<&'a RecordDesc> {
        // SAFETY: the desc pointer is NULL or from `Arc::into_raw`, released only by the
        // deallocation, so it outlives the borrow of `obj`.
        unsafe { (*self.rec()).desc.as_ref() }
    }

    /// Value `i` (None for an unfilled slot); None when `i` is out of range.
    fn get(&self, i: usize) -> Option<Bound<'py, PyAny>> {
        if i >= self.len() {
            return None;
        }
        // SAFETY: `i` is within the `len` slots; a slot holds NULL or a reference the row
        // owns, borrowed here into a new reference (the GIL is held).
        unsafe {
            let p = *ptr::addr_of!((*self.rec()).items)
                .cast::<*mut ffi::PyObject>()
                .add(i);
            Some(if p.is_null() {
                self.py.None().into_bound(self.py)
            } else {
                Bound::from_borrowed_ptr(self.py, p)
            })
        }
    }

    fn values(&self) -> impl ExactSizeIterator<Item = Bound<'py, PyAny>> + '_ {
        (0..self.len()).map(|i| {
            self.get(i)
                .unwrap_or_else(|| self.py.None().into_bound(self.py))
        })
    }

    fn tuple(&self) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(self.py, self.values())
    }

    fn names(&self) -> Bound<'py, PyTuple> {
        match self.desc() {
            Some(d) => d.names.bind(self.py).clone(),
            None => PyTuple::empty(self.py),
        }
    }

    /// The position of column `key`, if the description names it.
    fn position(&self, key: &Bound<'py, PyAny>) -> PyResult<Option<usize>> {
        let Some(desc) = self.desc() else {
            return Ok(None);
        };
        match desc.index.bind(self.py).get_item(key)? {
            Some(i) => Ok(Some(i.extract()?)),
            None => Ok(None),
        }
    }
}

fn is_record(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let tp = record_type(obj.py())?;
    // SAFETY: both are live objects and the GIL is held.
    Ok(unsafe { ffi::PyObject_TypeCheck(obj.as_ptr(), tp.as_type_ptr()) } != 0)
}

// ---------------------------------------------------------------- slot functions

/// Runs a slot body: its error (or a panic, as PanicException) is set as the current
/// exception and `on_error` returned.
///
/// # Safety
/// Only from a slot function, which CPython calls with the GIL held.
unsafe fn slot<R>(on_error: R, body: impl FnOnce(Python<'_>) -> PyResult<R>) -> R {
    // SAFETY: slot functions run with the GIL held (this function's contract).
    let py = unsafe { Python::assume_gil_acquired() };
    let err = match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(value)) => return value,
        Ok(Err(err)) => err,
        Err(payload) => panic_error(payload),
    };
    err.restore(py);
    on_error
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic from Rust code".to_string()
    };
    PanicException::new_err((msg,))
}

/// A slot's object argument, borrowed.
///
/// # Safety
/// `p` must be a live object borrowed for the slot call (`'a`), with the GIL held.
unsafe fn borrowed<'a, 'py>(py: Python<'py>, p: *mut ffi::PyObject) -> Borrowed<'a, 'py, PyAny> {
    // SAFETY: the caller's contract.
    unsafe { Borrowed::from_ptr(py, p) }
}

unsafe extern "C" fn record_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_dealloc with the GIL held, once, when the count reaches zero.
    let py = unsafe { Python::assume_gil_acquired() };
    let done = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `obj` is a Record (or an instance of a subclass, whose own deallocation
        // has cleared what it added and calls this last) that nobody references any more.
        // Each slot is NULL or an owned reference, released once; the desc pointer is NULL
        // or an owned Arc; the memory goes back through the type's tp_free (PyObject_Free
        // for Record, PyObject_GC_Del for a GC subclass), then the instance's reference to
        // its heap type is dropped.
        unsafe {
            let tp = ffi::Py_TYPE(obj);
            let rec = obj.cast::<RecordObject>();
            let n = usize::try_from(ffi::Py_SIZE(obj)).unwrap_or(0);
            let items = ptr::addr_of_mut!((*rec).items).cast::<*mut ffi::PyObject>();
            for i in 0..n {
                let p = items.add(i).replace(ptr::null_mut());
                if !p.is_null() {
                    ffi::Py_DECREF(p);
                }
            }
            let desc = ptr::addr_of_mut!((*rec).desc).replace(ptr::null());
            if !desc.is_null() {
                let desc = Arc::from_raw(desc);
                if Arc::strong_count(&desc) == 1 {
                    // the last row of a forgotten statement: its names go now (pyo3 would
                    // defer a decref made where it has not counted the GIL as held)
                    Python::with_gil(|_| drop(desc));
                } else {
                    drop(desc);
                }
            }
            match (*tp).tp_free {
                Some(free) => free(obj.cast::<c_void>()),
                None => ffi::PyObject_Free(obj.cast::<c_void>()),
            }
            ffi::Py_DECREF(tp.cast());
        }
    }));
    if let Err(payload) = done {
        panic_error(payload).restore(py);
        // SAFETY: the GIL is held; NULL context is allowed.
        unsafe { ffi::PyErr_WriteUnraisable(ptr::null_mut()) };
    }
}

unsafe extern "C" fn record_length(obj: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    // SAFETY: a slot of the Record type: `obj` is a Record, the GIL is held.
    unsafe {
        slot(-1, |py| {
            let view = View::new(borrowed(py, obj));
            Ok(view.len() as ffi::Py_ssize_t)
        })
    }
}

fn index_error() -> PyErr {
    PyIndexError::new_err("record index out of range")
}

unsafe extern "C" fn record_item(
    obj: *mut ffi::PyObject,
    i: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: a slot of the Record type: `obj` is a Record, the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            // CPython has added the length to a negative index already
            let i = usize::try_from(i).map_err(|_| index_error())?;
            Ok(view.get(i).ok_or_else(index_error)?.into_ptr())
        })
    }
}

unsafe extern "C" fn record_subscript(
    obj: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a slot of the Record type: `obj` is a Record, `key` a borrowed object, the
    // GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            let key = borrowed(py, key);
            Ok(subscript(view, &key)?.into_ptr())
        })
    }
}

fn subscript<'py>(view: View<'_, 'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = view.py;
    // SAFETY: `key` is a live object and the GIL is held (type checks only).
    let (is_int, is_slice) = unsafe {
        (
            ffi::PyLong_Check(key.as_ptr()) != 0,
            ffi::PySlice_Check(key.as_ptr()) != 0,
        )
    };
    if is_int {
        let i: isize = key.extract().map_err(|_| index_error())?;
        let n = view.len() as isize;
        let j = if i < 0 { i + n } else { i };
        let j = usize::try_from(j).map_err(|_| index_error())?;
        return view.get(j).ok_or_else(index_error);
    }
    if is_slice {
        return view.tuple()?.as_any().get_item(key);
    }
    if key.is_instance_of::<PyString>() {
        if let Some(i) = view.position(key)? {
            return Ok(view.get(i).unwrap_or_else(|| py.None().into_bound(py)));
        }
    }
    // SAFETY: the GIL is held; PyErr_SetObject increfs the key it stores.
    unsafe { ffi::PyErr_SetObject(ffi::PyExc_KeyError, key.as_ptr()) };
    Err(PyErr::fetch(py))
}

unsafe extern "C" fn record_contains(obj: *mut ffi::PyObject, key: *mut ffi::PyObject) -> c_int {
    // SAFETY: a slot of the Record type: `obj` is a Record, `key` a borrowed object, the
    // GIL is held.
    unsafe {
        slot(-1, |py| {
            let view = View::new(borrowed(py, obj));
            let key = borrowed(py, key);
            match view.desc() {
                Some(desc) => Ok(c_int::from(desc.index.bind(py).contains(key)?)),
                None => Ok(0),
            }
        })
    }
}

unsafe extern "C" fn record_iter(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: a slot of the Record type: `obj` is a Record, the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            Ok(view.tuple()?.into_any().try_iter()?.into_ptr())
        })
    }
}

unsafe extern "C" fn record_hash(obj: *mut ffi::PyObject) -> ffi::Py_hash_t {
    // SAFETY: a slot of the Record type: `obj` is a Record, the GIL is held.
    unsafe {
        slot(-1, |py| {
            let view = View::new(borrowed(py, obj));
            view.tuple()?.hash()
        })
    }
}

unsafe extern "C" fn record_richcompare(
    obj: *mut ffi::PyObject,
    other: *mut ffi::PyObject,
    op: c_int,
) -> *mut ffi::PyObject {
    // SAFETY: a slot of the Record type: `obj` is a Record, `other` a borrowed object, the
    // GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            let other = borrowed(py, other);
            let other_values = if is_record(&other)? {
                View::new(other).tuple()?
            } else if let Ok(t) = other.downcast::<PyTuple>() {
                t.clone()
            } else {
                return Ok(py.NotImplemented().into_ptr());
            };
            let result =
                ffi::PyObject_RichCompare(view.tuple()?.as_ptr(), other_values.as_ptr(), op);
            Ok(Bound::from_owned_ptr_or_err(py, result)?.into_ptr())
        })
    }
}

unsafe extern "C" fn record_repr(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: a slot of the Record type: `obj` is a Record, the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let this = borrowed(py, obj);
            let view = View::new(this);
            let cls = this.get_type().name()?.to_string();
            let mut out = format!("<{cls}");
            for (name, value) in view.names().iter().zip(view.values()) {
                out.push(' ');
                out.push_str(&name.str()?.to_cow()?);
                out.push('=');
                out.push_str(&value.repr()?.to_cow()?);
            }
            out.push('>');
            Ok(PyString::new(py, &out).into_ptr())
        })
    }
}

unsafe extern "C" fn record_new(
    _cls: *mut ffi::PyTypeObject,
    _args: *mut ffi::PyObject,
    _kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a slot of the Record type, called with the GIL held.
    unsafe {
        slot(ptr::null_mut(), |_| {
            Err(PyTypeError::new_err(
                "cannot create 'asyncpg.protocol.record.Record' instances",
            ))
        })
    }
}

// ---------------------------------------------------------------- methods

unsafe extern "C" fn record_get(
    obj: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a METH_VARARGS | METH_KEYWORDS method of Record: `obj` is a Record, `args` a
    // tuple, `kwargs` NULL or a dict, all borrowed; the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            let args = borrowed(py, args).to_owned().downcast_into::<PyTuple>()?;
            let kwargs = if kwargs.is_null() {
                None
            } else {
                Some(borrowed(py, kwargs).to_owned().downcast_into::<PyDict>()?)
            };
            let (name, default) = get_arguments(&args, kwargs.as_ref())?;
            Ok(match view.position(&name)? {
                Some(i) => view.get(i).unwrap_or_else(|| py.None().into_bound(py)),
                None => default.unwrap_or_else(|| py.None().into_bound(py)),
            }
            .into_ptr())
        })
    }
}

type GetArguments<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// `get(name, default=None)`'s arguments, by position or keyword.
fn get_arguments<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<GetArguments<'py>> {
    if args.len() > 2 {
        return Err(PyTypeError::new_err(format!(
            "get() takes from 1 to 2 positional arguments but {} were given",
            args.len()
        )));
    }
    let mut name = args.get_item(0).ok();
    let mut default = args.get_item(1).ok();
    if let Some(kwargs) = kwargs {
        for (k, v) in kwargs.iter() {
            let target = match k.extract::<String>().as_deref() {
                Ok("name") => &mut name,
                Ok("default") => &mut default,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "get() got an unexpected keyword argument {}",
                        k.repr()?
                    )))
                }
            };
            if target.is_some() {
                return Err(PyTypeError::new_err(format!(
                    "get() got multiple values for argument {}",
                    k.repr()?
                )));
            }
            *target = Some(v);
        }
    }
    let name = name.ok_or_else(|| {
        PyTypeError::new_err("get() missing 1 required positional argument: 'name'")
    })?;
    Ok((name, default))
}

unsafe extern "C" fn record_keys(
    obj: *mut ffi::PyObject,
    _: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a METH_NOARGS method of Record: `obj` is a Record; the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            Ok(view.names().into_any().try_iter()?.into_ptr())
        })
    }
}

unsafe extern "C" fn record_values(
    obj: *mut ffi::PyObject,
    _: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as record_iter, which it is.
    unsafe { record_iter(obj) }
}

unsafe extern "C" fn record_items(
    obj: *mut ffi::PyObject,
    _: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a METH_NOARGS method of Record: `obj` is a Record; the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let view = View::new(borrowed(py, obj));
            let pairs: Vec<Bound<'_, PyTuple>> = view
                .names()
                .iter()
                .zip(view.values())
                .map(|(n, v)| PyTuple::new(py, [n, v]))
                .collect::<PyResult<_>>()?;
            Ok(PyTuple::new(py, pairs)?.into_any().try_iter()?.into_ptr())
        })
    }
}

unsafe extern "C" fn record_reduce(
    obj: *mut ffi::PyObject,
    _: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a METH_NOARGS method of Record: `obj` is a Record; the GIL is held.
    unsafe {
        slot(ptr::null_mut(), |py| {
            let qual = borrowed(py, obj)
                .get_type()
                .fully_qualified_name()?
                .to_string();
            Err(PyTypeError::new_err(format!(
                "cannot pickle {qual} objects"
            )))
        })
    }
}

// ---------------------------------------------------------------- the type

fn make_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    fn method(
        name: &'static std::ffi::CStr,
        meth: ffi::PyMethodDefPointer,
        flags: c_int,
        doc: &'static std::ffi::CStr,
    ) -> ffi::PyMethodDef {
        ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: meth,
            ml_flags: flags,
            ml_doc: doc.as_ptr(),
        }
    }
    type NoArgs =
        unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;
    let noargs = |f: NoArgs| ffi::PyMethodDefPointer { PyCFunction: f };
    // The method table must outlive the type (its method descriptors point into it); the
    // type lives as long as the interpreter, so the table is leaked once.
    let methods: &'static mut [ffi::PyMethodDef] = Box::leak(Box::new([
        method(
            c"get",
            ffi::PyMethodDefPointer {
                PyCFunctionWithKeywords: record_get,
            },
            ffi::METH_VARARGS | ffi::METH_KEYWORDS,
            c"get($self, name, default=None)\n--\n\n\
              The value of column `name`, or `default` when there is no such column.",
        ),
        method(
            c"keys",
            noargs(record_keys),
            ffi::METH_NOARGS,
            c"keys($self)\n--\n\nAn iterator over the column names.",
        ),
        method(
            c"values",
            noargs(record_values),
            ffi::METH_NOARGS,
            c"values($self)\n--\n\nAn iterator over the values.",
        ),
        method(
            c"items",
            noargs(record_items),
            ffi::METH_NOARGS,
            c"items($self)\n--\n\nAn iterator over `(name, value)` pairs.",
        ),
        method(
            c"__reduce__",
            noargs(record_reduce),
            ffi::METH_NOARGS,
            c"__reduce__($self)\n--\n\n",
        ),
        ffi::PyMethodDef::zeroed(),
    ]));
    fn s(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
        ffi::PyType_Slot { slot, pfunc }
    }
    type Len = unsafe extern "C" fn(*mut ffi::PyObject) -> ffi::Py_ssize_t;
    type Item = unsafe extern "C" fn(*mut ffi::PyObject, ffi::Py_ssize_t) -> *mut ffi::PyObject;
    type Binary =
        unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;
    type Unary = unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject;
    type Contains = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> c_int;
    type Hash = unsafe extern "C" fn(*mut ffi::PyObject) -> ffi::Py_hash_t;
    type RichCmp =
        unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, c_int) -> *mut ffi::PyObject;
    type Dealloc = unsafe extern "C" fn(*mut ffi::PyObject);
    type Free = unsafe extern "C" fn(*mut c_void);
    type New = unsafe extern "C" fn(
        *mut ffi::PyTypeObject,
        *mut ffi::PyObject,
        *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
    let mut slots = [
        s(ffi::Py_tp_dealloc, record_dealloc as Dealloc as *mut c_void),
        s(ffi::Py_tp_free, ffi::PyObject_Free as Free as *mut c_void),
        s(ffi::Py_tp_new, record_new as New as *mut c_void),
        s(ffi::Py_tp_repr, record_repr as Unary as *mut c_void),
        s(ffi::Py_tp_hash, record_hash as Hash as *mut c_void),
        s(
            ffi::Py_tp_richcompare,
            record_richcompare as RichCmp as *mut c_void,
        ),
        s(ffi::Py_tp_iter, record_iter as Unary as *mut c_void),
        s(ffi::Py_tp_methods, methods.as_mut_ptr().cast()),
        s(
            ffi::Py_tp_doc,
            c"A row of a query result.".as_ptr() as *mut c_void,
        ),
        s(ffi::Py_sq_length, record_length as Len as *mut c_void),
        s(ffi::Py_sq_item, record_item as Item as *mut c_void),
        s(
            ffi::Py_sq_contains,
            record_contains as Contains as *mut c_void,
        ),
        s(ffi::Py_mp_length, record_length as Len as *mut c_void),
        s(
            ffi::Py_mp_subscript,
            record_subscript as Binary as *mut c_void,
        ),
        s(0, ptr::null_mut()),
    ];
    let name: &'static std::ffi::CStr = c"asyncpg_rs.protocol.record.Record";
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr() as *const c_char,
        basicsize: c_int::try_from(BASIC_SIZE).expect("small"),
        itemsize: c_int::try_from(ITEM_SIZE).expect("small"),
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_BASETYPE) as std::ffi::c_uint,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the GIL is held; the spec, its slots (copied into the type by the call), the
    // static name and doc, and the leaked method table are valid for the call (and the name
    // and methods for ever). The result is a new reference to the type, or NULL with an
    // exception set.
    unsafe {
        let tp = ffi::PyType_FromSpec(&mut spec);
        Ok(Bound::from_owned_ptr_or_err(py, tp)?
            .downcast_into::<PyType>()?
            .unbind())
    }
}

/// `_create_record(mapping, values)`: a Record from a name -> index mapping and a tuple
/// (the constructor asyncpg's own tests use).
#[pyfunction]
#[pyo3(signature = (mapping, values, record_class=None))]
fn create_record(
    py: Python<'_>,
    mapping: Option<&Bound<'_, PyAny>>,
    values: &Bound<'_, PyTuple>,
    record_class: Option<&Bound<'_, PyType>>,
) -> PyResult<PyObject> {
    let mut names: Vec<(usize, String)> = Vec::new();
    if let Some(mapping) = mapping {
        for item in mapping.call_method0("items")?.try_iter()? {
            let (name, idx): (String, usize) = item?.extract()?;
            names.push((idx, name));
        }
    }
    names.sort();
    if mapping.is_none() {
        // a row without column names: index access only
        let desc = RecordDesc::new(py, &[])?;
        return new_record(
            py,
            &desc,
            values.iter().map(|v| v.unbind()).collect(),
            record_class,
        );
    }
    if names.len() != values.len() || names.iter().enumerate().any(|(i, (idx, _))| *idx != i) {
        return Err(PyRuntimeError::new_err("invalid record mapping"));
    }
    let refs: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    let desc = RecordDesc::new(py, &refs)?;
    new_record(
        py,
        &desc,
        values.iter().map(|v| v.unbind()).collect(),
        record_class,
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Record", record_type(m.py())?)?;
    m.add_function(wrap_pyfunction!(create_record, m)?)?;
    Ok(())
}
