//! The read path: ciphertext from the stream transport below into the incoming BIO, and
//! the plaintext `_ssl` decrypts from it to the application's protocol (as a slice to a
//! native receiver, a bytes object to `data_received`, or into a `BufferedProtocol`'s
//! buffer), with the stream transport paused while undecrypted input piles up.

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::sslobject::{call_with_data, is_again, names, with_view};
use super::{AppPhase, Phase, TlsTransport};
use crate::runtime::transports::common::Crossing;
use crate::runtime::transports::native::{native_receiver, NativeReceive};

/// Plaintext decrypted per read event before it is handed on (asyncio reads 256 KiB too).
const PLAINTEXT_CHUNK: usize = 256 * 1024;

/// The most plaintext one TLS record carries.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// How plaintext reaches the application's protocol.
#[derive(Clone, Copy)]
pub(super) enum Receiver {
    Native(NativeReceive),
    Buffered,
    Plain,
}

thread_local! {
    /// Where plaintext is decrypted to, shared by the thread's TLS transports (each read
    /// event hands its plaintext on before the next starts; a re-entrant one gets its own).
    static PLAINTEXT: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

fn take_plaintext_buffer() -> Vec<u8> {
    PLAINTEXT
        .with(|c| c.take())
        .unwrap_or_else(|| vec![0; PLAINTEXT_CHUNK])
}

fn give_back_plaintext_buffer(buf: Vec<u8>) {
    PLAINTEXT.with(|c| c.set(Some(buf)));
}

pub(super) fn receiver_for(py: Python<'_>, protocol: &Bound<'_, PyAny>) -> Receiver {
    if let Some(receive) = native_receiver(protocol) {
        return Receiver::Native(receive);
    }
    // asyncio's rule (an `asyncio.BufferedProtocol` with `get_buffer`), and uvloop's for a
    // protocol that can only take a buffer (`get_buffer` and `buffer_updated`, no
    // `data_received`)
    let has = |name: &Bound<'_, pyo3::types::PyString>| protocol.hasattr(name).unwrap_or(false);
    let buffered = has(intern!(py, "get_buffer"))
        && (py
            .import("asyncio")
            .and_then(|m| m.getattr("BufferedProtocol"))
            .and_then(|c| protocol.is_instance(&c))
            .unwrap_or(false)
            || (has(intern!(py, "buffer_updated")) && !has(intern!(py, "data_received"))));
    if buffered {
        Receiver::Buffered
    } else {
        Receiver::Plain
    }
}

/// Ciphertext from the stream transport below (the native receive function `native` hands
/// out for this type).
pub(crate) fn receive_ciphertext(protocol: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<()> {
    let tls = protocol.downcast::<TlsTransport>()?;
    TlsTransport::on_ciphertext(tls, data)
}

impl TlsTransport {
    pub(super) fn on_ciphertext(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        call_with_data(me.incoming.bind(py), intern!(py, "write"), data)?;
        match me.phase(py) {
            Phase::Handshake => Self::do_handshake(slf),
            Phase::Wrapped => Self::do_read(slf),
            Phase::Flushing => Self::do_flush(slf),
            Phase::Shutdown => Self::do_shutdown(slf),
            Phase::Unwrapped => Ok(()),
        }
    }

    pub(super) fn do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (paused, backlog, closing) = {
            let st = me.state.borrow_mut(py)?;
            if !matches!(st.phase, Phase::Wrapped | Phase::Flushing) {
                return Ok(());
            }
            (st.app_reading_paused, !st.backlog.is_empty(), st.closed)
        };
        let result = (|| {
            if closing {
                // After close() the protocol receives no more data (asyncio's contract, and
                // uvloop's): what still arrives is decrypted only to reach the peer's
                // close_notify, and dropped. Only the eof_received a close_notify brings
                // is told, as in do_shutdown.
                if Self::discard_plaintext(slf)? {
                    Self::call_eof_received(slf)?;
                }
            } else if !paused {
                Self::read_plaintext(slf)?;
            }
            if !paused {
                if backlog {
                    Self::do_write(slf)?;
                } else {
                    Self::process_outgoing(slf)?;
                }
            }
            Self::control_ssl_reading(slf)
        })();
        match result {
            Ok(()) => Ok(()),
            Err(err) => Self::fatal_error(slf, err, "Fatal error on SSL protocol"),
        }
    }

    /// Decrypt what the incoming BIO holds and hand it to the application: one delivery
    /// per read event as a rule (several TLS records make one `data_received` call, as with
    /// asyncio), more only past `PLAINTEXT_CHUNK` bytes.
    fn read_plaintext(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let plain = matches!(me.state.borrow_mut(py)?.receiver, Receiver::Plain);
        let mut close_notify = false;
        let mut more = true;
        if plain {
            // straight into the bytes object data_received gets: no copy of the plaintext
            let (closed, full) = Self::read_into_new_bytes(slf)?;
            close_notify = closed;
            more = full && !me.state.borrow_mut(py)?.app_reading_paused;
        }
        if more && !close_notify {
            let mut buf = take_plaintext_buffer();
            let result = Self::read_plaintext_into(slf, &mut buf);
            give_back_plaintext_buffer(buf);
            close_notify = result?;
        }
        if close_notify {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    /// Decrypt records into `len` bytes at `ptr` until the BIO holds no complete record, the
    /// peer's close_notify arrives, or the room is used up. Returns the bytes written and
    /// whether close_notify arrived.
    fn read_records(slf: &Bound<'_, Self>, ptr: *mut u8, len: usize) -> PyResult<(usize, bool)> {
        let py = slf.py();
        let me = slf.get();
        let hot = me.hot.bind(py);
        let incoming = me.incoming.bind(py);
        let mut filled = 0;
        while filled < len {
            let room = len - filled;
            // SAFETY: the caller lends `len` writable bytes at `ptr` for this call.
            let at = unsafe { ptr.add(filled) };
            let read = with_view(py, at, room, true, |view| {
                hot.call_method1(intern!(py, "read"), (room, view))?
                    .extract::<usize>()
            });
            let n = match read {
                Ok(n) => n.min(room),
                Err(e) if is_again(py, &e) => break,
                // `_ssl` raises this instead of returning 0 when our close_notify went first
                Err(e) if names(py).is_ok_and(|n| e.is_instance(py, n.zero_return.bind(py))) => {
                    return Ok((filled, true))
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok((filled, true));
            }
            filled += n;
            // OpenSSL takes a record at a time from the BIO (no read-ahead) and a record's
            // plaintext fitted the room: an empty BIO means the next read could only say
            // "want read", which costs an exception.
            if n < room
                && incoming
                    .getattr(intern!(py, "pending"))?
                    .extract::<usize>()?
                    == 0
            {
                break;
            }
        }
        Ok((filled, false))
    }

    /// For a `data_received` protocol: decrypt into a new bytes object sized for what the
    /// BIO holds (plus one record OpenSSL may hold already), shrink it and deliver it.
    /// Returns (close_notify, the object filled up so more may wait).
    fn read_into_new_bytes(slf: &Bound<'_, Self>) -> PyResult<(bool, bool)> {
        let py = slf.py();
        let me = slf.get();
        let pending: usize = me
            .incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)?;
        let capacity = (pending + MAX_RECORD_PLAINTEXT).min(PLAINTEXT_CHUNK);
        // SAFETY: a new bytes object is ours alone until handed out: we fill at most
        // `capacity` bytes of it through `read_records`, then shrink it to what was written
        // (a failed resize frees it and nulls the pointer), so no unwritten byte is visible.
        let (data, closed, full) = unsafe {
            let mut obj =
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), capacity as ffi::Py_ssize_t);
            if obj.is_null() {
                return Err(PyErr::fetch(py));
            }
            let ptr = ffi::PyBytes_AsString(obj).cast::<u8>();
            let (filled, closed) = match Self::read_records(slf, ptr, capacity) {
                Ok(r) => r,
                Err(e) => {
                    ffi::Py_DECREF(obj);
                    return Err(e);
                }
            };
            if filled == 0 {
                ffi::Py_DECREF(obj);
                return Ok((closed, false));
            }
            if filled != capacity && ffi::_PyBytes_Resize(&mut obj, filled as ffi::Py_ssize_t) != 0
            {
                return Err(PyErr::fetch(py));
            }
            (Bound::from_owned_ptr(py, obj), closed, filled == capacity)
        };
        let protocol = me.app_protocol(py);
        if let Some(protocol) = protocol {
            Self::call_app(
                slf,
                protocol.bind(py),
                intern!(py, "data_received"),
                PyTuple::new(py, [data])?,
            )?;
        }
        Ok((closed, full))
    }

    /// Decrypt through the thread's plaintext buffer, delivering each time it fills.
    /// Returns whether the peer's close_notify arrived.
    fn read_plaintext_into(slf: &Bound<'_, Self>, buf: &mut [u8]) -> PyResult<bool> {
        let py = slf.py();
        loop {
            let (filled, closed) = Self::read_records(slf, buf.as_mut_ptr(), buf.len())?;
            if filled > 0 {
                Self::deliver(slf, &buf[..filled])?;
            }
            if closed || filled < buf.len() || slf.get().state.borrow_mut(py)?.app_reading_paused {
                return Ok(closed);
            }
        }
    }

    pub(super) fn deliver(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (protocol, receiver) = {
            let st = me.state.borrow_mut(py)?;
            match &st.protocol {
                Some(p) => (p.clone_ref(py), st.receiver),
                None => return Ok(()),
            }
        };
        let protocol = protocol.bind(py);
        match receiver {
            Receiver::Native(receive) => receive(protocol, data),
            Receiver::Plain => Self::call_app(
                slf,
                protocol,
                intern!(py, "data_received"),
                PyTuple::new(py, [PyBytes::new(py, data)])?,
            )
            .map(drop),
            Receiver::Buffered => {
                let mut rest = data;
                while !rest.is_empty() {
                    let target = Self::call_app(
                        slf,
                        protocol,
                        intern!(py, "get_buffer"),
                        PyTuple::new(py, [rest.len()])?,
                    )?;
                    let view = pyo3::buffer::PyBuffer::<u8>::get(&target)?;
                    if view.readonly() || !view.is_c_contiguous() || view.len_bytes() == 0 {
                        view.release(py);
                        return Err(PyRuntimeError::new_err(
                            "get_buffer() returned an empty or read-only buffer",
                        ));
                    }
                    let n = view.len_bytes().min(rest.len());
                    // SAFETY: the view pins a writable contiguous buffer of at least `n`
                    // bytes until released, and `rest` does not overlap it (it is ours).
                    unsafe {
                        std::ptr::copy_nonoverlapping(rest.as_ptr(), view.buf_ptr().cast(), n)
                    };
                    view.release(py);
                    drop(target);
                    Self::call_app(
                        slf,
                        protocol,
                        intern!(py, "buffer_updated"),
                        PyTuple::new(py, [n])?,
                    )?;
                    rest = &rest[n..];
                }
                Ok(())
            }
        }
    }

    pub(super) fn call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let protocol = {
            let mut st = me.state.borrow_mut(py)?;
            if st.app_phase != AppPhase::Made {
                return Ok(());
            }
            st.app_phase = AppPhase::Eof;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        match Self::call_app(
            slf,
            protocol.bind(py),
            intern!(py, "eof_received"),
            PyTuple::empty(py),
        ) {
            Ok(keep_open) => {
                if keep_open.is_truthy().unwrap_or(false) {
                    names(py)?.logger.call_method1(
                        py,
                        intern!(py, "warning"),
                        ("returning true from eof_received() has no effect when using ssl",),
                    )?;
                }
                Ok(())
            }
            Err(err) => Self::fatal_error(slf, err, "Error calling eof_received()"),
        }
    }

    /// Pause the stream transport while undecrypted input piles up (the application is not
    /// reading), resume it once that drained.
    pub(super) fn control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (paused, app_paused, high) = {
            let st = me.state.borrow_mut(py)?;
            (
                st.in_marks.paused(),
                st.app_reading_paused,
                st.in_marks.high(),
            )
        };
        // A reading application empties the BIO each event: below a record's size, nothing
        // to look at (the getattr is skipped on the hot path).
        if !paused && !app_paused && high > 64 * 1024 {
            return Ok(());
        }
        let size: usize = me
            .incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)?;
        let crossing = me.state.borrow_mut(py)?.in_marks.crossing(size);
        if let Some(crossing) = crossing {
            let method = match crossing {
                Crossing::Pause => intern!(py, "pause_reading"),
                Crossing::Resume => intern!(py, "resume_reading"),
            };
            if let Some(lower) = me.lower(py) {
                lower.call_method0(py, method)?;
            }
        }
        Ok(())
    }

    /// Read and drop what plaintext the incoming BIO holds; returns whether the peer's
    /// close_notify came with it.
    pub(super) fn discard_plaintext(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let mut buf = take_plaintext_buffer();
        let result = loop {
            match Self::read_records(slf, buf.as_mut_ptr(), buf.len()) {
                Ok((_, true)) => break Ok(true),
                Ok((n, false)) if n < buf.len() => break Ok(false),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        give_back_plaintext_buffer(buf);
        result
    }
}
