//! The read path: readiness to reads, and received bytes to the protocol as asyncio
//! prescribes (see the module above), with one read per event and the rest in a single
//! queued continuation (`read_continuation`), large reads for `data_received` straight into
//! their bytes object, and a `BufferedProtocol`'s own buffer filled in place.

use std::io;
use std::os::fd::RawFd;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{Endpoint, StreamTransport};
use crate::runtime::read_buffer::{
    bytes_filled_by, give_back_read_buffer, large_backlog, take_read_buffer, LARGE_READ, READ_CHUNK,
};
use crate::runtime::transports::native::{native_receiver, NativeReceive};

/// Full reads per readiness event before yielding to other work for an iteration. One, as
/// the stdlib loop does: a read is up to `READ_CHUNK` bytes, and the protocol decodes what it
/// got before the loop moves on, so a backlog (a big fetch) read four times in a row kept
/// timers and ready callbacks (a `wait_for` timeout, the cancellation it starts) waiting for
/// a megabyte of decoding per iteration. A short read still ends the event at once.
const READS_PER_EVENT: usize = 1;

/// How received bytes reach the protocol.
pub(super) enum Receiver {
    /// A protocol written in Rust: bytes go to it as a slice through this function.
    Native(NativeReceive),
    Buffered,
    Plain,
}

pub(super) fn receiver_for(py: Python<'_>, protocol: &Bound<'_, PyAny>) -> Receiver {
    if let Some(receive) = native_receiver(protocol) {
        return Receiver::Native(receive);
    }
    if protocol.hasattr(intern!(py, "get_buffer")).unwrap_or(false)
        && protocol
            .hasattr(intern!(py, "buffer_updated"))
            .unwrap_or(false)
    {
        Receiver::Buffered
    } else {
        Receiver::Plain
    }
}

fn recv(endpoint: Endpoint, fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` points to at least `len` writable bytes owned by the caller.
        let n = unsafe {
            if endpoint == Endpoint::Socket {
                libc::recv(fd, buf.cast(), len, 0)
            } else {
                libc::read(fd, buf.cast(), len)
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

impl StreamTransport {
    pub(super) fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        for _ in 0..READS_PER_EVENT {
            let (protocol, native) = {
                let st = me.state.borrow_mut(py)?;
                if !st.read_pending || st.closing || st.reading_paused || st.eof_received {
                    return Ok(());
                }
                let Some(protocol) = st.protocol.as_ref().map(|p| p.clone_ref(py)) else {
                    return Ok(());
                };
                let native = match &st.receiver {
                    Receiver::Native(receive) => Some(Some(*receive)),
                    Receiver::Buffered => None,
                    Receiver::Plain => Some(None),
                };
                (protocol, native)
            };
            // Python protocols are called in the connection's context; the native one is not
            // (no Python runs there), which keeps its per-read path free of the enter/exit.
            let drained = match native {
                None => me.context.run(py, || {
                    Self::read_into_protocol_buffer(slf, protocol.bind(py))
                })?,
                Some(None) => me
                    .context
                    .run(py, || Self::read_chunk(slf, protocol.bind(py), None))?,
                Some(native) => Self::read_chunk(slf, protocol.bind(py), native)?,
            };
            if drained {
                return Ok(());
            }
        }
        // Budget spent with data still waiting: continue next iteration, after other work.
        Self::queue_read_continuation(slf)
    }

    /// Queue one `_read_ready` unless one is queued already.
    pub(super) fn queue_read_continuation(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        {
            let mut st = me.state.borrow_mut(py)?;
            if st.read_continuation {
                return Ok(());
            }
            st.read_continuation = true;
        }
        let queued = me.loop_obj.call_method1(
            py,
            intern!(py, "call_soon"),
            (slf.getattr(intern!(py, "_read_ready"))?,),
        );
        if queued.is_err() {
            if let Ok(mut st) = me.state.borrow_mut(py) {
                st.read_continuation = false;
            }
        }
        queued.map(drop)
    }

    /// One read into our buffer, handed over as a slice (a native protocol) or bytes. Returns
    /// whether the socket is read dry (or the transport is done reading).
    fn read_chunk(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        native: Option<NativeReceive>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        if native.is_none() {
            let large = me.state.borrow_mut(py).is_ok_and(|st| st.large_reads);
            if let Some(waiting) = large.then(|| large_backlog(me.fd)).flatten() {
                if let Some(drained) = Self::read_in_place(slf, protocol, waiting)? {
                    return Ok(drained);
                }
            }
        }
        let mut buf = take_read_buffer();
        let result = recv(me.endpoint, me.fd, buf.as_mut_ptr(), buf.capacity());
        let capacity = buf.capacity();
        let outcome = Self::after_recv(slf, protocol, result, capacity, "data_received", |n| {
            // SAFETY: recv initialised the first `n` bytes of the allocation.
            let data = unsafe { std::slice::from_raw_parts(buf.as_ptr(), n) };
            match native {
                Some(receive) => receive(protocol, data),
                None => {
                    if let Ok(mut st) = me.state.borrow_mut(py) {
                        st.large_reads = n >= LARGE_READ;
                    }
                    protocol
                        .call_method1(intern!(py, "data_received"), (PyBytes::new(py, data),))
                        .map(drop)
                }
            }
        });
        give_back_read_buffer(buf);
        outcome
    }

    /// A large read for `data_received`: the `waiting` bytes (at most `READ_CHUNK` of them, as
    /// any read) straight into their bytes object. Reading all that was there drains the
    /// socket (what arrives later raises a new edge); reading part of it does not.
    /// `None` when that object could not be allocated (then the shared buffer serves).
    fn read_in_place(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        waiting: usize,
    ) -> PyResult<Option<bool>> {
        let py = slf.py();
        let me = slf.get();
        let wanted = waiting.min(READ_CHUNK);
        // `after_recv` counts a read short of its capacity as draining the socket
        let capacity = if waiting > wanted { wanted } else { usize::MAX };
        let result = bytes_filled_by(py, wanted, |at, len| recv(me.endpoint, me.fd, at, len));
        let (result, data) = match result {
            Ok(bytes) => (Ok(bytes.len()?), Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Ok(None),
            Err(e) => (Err(e), None),
        };
        Self::after_recv(slf, protocol, result, capacity, "data_received", |n| {
            if let Ok(mut st) = me.state.borrow_mut(py) {
                st.large_reads = n >= LARGE_READ;
            }
            match data {
                Some(bytes) => protocol
                    .call_method1(intern!(py, "data_received"), (bytes,))
                    .map(drop),
                None => Ok(()),
            }
        })
        .map(Some)
    }

    fn read_into_protocol_buffer(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let lent = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|target| {
                let buffer = PyBuffer::<u8>::get(&target)?;
                if buffer.readonly() || !buffer.is_c_contiguous() || buffer.len_bytes() == 0 {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty or read-only buffer",
                    ));
                }
                Ok((target, buffer))
            });
        let (target, buffer) = match lent {
            Ok(lent) => lent,
            Err(err) => {
                let message = "Fatal error: protocol.get_buffer() call failed.";
                return Self::fatal_error(slf, err, message).map(|_| true);
            }
        };
        let len = buffer.len_bytes();
        let result = recv(me.endpoint, me.fd, buffer.buf_ptr().cast(), len);
        buffer.release(py);
        drop(target);
        Self::after_recv(slf, protocol, result, len, "buffer_updated", |n| {
            protocol
                .call_method1(intern!(py, "buffer_updated"), (n,))
                .map(drop)
        })
    }

    /// What one receive of at most `capacity` bytes led to: EOF, data for the protocol
    /// (`deliver`), nothing more to read, or a failure. Returns whether the socket is read
    /// dry (or reading is over).
    fn after_recv(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        result: io::Result<usize>,
        capacity: usize,
        callback: &str,
        deliver: impl FnOnce(usize) -> PyResult<()>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        match result {
            Ok(0) => Self::on_eof(slf, protocol).map(|_| true),
            Ok(n) => match deliver(n) {
                Ok(()) => Ok(n < capacity && !me.peer_closed(py)),
                Err(err) => {
                    let message = format!("Fatal error: protocol.{callback}() call failed.");
                    Self::fatal_error(slf, err, &message).map(|_| true)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Ok(mut st) = me.state.borrow_mut(py) {
                    st.read_pending = false;
                }
                Ok(true)
            }
            Err(e) => Self::fatal_error(slf, e.into(), "Fatal read error on socket transport")
                .map(|_| true),
        }
    }

    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let native = {
            let mut st = slf.get().state.borrow_mut(py)?;
            st.eof_received = true;
            st.read_pending = false;
            matches!(st.receiver, Receiver::Native(_))
        };
        let eof_received = || protocol.call_method0(intern!(py, "eof_received"));
        // the other receivers reach here inside the context already (`read_ready`)
        let outcome = if native {
            slf.get().context.run(py, eof_received)
        } else {
            eof_received()
        };
        match outcome {
            Ok(keep_open) => {
                // A pipe closes at EOF whatever the protocol says, as asyncio's pipes do.
                if slf.get().endpoint != Endpoint::Socket || !keep_open.is_truthy().unwrap_or(false)
                {
                    Self::close_inner(slf)?;
                }
                Ok(())
            }
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.eof_received() call failed.",
            ),
        }
    }

    /// Continue reading data the socket already reported (after a pause or a spent budget).
    pub(super) fn continue_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if let Ok(mut st) = slf.get().state.borrow_mut(slf.py()) {
            st.read_continuation = false;
        }
        Self::read_ready(slf)
    }
}
