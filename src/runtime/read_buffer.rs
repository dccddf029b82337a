//! One receive buffer per loop thread, shared by its transports and socket operations: a
//! read is handed on (copied into bytes, or to the protocol) before the next one starts, so a
//! new connection costs no 256 KiB allocation. Large reads skip it: they are received in
//! place, into a bytes object sized by what the kernel holds.

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub const READ_CHUNK: usize = 256 * 1024;

thread_local! {
    static READ_BUFFER: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
}

/// The thread's buffer (a fresh one if it is lent out already), `READ_CHUNK` bytes of capacity.
pub fn take_read_buffer() -> Vec<u8> {
    READ_BUFFER
        .with(|cell| cell.take())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

pub fn give_back_read_buffer(buf: Vec<u8>) {
    READ_BUFFER.with(|cell| cell.set(Some(buf)));
}

/// A read this large is worth an `ioctl(FIONREAD)` to receive it in place, into a bytes
/// object of the right size, rather than into the shared buffer and then copied.
pub const LARGE_READ: usize = 16 * 1024;

/// The bytes waiting on `fd`, when there are at least `LARGE_READ` of them.
pub fn large_backlog(fd: RawFd) -> Option<usize> {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let ok = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting) } == 0;
    usize::try_from(waiting)
        .ok()
        .filter(|&n| ok && n >= LARGE_READ)
}

/// A new bytes object of `n` bytes filled by `fill(at, n)` (a read returning how many bytes
/// it wrote), shrunk to that. A failed allocation is `OutOfMemory`.
pub fn bytes_filled_by<'py>(
    py: Python<'py>,
    n: usize,
    fill: impl FnOnce(*mut u8, usize) -> io::Result<usize>,
) -> io::Result<Bound<'py, PyBytes>> {
    let size =
        ffi::Py_ssize_t::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    // SAFETY: the new bytes object is ours alone until returned; `fill` writes at most `n`
    // bytes into it, and the resize frees it and nulls the pointer when it fails.
    unsafe {
        let mut obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        if obj.is_null() {
            drop(PyErr::take(py));
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        match fill(ffi::PyBytes_AsString(obj).cast(), n) {
            Ok(got) => {
                let got = got.min(n);
                if got != n && ffi::_PyBytes_Resize(&mut obj, got as ffi::Py_ssize_t) != 0 {
                    drop(PyErr::take(py));
                    return Err(io::ErrorKind::OutOfMemory.into());
                }
                Ok(Bound::from_owned_ptr(py, obj).downcast_into_unchecked())
            }
            Err(e) => {
                ffi::Py_DECREF(obj);
                Err(e)
            }
        }
    }
}
