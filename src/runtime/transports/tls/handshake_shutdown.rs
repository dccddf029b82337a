//! The handshake and shutdown state machine: the handshake and its timeout, then, once
//! the application closes or the peer's close_notify arrives, flushing, our close_notify,
//! waiting for the peer's (bounded by the shutdown timeout) and closing the connection
//! below; and what the stream transport's own `connection_made`, `eof_received` and
//! `connection_lost` mean in each phase.

use pyo3::exceptions::{
    PyConnectionAbortedError, PyConnectionResetError, PyTimeoutError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::sslobject::{is_again, is_ssl_error, names};
use super::{AppPhase, Phase, TlsTransport};
use crate::runtime::transports::common::{call_later_method, call_soon_method, is_interrupt};

/// asyncio's defaults (`asyncio.constants`), in seconds.
pub(super) const HANDSHAKE_TIMEOUT: f64 = 60.0;
pub(super) const SHUTDOWN_TIMEOUT: f64 = 30.0;

fn format_seconds(s: f64) -> String {
    // as Python prints a float: 60.0, 0.5
    if s.fract() == 0.0 && s.abs() < 1e16 {
        format!("{s:.1}")
    } else {
        format!("{s}")
    }
}

/// `ssl_handshake_timeout`/`ssl_shutdown_timeout` as given (`default` when None): a
/// positive number of seconds.
pub(super) fn timeout(name: &str, given: Option<f64>, default: f64) -> PyResult<f64> {
    match given {
        None => Ok(default),
        Some(t) if t > 0.0 => Ok(t),
        Some(t) => Err(PyValueError::new_err(format!(
            "{name} should be a positive number, got {}",
            format_seconds(t)
        ))),
    }
}

impl TlsTransport {
    fn wakeup_waiter(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let Some(waiter) = slf.get().state.borrow_mut(py)?.waiter.take() else {
            return Ok(());
        };
        let waiter = waiter.bind(py);
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            match exc {
                Some(e) if !e.is_none() => {
                    waiter.call_method1(intern!(py, "set_exception"), (e,))?
                }
                _ => waiter.call_method1(intern!(py, "set_result"), (py.None(),))?,
            };
        }
        Ok(())
    }

    fn cancel_timer(py: Python<'_>, timer: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(t) = timer {
            t.call_method0(py, intern!(py, "cancel"))?;
        }
        Ok(())
    }

    pub(super) fn do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        match slf.get().hot.call_method0(py, intern!(py, "do_handshake")) {
            Ok(_) => Self::on_handshake_complete(slf, None),
            Err(e) if is_again(py, &e) => Self::process_outgoing(slf),
            Err(e) if is_ssl_error(py, &e) => Self::on_handshake_complete(slf, Some(e)),
            Err(e) => Err(e),
        }
    }

    fn on_handshake_complete(slf: &Bound<'_, Self>, failure: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let timer = me.state.borrow_mut(py)?.handshake_timer.take();
        Self::cancel_timer(py, timer)?;
        let outcome = match failure {
            Some(e) => Err(e),
            None => {
                me.set_phase(py, Phase::Wrapped)?;
                me.sslobj.call_method0(py, intern!(py, "getpeercert"))
            }
        };
        let peercert = match outcome {
            Ok(cert) => cert,
            Err(err) => {
                if is_interrupt(py, &err) {
                    return Err(err);
                }
                me.set_phase(py, Phase::Unwrapped)?;
                let cert_failure =
                    names(py).is_ok_and(|n| err.is_instance(py, n.cert_error.bind(py)));
                let message = if cert_failure {
                    "SSL handshake failed on verifying the certificate"
                } else {
                    "SSL handshake failed"
                };
                let value = err.value(py).clone().into_any();
                Self::fatal_error(slf, err, message)?;
                return Self::wakeup_waiter(slf, Some(&value));
            }
        };
        let sslobj = me.sslobj.bind(py);
        let extra = me.extra.bind(py);
        extra.set_item("peercert", peercert)?;
        extra.set_item("cipher", sslobj.call_method0(intern!(py, "cipher"))?)?;
        extra.set_item(
            "compression",
            sslobj.call_method0(intern!(py, "compression"))?,
        )?;
        extra.set_item("ssl_object", sslobj)?;
        let made = {
            let mut st = me.state.borrow_mut(py)?;
            if st.app_phase == AppPhase::Init {
                st.app_phase = AppPhase::Made;
                st.protocol.as_ref().map(|p| p.clone_ref(py))
            } else {
                None
            }
        };
        if let Some(protocol) = made {
            Self::call_app(
                slf,
                protocol.bind(py),
                intern!(py, "connection_made"),
                PyTuple::new(py, [slf.as_any()])?,
            )?;
        }
        Self::wakeup_waiter(slf, None)?;
        // Plaintext that came with the handshake's last flight waits an iteration: after
        // start_tls the caller learns of this transport only in the waiter's callback, and
        // data handed over now would reach a protocol still writing to the plain transport.
        call_soon_method(&me.loop_obj, slf.as_any(), intern!(py, "_resume"))
    }

    pub(super) fn start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let phase = {
            let mut st = me.state.borrow_mut(py)?;
            if st.phase == Phase::Flushing && st.eof_received && st.app_reading_paused {
                // a raw EOF left the session waiting for resume_reading (on_eof_received);
                // a protocol that closes will not resume: end it now, what it did not read
                // discarded as after any close
                st.closed = true;
                drop(st);
                return Self::do_flush(slf);
            }
            if matches!(
                st.phase,
                Phase::Flushing | Phase::Shutdown | Phase::Unwrapped
            ) {
                return Ok(());
            }
            st.closed = true;
            st.phase
        };
        if phase == Phase::Handshake {
            return Self::abort_inner(slf, None);
        }
        me.set_phase(py, Phase::Flushing)?;
        Self::arm_shutdown_timer(slf)?;
        Self::do_flush(slf)
    }

    /// `ssl_shutdown_timeout` from now, the connection is aborted if the session has not
    /// ended by then.
    fn arm_shutdown_timer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let check = intern!(py, "_check_shutdown_timeout");
        let timer = call_later_method(&me.loop_obj, me.shutdown_timeout, slf.as_any(), check)?;
        let old = me.state.borrow_mut(py)?.shutdown_timer.replace(timer);
        Self::cancel_timer(py, old)
    }

    fn on_shutdown_complete(slf: &Bound<'_, Self>, failure: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let timer = me.state.borrow_mut(py)?.shutdown_timer.take();
        Self::cancel_timer(py, timer)?;
        if let Some(err) = failure {
            return Self::fatal_error(slf, err, "Fatal error on transport");
        }
        if let Some(lower) = me.lower(py) {
            call_soon_method(&me.loop_obj, lower.bind(py), intern!(py, "close"))?;
        }
        Ok(())
    }

    pub(super) fn do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::do_read(slf)?;
        {
            let mut st = slf.get().state.borrow_mut(py)?;
            if st.phase != Phase::Flushing {
                return Ok(());
            }
            st.phase = Phase::Shutdown;
        }
        Self::do_shutdown(slf)
    }

    pub(super) fn do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let eof = me.state.borrow_mut(py)?.eof_received;
        let result = if eof {
            Ok(())
        } else {
            // Application data still arriving after our close_notify is discarded first:
            // OpenSSL's shutdown fails on it ("application data after close notify").
            if Self::discard_plaintext(slf)? {
                Self::call_eof_received(slf)?;
            }
            let name = if me.hot_is_c {
                intern!(py, "shutdown")
            } else {
                intern!(py, "unwrap")
            };
            me.hot.call_method0(py, name).map(drop)
        };
        match result {
            Ok(()) => {
                Self::process_outgoing(slf)?;
                Self::call_eof_received(slf)?;
                Self::on_shutdown_complete(slf, None)
            }
            Err(e) if is_again(py, &e) => Self::process_outgoing(slf),
            Err(e) if is_ssl_error(py, &e) => Self::on_shutdown_complete(slf, Some(e)),
            Err(e) => Err(e),
        }
    }

    pub(super) fn abort_inner(
        slf: &Bound<'_, Self>,
        exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        me.set_phase(py, Phase::Unwrapped)?;
        if let Some(lower) = me.lower(py) {
            match exc {
                Some(e) => lower.call_method1(py, intern!(py, "_force_close"), (e,))?,
                None => lower.call_method0(py, intern!(py, "abort"))?,
            };
        }
        Ok(())
    }

    /// The stream transport below is connected: start the handshake.
    pub(super) fn start_handshake(
        slf: &Bound<'_, Self>,
        transport: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        {
            let mut st = me.state.borrow_mut(py)?;
            st.transport = Some(transport.unbind());
            st.phase = Phase::Handshake;
        }
        let check = intern!(py, "_check_handshake_timeout");
        let timer = call_later_method(&me.loop_obj, me.handshake_timeout, slf.as_any(), check)?;
        me.state.borrow_mut(py)?.handshake_timer = Some(timer);
        Self::do_handshake(slf)
    }

    /// The stream transport below is gone.
    pub(super) fn on_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let _ = me.outgoing.call_method0(py, intern!(py, "read"));
        let (lost, backlog, timers, protocol) = {
            let mut st = me.state.borrow_mut(py)?;
            st.backlog_size = 0;
            st.conn_lost += 1;
            st.closed = true;
            let lost = st.phase != Phase::Handshake
                && matches!(st.app_phase, AppPhase::Made | AppPhase::Eof);
            if lost {
                st.app_phase = AppPhase::Lost;
            }
            st.phase = Phase::Unwrapped;
            (
                lost,
                std::mem::take(&mut st.backlog),
                [st.handshake_timer.take(), st.shutdown_timer.take()],
                st.protocol.take(),
            )
        };
        drop(backlog);
        if let (true, Some(protocol)) = (lost, &protocol) {
            let kwargs = PyDict::new(py);
            kwargs.set_item("context", me.context.object().bind(py))?;
            me.loop_obj.bind(py).call_method(
                intern!(py, "call_soon"),
                (protocol.getattr(py, intern!(py, "connection_lost"))?, &exc),
                Some(&kwargs),
            )?;
        }
        let transport = me.state.borrow_mut(py)?.transport.take();
        drop(transport);
        drop(protocol);
        Self::wakeup_waiter(slf, Some(&exc))?;
        for t in timers {
            Self::cancel_timer(py, t)?;
        }
        Ok(())
    }

    /// The peer half-closed the TCP connection.
    pub(super) fn on_eof_received(slf: &Bound<'_, Self>) -> PyResult<Option<bool>> {
        let py = slf.py();
        let me = slf.get();
        let (phase, app_paused) = {
            let mut st = me.state.borrow_mut(py)?;
            st.eof_received = true;
            (st.phase, st.app_reading_paused)
        };
        let result = (|| -> PyResult<Option<bool>> {
            match phase {
                Phase::Handshake => {
                    let err = PyConnectionResetError::new_err(());
                    Self::on_handshake_complete(slf, Some(err))?;
                }
                Phase::Wrapped if app_paused => {
                    // A raw TCP EOF, no close_notify, while the application has reading
                    // paused: as asyncio, the connection stays open with the plaintext not
                    // yet delivered, and resume_reading delivers it, then eof_received and
                    // connection_lost(None), so the same bytes reach the protocol whether
                    // or not it had paused. Unlike 3.11, ssl_shutdown_timeout bounds the
                    // wait: a protocol that never resumes (one waiting for eof_received to
                    // do so) gets connection_lost(TimeoutError) instead of nothing, ever.
                    me.set_phase(py, Phase::Flushing)?;
                    Self::arm_shutdown_timer(slf)?;
                    return Ok(Some(true));
                }
                Phase::Wrapped => {
                    me.set_phase(py, Phase::Flushing)?;
                    Self::do_flush(slf)?;
                }
                Phase::Flushing => {
                    Self::do_write(slf)?;
                    me.set_phase(py, Phase::Shutdown)?;
                    Self::do_shutdown(slf)?;
                }
                Phase::Shutdown => Self::do_shutdown(slf)?,
                Phase::Unwrapped => {}
            }
            Ok(None)
        })();
        if result.is_err() {
            if let Some(lower) = me.lower(py) {
                lower.call_method0(py, intern!(py, "close"))?;
            }
        }
        result
    }

    pub(super) fn check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        let py = slf.py();
        if me.phase(py) == Phase::Handshake {
            let err = PyConnectionAbortedError::new_err(format!(
                "SSL handshake is taking longer than {} seconds: aborting the connection",
                format_seconds(me.handshake_timeout)
            ));
            Self::fatal_error(slf, err, "Fatal error on transport")?;
        }
        Ok(())
    }

    pub(super) fn check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        let py = slf.py();
        if matches!(me.phase(py), Phase::Flushing | Phase::Shutdown) {
            if let Some(lower) = me.lower(py) {
                let err = PyTimeoutError::new_err("SSL shutdown timed out");
                lower.call_method1(py, intern!(py, "_force_close"), (err.value(py),))?;
            }
        }
        Ok(())
    }
}
