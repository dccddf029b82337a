//! The write path: the application's plaintext into the `SSLObject` (or a backlog while
//! the handshake runs or `_ssl` refuses it), the records from the outgoing BIO to the stream
//! transport below, and `pause_writing`/`resume_writing` for the application around the
//! water marks.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::sslobject::{call_with_data, is_again, names};
use super::{Phase, TlsTransport};
use crate::runtime::transports::common::{is_interrupt, Crossing};
use crate::runtime::transports::stream::StreamTransport;

/// Writes after the connection is gone are dropped; past this many a warning is logged.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

impl TlsTransport {
    /// Encrypt the application's `parts` (or queue them: during the handshake, or behind a
    /// backlog) and send the records.
    pub fn write_parts(slf: &Bound<'_, Self>, parts: &[&[u8]]) -> PyResult<()> {
        Self::write_data(slf, parts, None)
    }

    /// `write_parts`, with the Python object holding the one part when there is one (it
    /// goes to `_ssl` as it is).
    fn write_data(
        slf: &Bound<'_, Self>,
        parts: &[&[u8]],
        object: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let direct = {
            let mut st = me.state.borrow_mut(py)?;
            match st.phase {
                Phase::Flushing | Phase::Shutdown | Phase::Unwrapped => {
                    st.conn_lost += 1;
                    let warn = st.conn_lost > LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                    drop(st);
                    if warn {
                        names(py)?.logger.call_method1(
                            py,
                            intern!(py, "warning"),
                            ("SSL connection is closed",),
                        )?;
                    }
                    return Ok(());
                }
                Phase::Wrapped if st.backlog.is_empty() => true,
                _ => {
                    let mut joined = Vec::with_capacity(total);
                    for p in parts {
                        joined.extend_from_slice(p);
                    }
                    st.backlog.push_back(joined);
                    st.backlog_size += total;
                    false
                }
            }
        };
        let result = if direct {
            Self::encrypt_now(slf, parts, total, object)
        } else if me.phase(py) == Phase::Wrapped {
            Self::do_write(slf)
        } else {
            Ok(())
        };
        match result {
            Ok(()) => Ok(()),
            Err(err) => Self::fatal_error(slf, err, "Fatal error on SSL protocol"),
        }
    }

    /// The common write: nothing queued, so straight into the `SSLObject` (several parts as
    /// one record run: joined first, as records per small part would cost bytes and time).
    fn encrypt_now(
        slf: &Bound<'_, Self>,
        parts: &[&[u8]],
        total: usize,
        object: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let joined;
        let data: &[u8] = if parts.len() == 1 {
            parts[0]
        } else {
            let mut j = Vec::with_capacity(total);
            for p in parts {
                j.extend_from_slice(p);
            }
            joined = j;
            &joined
        };
        let written = match object {
            Some(obj) if parts.len() == 1 => {
                me.hot.bind(py).call_method1(intern!(py, "write"), (obj,))
            }
            _ => call_with_data(me.hot.bind(py), intern!(py, "write"), data),
        };
        let taken = match written {
            Ok(n) => n.extract::<usize>()?.min(data.len()),
            Err(e) if is_again(py, &e) => 0,
            Err(e) => return Err(e),
        };
        if taken < data.len() {
            let mut st = me.state.borrow_mut(py)?;
            st.backlog.push_back(data[taken..].to_vec());
            st.backlog_size += data.len() - taken;
        }
        Self::process_outgoing(slf)
    }

    /// Feed the backlog to the `SSLObject` until it is empty or refused, then send.
    pub(super) fn do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        loop {
            let Some(chunk) = me.state.borrow_mut(py)?.backlog.pop_front() else {
                break;
            };
            let taken = match call_with_data(me.hot.bind(py), intern!(py, "write"), &chunk) {
                Ok(n) => n.extract::<usize>()?.min(chunk.len()),
                Err(e) if is_again(py, &e) => 0,
                Err(e) => {
                    me.state.borrow_mut(py)?.backlog.push_front(chunk);
                    return Err(e);
                }
            };
            let mut st = me.state.borrow_mut(py)?;
            st.backlog_size -= taken;
            if taken < chunk.len() {
                st.backlog.push_front(chunk[taken..].to_vec());
                break;
            }
        }
        Self::process_outgoing(slf)
    }

    /// Hand the records in the outgoing BIO to the stream transport (unless it asked us to
    /// pause), then pause or resume the application's writing.
    pub(super) fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (paused, lower) = {
            let st = me.state.borrow_mut(py)?;
            (
                st.ssl_writing_paused,
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        if !paused {
            if let Some(lower) = lower {
                let data = me.outgoing.call_method0(py, intern!(py, "read"))?;
                let data = data.bind(py).downcast::<PyBytes>()?;
                if !data.as_bytes().is_empty() {
                    let lower = lower.bind(py);
                    match lower.downcast::<StreamTransport>() {
                        Ok(stream) => StreamTransport::write_slice(stream, data.as_bytes())?,
                        Err(_) => {
                            lower.call_method1(intern!(py, "write"), (data,))?;
                        }
                    }
                }
            }
        }
        Self::control_app_writing(slf)
    }

    pub(super) fn write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        let pending: usize = self
            .outgoing
            .getattr(py, intern!(py, "pending"))?
            .extract(py)?;
        Ok(pending + self.state.borrow_mut(py)?.backlog_size)
    }

    pub(super) fn control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (ssl_paused, backlog) = {
            let st = me.state.borrow_mut(py)?;
            (st.ssl_writing_paused, st.backlog_size)
        };
        // unpaused, the outgoing BIO was just emptied: only the backlog counts
        let size = if ssl_paused {
            me.write_buffer_size(py)?
        } else {
            backlog
        };
        let (crossing, protocol) = {
            let mut st = me.state.borrow_mut(py)?;
            let Some(crossing) = st.out_marks.crossing(size) else {
                return Ok(());
            };
            (crossing, st.protocol.as_ref().map(|p| p.clone_ref(py)))
        };
        let (method, what) = match crossing {
            Crossing::Pause => (
                intern!(py, "pause_writing"),
                "protocol.pause_writing() failed",
            ),
            Crossing::Resume => (
                intern!(py, "resume_writing"),
                "protocol.resume_writing() failed",
            ),
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        if let Err(err) = Self::call_app(slf, protocol.bind(py), method, PyTuple::empty(py)) {
            if is_interrupt(py, &err) {
                return Err(err);
            }
            let ctx = PyDict::new(py);
            ctx.set_item("message", what)?;
            ctx.set_item("exception", err.value(py))?;
            ctx.set_item("transport", slf)?;
            ctx.set_item("protocol", slf)?;
            me.loop_obj
                .call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Ok(())
    }

    /// Encrypt and send ``data`` (bytes-like).
    pub(super) fn write_object(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(b) = data.downcast::<PyBytes>() {
            return Self::write_data(slf, &[b.as_bytes()], Some(data));
        }
        let is_bytes_like = data.is_instance_of::<pyo3::types::PyByteArray>()
            || data.is_instance_of::<pyo3::types::PyMemoryView>();
        if !is_bytes_like {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data)?;
        let copy = buffer.to_vec(slf.py())?;
        buffer.release(slf.py());
        Self::write_parts(slf, &[&copy])
    }

    /// Encrypt and send each item of ``list_of_data`` in order.
    pub(super) fn write_lines(
        slf: &Bound<'_, Self>,
        list_of_data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut joined = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
            let buffer = pyo3::buffer::PyBuffer::<u8>::get(&item)?;
            joined.extend_from_slice(&buffer.to_vec(py)?);
            buffer.release(py);
        }
        Self::write_parts(slf, &[&joined])
    }
}

/// Write from Rust to a TLS transport (the driver's writes over TLS).
pub fn tls_write(slf: &Bound<'_, TlsTransport>, parts: &[&[u8]]) -> PyResult<()> {
    TlsTransport::write_parts(slf, parts)
}
