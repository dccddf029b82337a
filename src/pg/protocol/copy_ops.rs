//! COPY internals. COPY OUT is pull-based: the rows' CopyData payloads gather in one buffer
//! and a waiting reader gets what each read from the socket brought as one bytes object;
//! past `COPY_OUT_HIGH_WATER` buffered with no reader waiting, the transport stops reading,
//! so a slow sink bounds memory. COPY IN writes CopyData straight to the transport and tells
//! the caller when to `await drain()`.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::effects::{operation, with_effects, Effect};
use super::{Op, PGProtocol, COPY_IN_COALESCE, COPY_OUT_HIGH_WATER};
use crate::pg::errors::interface_error;
use crate::runtime::transports::stream::{
    is_stream_transport, transport_write, transport_write_parts,
};

impl PGProtocol {
    /// A CopyData row of a COPY OUT: buffered; a waiting reader is handed the data at the
    /// end of the batch (`feed`).
    pub(super) fn copy_out_data(
        &mut self,
        py: Python<'_>,
        data: &[u8],
        fx: &mut Vec<Effect>,
    ) -> PyResult<()> {
        self.copy_buf.extend_from_slice(data);
        if self.copy_reader.is_none()
            && self.copy_buf.len() > COPY_OUT_HIGH_WATER
            && !self.reading_paused
        {
            // a slow consumer: stop reading until it catches up
            self.reading_paused = true;
            fx.push(Effect::Call(self.transport(py)?, "pause_reading"));
        }
        Ok(())
    }

    /// The COPY OUT is over: a waiting reader gets what is left, or `None`.
    pub(super) fn end_copy_out(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        if let Some(r) = self.copy_reader.take() {
            if self.copy_buf.is_empty() {
                fx.push(Effect::Resolve(r, py.None()));
            } else if let Ok(chunks) = self.take_copy_chunks(py) {
                fx.push(Effect::Resolve(r, chunks));
            }
            self.copy_buf = Vec::new();
        }
        // without a waiting reader what is left stays for the next copy_out_read
        self.copy_discard = false;
        self.resume_reading_if_paused(py, fx);
    }

    /// What COPY OUT data is buffered, as the `[bytes]` a reader gets; the buffer is emptied.
    pub(super) fn take_copy_chunks(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let chunk = PyBytes::new(py, &self.copy_buf);
        self.copy_buf.clear();
        Ok(PyList::new(py, [chunk])?.into_any().unbind())
    }

    /// After a batch of messages: a waiting COPY OUT reader gets what the batch brought.
    pub(super) fn flush_copy_out(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        if self.copy_buf.is_empty() || self.copy_reader.is_none() {
            return;
        }
        match self.take_copy_chunks(py) {
            Ok(chunks) => {
                if let Some(r) = self.copy_reader.take() {
                    fx.push(Effect::Resolve(r, chunks));
                }
            }
            Err(e) => self.record_error(e),
        }
    }

    pub(super) fn resume_reading_if_paused(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        if self.reading_paused {
            self.reading_paused = false;
            if let Some(t) = &self.transport {
                fx.push(Effect::Call(t.clone_ref(py), "resume_reading"));
            }
        }
    }
}

/// `PGProtocol.copy_out`: start `COPY ... TO STDOUT`.
pub(super) fn copy_out(slf: &Bound<'_, PGProtocol>, sql: String) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(&sql, &mut out)
            .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
        this.copy_buf.clear();
        this.copy_discard = false;
        this.begin(py, Op::CopyOut, out, Some(sql), fx)
    })
}

/// `PGProtocol.copy_out_read`: the future of the next chunks, or of `None` at the end.
pub(super) fn copy_out_read(slf: &Bound<'_, PGProtocol>) -> PyResult<PyObject> {
    let py = slf.py();
    with_effects(slf, |this, fx| {
        let fut = this.loop_.call_method0(py, "create_future")?;
        if !this.copy_buf.is_empty() {
            let chunks = this.take_copy_chunks(py)?;
            if !matches!(this.op, Op::CopyOut) {
                this.copy_buf = Vec::new(); // the last of it: give the memory back
            }
            this.resume_reading_if_paused(py, fx);
            fx.push(Effect::Resolve(fut.clone_ref(py), chunks));
        } else if !matches!(this.op, Op::CopyOut) {
            fx.push(Effect::Resolve(fut.clone_ref(py), py.None()));
        } else if this.copy_reader.is_some() {
            return Err(interface_error(py, "copy_out_read() is already waiting"));
        } else {
            this.resume_reading_if_paused(py, fx);
            this.copy_reader = Some(fut.clone_ref(py));
        }
        Ok(fut)
    })
}

/// `PGProtocol.copy_out_discard`: drop buffered and further COPY OUT data.
pub(super) fn copy_out_discard(slf: &Bound<'_, PGProtocol>) -> PyResult<()> {
    let py = slf.py();
    with_effects(slf, |this, fx| {
        this.copy_discard = true;
        this.copy_buf = Vec::new();
        this.resume_reading_if_paused(py, fx);
        Ok(())
    })
}

/// `PGProtocol.copy_in`: start `COPY ... FROM STDIN`; returns `(ready, done)`.
pub(super) fn copy_in(slf: &Bound<'_, PGProtocol>, sql: String) -> PyResult<(PyObject, PyObject)> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(&sql, &mut out)
            .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
        let ready = this.loop_.call_method0(py, "create_future")?;
        let op = Op::CopyIn {
            ready: Some(ready.clone_ref(py)),
        };
        let done = this.begin(py, op, out, Some(sql), fx)?;
        Ok((ready, done))
    })
}

/// `PGProtocol.copy_in_data`: one CopyData message; returns whether writing is paused.
pub(super) fn copy_in_data(
    slf: &Bound<'_, PGProtocol>,
    data: &Bound<'_, PyBytes>,
) -> PyResult<bool> {
    let py = slf.py();
    let transport = {
        let this = slf.borrow();
        if !matches!(this.op, Op::CopyIn { .. }) {
            return Err(interface_error(py, "no COPY FROM STDIN in progress"));
        }
        this.transport(py)?
    };
    let bytes = data.as_bytes();
    let len = i32::try_from(bytes.len() + 4)
        .map_err(|_| interface_error(py, "a COPY data chunk must be under 2 GiB"))?;
    let vectored = bytes.len() > COPY_IN_COALESCE && is_stream_transport(transport.bind(py));
    let mut head = BytesMut::with_capacity(if vectored { 5 } else { 5 + bytes.len() });
    head.put_u8(b'd');
    head.put_i32(len);
    if vectored {
        // a big chunk goes out as it is, behind its header, in one vectored send: no copy
        transport_write_parts(py, &transport, &head, data)?;
    } else {
        // Anywhere else (TLS, another loop's transport) each write() is framed on its own:
        // under TLS the 5-byte header would be a TLS record by itself, and the server
        // (OpenSSL reads a record's header and body separately) would pay two reads and a
        // decryption for it per chunk. One copy of the chunk is cheaper than that.
        head.put_slice(bytes);
        transport_write(py, &transport, &head)?;
    }
    Ok(slf.borrow().writing_paused)
}

/// `PGProtocol.copy_in_end`: CopyDone, or CopyFail with `error`.
pub(super) fn copy_in_end(slf: &Bound<'_, PGProtocol>, error: Option<&str>) -> PyResult<()> {
    let py = slf.py();
    let transport = {
        let this = slf.borrow();
        if !matches!(this.op, Op::CopyIn { .. }) {
            return Ok(());
        }
        this.transport(py)?
    };
    let mut out = BytesMut::with_capacity(64);
    match error {
        None => frontend::copy_done(&mut out),
        Some(msg) => {
            frontend::copy_fail(msg, &mut out).map_err(|e| interface_error(py, e.to_string()))?
        }
    }
    transport_write(py, &transport, &out)
}
