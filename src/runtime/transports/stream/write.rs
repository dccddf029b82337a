//! The write path: writes go to the kernel at once (one vectored call for several parts),
//! what it does not take waits in the buffer and is flushed when the socket turns writable,
//! with `pause_writing`/`resume_writing` around the water marks; and the helpers the driver
//! writes through, to any transport.

use std::io;
use std::os::fd::RawFd;

use bytes::Buf;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{Endpoint, StreamTransport};
use crate::runtime::transports::common::{is_interrupt, report, Crossing};
use crate::runtime::transports::tls::{tls_write, TlsTransport};

fn send(endpoint: Endpoint, fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is a valid slice; MSG_NOSIGNAL turns SIGPIPE into EPIPE (pipes rely
        // on Python ignoring SIGPIPE, as asyncio's pipe transports do).
        let n = unsafe {
            if endpoint == Endpoint::Socket {
                libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL)
            } else {
                libc::write(fd, data.as_ptr().cast(), data.len())
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Most slices one vectored write hands the kernel (Linux's IOV_MAX); the rest is buffered.
const MAX_IOVECS: usize = 1024;

/// `sendmsg`/`writev` of the parts in order; returns how many bytes the kernel took.
fn send_vectored(endpoint: Endpoint, fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .take(MAX_IOVECS)
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    loop {
        // SAFETY: every iovec points into a slice borrowed for the whole call; the kernel
        // only reads from them. MSG_NOSIGNAL as in `send`.
        let n = unsafe {
            if endpoint == Endpoint::Socket {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iov.len() as _;
                libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
            } else {
                libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int)
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What a write did with its data.
pub(super) enum Pushed {
    /// All of it went to the kernel (or nowhere: the connection is lost).
    Sent,
    /// Some waits in the buffer.
    Buffered,
    Failed(io::Error),
}

/// A bytes-like object's contents, borrowed in place for a write (copied only when the
/// buffer is not contiguous).
pub(super) enum HeldBytes<'py> {
    Bytes(Bound<'py, PyBytes>),
    View(PyBuffer<u8>),
    Copied(Vec<u8>),
}

impl<'py> HeldBytes<'py> {
    pub(super) fn of(data: &Bound<'py, PyAny>) -> PyResult<HeldBytes<'py>> {
        if let Ok(b) = data.downcast::<PyBytes>() {
            return Ok(HeldBytes::Bytes(b.clone()));
        }
        match PyBuffer::<u8>::get(data) {
            Ok(view) if view.is_c_contiguous() => Ok(HeldBytes::View(view)),
            Ok(view) => {
                let copy = view.to_vec(data.py());
                view.release(data.py());
                copy.map(HeldBytes::Copied)
            }
            Err(_) => Err(not_bytes_like(data)),
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            HeldBytes::Bytes(b) => b.as_bytes(),
            // SAFETY: the view pins a contiguous buffer of `len_bytes` bytes until released.
            HeldBytes::View(v) => unsafe {
                std::slice::from_raw_parts(v.buf_ptr() as *const u8, v.len_bytes())
            },
            HeldBytes::Copied(c) => c,
        }
    }

    pub(super) fn release(self, py: Python<'py>) {
        if let HeldBytes::View(v) = self {
            v.release(py);
        }
    }
}

fn not_bytes_like(data: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {:?}",
        data.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    ))
}

impl StreamTransport {
    pub(super) fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let outcome = {
            let mut st = me.state.borrow_mut(py)?;
            let mut outcome = Ok(());
            while !st.write_buf.is_empty() {
                match send(me.endpoint, me.fd, &st.write_buf) {
                    Ok(n) => st.write_buf.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            outcome
        };
        if let Err(e) = outcome {
            return Self::fatal_error(slf, e.into(), "Fatal write error on socket transport");
        }
        Self::after_write(slf)
    }

    /// Flow control and deferred close/EOF once the buffer changed.
    pub(super) fn after_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::arm_write(slf)?;
        let py = slf.py();
        let me = slf.get();
        let drained = {
            let mut st = me.state.borrow_mut(py)?;
            if st.write_buf.is_empty() {
                std::mem::take(&mut st.empty_waiters)
            } else {
                Vec::new()
            }
        };
        for waiter in drained {
            if !waiter
                .call_method0(py, intern!(py, "done"))?
                .is_truthy(py)?
            {
                waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
            }
        }
        enum Next {
            Nothing,
            Pause(Py<PyAny>),
            Resume(Py<PyAny>),
        }
        let (next, shutdown, closing) = {
            let mut st = me.state.borrow_mut(py)?;
            let size = st.write_buf.len();
            let mut shutdown = false;
            // Resume before a closing transport counts as done: the protocol may still have
            // data for it (SSLProtocol's close_notify and the records queued behind a
            // pause), and asyncio's transports take it and flush it before connection_lost.
            let next = match (st.write_marks.crossing(size), &st.protocol) {
                (Some(Crossing::Pause), Some(p)) => Next::Pause(p.clone_ref(py)),
                (Some(Crossing::Resume), Some(p)) => Next::Resume(p.clone_ref(py)),
                _ => Next::Nothing,
            };
            if size == 0 && st.eof_written && !st.closing {
                shutdown = true;
            }
            (next, shutdown, st.closing)
        };
        if shutdown {
            // SAFETY: plain syscall on our descriptor.
            unsafe { libc::shutdown(me.fd, libc::SHUT_WR) };
        }
        let (result, what) = match next {
            // an open transport's every write passes here: no second look at the state
            Next::Nothing if !closing => return Ok(()),
            Next::Nothing => return Self::lost_if_closed_and_flushed(slf),
            Next::Pause(p) => (
                me.context
                    .run(py, || p.call_method0(py, intern!(py, "pause_writing"))),
                "protocol.pause_writing() failed",
            ),
            Next::Resume(p) => (
                me.context
                    .run(py, || p.call_method0(py, intern!(py, "resume_writing"))),
                "protocol.resume_writing() failed",
            ),
        };
        if let Err(err) = result {
            if is_interrupt(py, &err) {
                return Err(err);
            }
            report(&me.loop_obj, slf.as_any(), None, &err, what)?;
        }
        Self::lost_if_closed_and_flushed(slf)
    }

    /// A closing transport whose buffer is empty (after the protocol had its chance to add
    /// more) is done: `connection_lost` follows.
    fn lost_if_closed_and_flushed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let done = {
            let mut st = slf.get().state.borrow_mut(py)?;
            let done = st.write_buf.is_empty() && st.closing && !st.lost;
            if done {
                st.lost = true;
            }
            done
        };
        if done {
            Self::schedule_connection_lost(slf, py.None())?;
        }
        Ok(())
    }

    /// Write from Rust: the driver's fast path and `write()` both end here.
    pub fn write_slice(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        Self::write_parts(slf, &[data])
    }

    /// Write the parts in order: at once with one vectored system call when nothing is
    /// buffered, and what the kernel does not take into the buffer.
    pub fn write_parts(slf: &Bound<'_, Self>, parts: &[&[u8]]) -> PyResult<()> {
        let pushed = Self::push_parts(slf, parts)?;
        Self::finish_write(slf, pushed)
    }

    /// The part of a write that reads the data (callers lending Python buffers release them
    /// before `finish_write` runs protocol callbacks, which might resize those objects).
    pub(super) fn push_parts(slf: &Bound<'_, Self>, parts: &[&[u8]]) -> PyResult<Pushed> {
        let py = slf.py();
        let me = slf.get();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(Pushed::Sent);
        }
        let mut st = me.state.borrow_mut(py)?;
        if st.eof_written {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        if st.sendfile_busy {
            return Err(PyRuntimeError::new_err(
                "unable to write; sendfile is in progress",
            ));
        }
        if st.lost {
            st.writes_after_lost += 1;
            return Ok(Pushed::Sent);
        }
        let mut sent = 0;
        if st.write_buf.is_empty() {
            let result = match parts {
                [one] => send(me.endpoint, me.fd, one),
                _ => send_vectored(me.endpoint, me.fd, parts),
            };
            match result {
                Ok(n) => sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Ok(Pushed::Failed(e)),
            }
            if sent == total {
                return Ok(Pushed::Sent);
            }
        }
        // keep what the kernel did not take, in order
        let mut skip = sent;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            st.write_buf.extend_from_slice(&part[skip..]);
            skip = 0;
        }
        Ok(Pushed::Buffered)
    }

    pub(super) fn finish_write(slf: &Bound<'_, Self>, pushed: Pushed) -> PyResult<()> {
        match pushed {
            Pushed::Sent => Ok(()),
            Pushed::Buffered => Self::after_write(slf),
            Pushed::Failed(e) => {
                Self::fatal_error(slf, e.into(), "Fatal write error on socket transport")
            }
        }
    }

    /// `write`/`writelines` of Python objects, borrowed in place for the system call.
    pub(super) fn write_objects(slf: &Bound<'_, Self>, held: Vec<HeldBytes<'_>>) -> PyResult<()> {
        let py = slf.py();
        let parts: Vec<&[u8]> = held.iter().map(HeldBytes::as_slice).collect();
        let pushed = Self::push_parts(slf, &parts);
        drop(parts);
        for h in held {
            h.release(py);
        }
        Self::finish_write(slf, pushed?)
    }
}

/// Write `data` to `transport`: directly when it is one of ours, else via ``write()``.
pub fn transport_write(py: Python<'_>, transport: &Py<PyAny>, data: &[u8]) -> PyResult<()> {
    let bound = transport.bind(py);
    if let Ok(ours) = bound.downcast::<StreamTransport>() {
        return StreamTransport::write_slice(ours, data);
    }
    if let Ok(tls) = bound.downcast::<TlsTransport>() {
        return tls_write(tls, &[data]);
    }
    bound
        .call_method1(intern!(py, "write"), (PyBytes::new(py, data),))
        .map(drop)
}

/// Whether `transport` is this loop's plain stream transport, where `transport_write_parts`
/// sends header and body in one vectored system call (elsewhere they may be framed apart).
pub fn is_stream_transport(transport: &Bound<'_, PyAny>) -> bool {
    transport.downcast::<StreamTransport>().is_ok()
}

/// Write a header and a large body without copying the body: as two slices on our
/// transports, as ``writelines([head, body])`` elsewhere (one ``write`` where there is no
/// ``writelines``).
pub fn transport_write_parts(
    py: Python<'_>,
    transport: &Py<PyAny>,
    head: &[u8],
    body: &Bound<'_, PyBytes>,
) -> PyResult<()> {
    let bound = transport.bind(py);
    if let Ok(ours) = bound.downcast::<StreamTransport>() {
        return StreamTransport::write_parts(ours, &[head, body.as_bytes()]);
    }
    if let Ok(tls) = bound.downcast::<TlsTransport>() {
        return tls_write(tls, &[head, body.as_bytes()]);
    }
    let parts = pyo3::types::PyList::new(
        py,
        [PyBytes::new(py, head).into_any(), body.clone().into_any()],
    )?;
    match bound.call_method1(intern!(py, "writelines"), (parts,)) {
        Ok(_) => Ok(()),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
            let mut joined = Vec::with_capacity(head.len() + body.as_bytes().len());
            joined.extend_from_slice(head);
            joined.extend_from_slice(body.as_bytes());
            transport_write(py, transport, &joined)
        }
        Err(e) => Err(e),
    }
}
