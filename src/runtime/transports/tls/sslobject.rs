//! Python's `ssl` module as the TLS transport drives it: the names it needs, looked up
//! once; the `SSLObject` over two `MemoryBIO`s that a context wraps; and our slices lent to
//! `_ssl` calls without a copy when they are large.

use std::os::raw::c_char;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyType};

/// Below this, a slice handed to `_ssl` is copied into bytes; above, lent as a memoryview.
const LEND_AT: usize = 4096;

/// The `ssl` and `asyncio` names this module needs, looked up once.
pub(super) struct Names {
    want_read: Py<PyType>,
    syscall: Py<PyType>,
    pub(super) zero_return: Py<PyType>,
    ssl_error: Py<PyType>,
    pub(super) cert_error: Py<PyType>,
    pub(super) cancelled: Py<PyType>,
    memory_bio: Py<PyAny>,
    sslobject: Py<PyType>,
    pub(super) logger: Py<PyAny>,
}

static NAMES: GILOnceCell<Names> = GILOnceCell::new();

pub(super) fn names(py: Python<'_>) -> PyResult<&'static Names> {
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
pub(super) fn is_again(py: Python<'_>, err: &PyErr) -> bool {
    names(py).is_ok_and(|n| {
        err.is_instance(py, n.want_read.bind(py)) || err.is_instance(py, n.syscall.bind(py))
    })
}

pub(super) fn is_ssl_error(py: Python<'_>, err: &PyErr) -> bool {
    names(py).is_ok_and(|n| err.is_instance(py, n.ssl_error.bind(py)))
}

/// A memoryview over memory we own, for one call into `_ssl`, released right after it (so
/// nothing can reach the memory through it later; a released view raises on any access).
pub(super) fn with_view<'py, R>(
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
pub(super) fn call_with_data<'py>(
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

/// What wrapping a context makes: the `SSLObject`, the object its hot calls go to, its
/// two BIOs, and the extra info it starts with.
pub(super) struct Wrapped {
    pub(super) sslobj: Py<PyAny>,
    pub(super) hot: Py<PyAny>,
    pub(super) hot_is_c: bool,
    pub(super) incoming: Py<PyAny>,
    pub(super) outgoing: Py<PyAny>,
    pub(super) extra: Py<PyDict>,
}

impl Wrapped {
    /// `sslcontext.wrap_bio(...)` (asyncio's default context when none is given), as
    /// `SSLProtocol` does it.
    pub(super) fn new(
        py: Python<'_>,
        sslcontext: Bound<'_, PyAny>,
        server_side: bool,
        server_hostname: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Wrapped> {
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
        Ok(Wrapped {
            sslobj: sslobj.unbind(),
            hot: hot.unbind(),
            hot_is_c,
            incoming,
            outgoing,
            extra: extra.unbind(),
        })
    }
}
