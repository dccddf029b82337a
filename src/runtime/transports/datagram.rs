//! `DatagramTransport`: a UDP or Unix datagram socket as an asyncio datagram transport.
//!
//! Readiness comes from the reactor, edge-triggered, as for stream transports. Datagrams are
//! received and sent through the socket object's own `recvfrom`/`sendto` (C code of Python's
//! socket module, which also turns addresses into Python values and back); what the socket
//! refuses is queued and flushed once it turns writable, with `pause_writing`/
//! `resume_writing` around the water marks.

use std::collections::VecDeque;

use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};

use super::common::{
    call_soon_method, extra_info, is_interrupt, presented_class, release_descriptor, report,
    schedule_connection_lost, Crossing, Mark, PauseAt, ProtocolContext, WaterMarks,
};
use crate::runtime::cell::GilCell;
use crate::runtime::event_loop::LoopCore;

const MAX_DATAGRAM: usize = 256 * 1024;
/// Datagrams received per readiness event before other work gets a turn.
const RECEIVES_PER_EVENT: usize = 16;
const DEFAULT_HIGH_WATER: usize = 64 * 1024;

struct State {
    protocol: Option<Py<PyAny>>,
    queue: VecDeque<(Py<PyAny>, Option<Py<PyAny>>)>,
    queued_bytes: usize,
    closing: bool,
    lost: bool,
    /// The queue's marks, and whether the protocol was told to pause writing.
    write_marks: WaterMarks,
    attached: bool,
    write_armed: bool,
}

/// A datagram endpoint (``asyncio.DatagramTransport``'s interface).
#[pyclass(module = "asyncpg_rs._native", frozen, weakref)]
pub struct DatagramTransport {
    loop_obj: Py<PyAny>,
    sock: Py<PyAny>,
    fd: i32,
    extra: Py<PyDict>,
    /// The peer of a connected endpoint: `sendto` takes no other address.
    address: Option<Py<PyAny>>,
    /// Where protocol callbacks run (see `ProtocolContext`).
    context: ProtocolContext,
    /// The socket's address family (`AF_INET`/`AF_INET6` addresses are checked in `sendto`).
    family: i32,
    state: GilCell<State>,
}

/// A `sendto` address must be numeric: the socket module would resolve a host name with a
/// blocking DNS lookup inside the loop (uvloop refuses one the same way).
fn check_inet_address(family: i32, addr: &Bound<'_, PyAny>) -> PyResult<()> {
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Ok(());
    }
    let Ok(tuple) = addr.downcast::<pyo3::types::PyTuple>() else {
        return Ok(()); // the socket module reports a malformed address itself
    };
    let Ok(host) = tuple.get_item(0) else {
        return Ok(());
    };
    let host: String = if let Ok(s) = host.downcast::<pyo3::types::PyString>() {
        s.to_str()?.to_owned()
    } else if let Ok(b) = host.downcast::<PyBytes>() {
        String::from_utf8_lossy(b.as_bytes()).into_owned()
    } else {
        return Ok(());
    };
    // '' is INADDR_ANY and '<broadcast>' INADDR_BROADCAST to the socket module: no lookup
    if host.is_empty() || (family == libc::AF_INET && host == "<broadcast>") {
        return Ok(());
    }
    let v4 = host.parse::<std::net::Ipv4Addr>().is_ok();
    // an IPv6 literal may carry a scope (`fe80::1%eth0`)
    let v6 = host
        .split('%')
        .next()
        .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if family == libc::AF_INET && v6 {
        return Err(PyValueError::new_err(format!(
            "UDP.sendto(): {host:?} is an IPv6 address: socket family mismatch"
        )));
    }
    if v4 || v6 {
        return Ok(());
    }
    Err(PyValueError::new_err(format!(
        "UDP.sendto(): address {:?} requires a DNS lookup: resolve it first (loop.getaddrinfo)",
        addr.repr()?.to_string()
    )))
}

fn would_block(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}

impl DatagramTransport {
    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .try_borrow_mut(py)
            .and_then(|st| st.protocol.as_ref().map(|p| p.clone_ref(py)))
    }

    fn send_one(&self, py: Python<'_>, data: &Py<PyAny>, addr: &Option<Py<PyAny>>) -> PyResult<()> {
        let sock = self.sock.bind(py);
        match addr {
            Some(addr) if self.address.is_none() => sock
                .call_method1(intern!(py, "sendto"), (data, addr))
                .map(drop),
            _ => sock.call_method1(intern!(py, "send"), (data,)).map(drop),
        }
    }

    /// Report what a protocol callback raised through the loop's exception handler.
    fn report(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        if is_interrupt(slf.py(), &err) {
            return Err(err);
        }
        let me = slf.get();
        report(
            &me.loop_obj,
            slf.as_any(),
            me.protocol(slf.py()),
            &err,
            message,
        )
    }

    fn error_received(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        if let Some(p) = me.protocol(py) {
            let called = me.context.run(py, || {
                p.call_method1(py, intern!(py, "error_received"), (err.value(py),))
            });
            if let Err(e) = called {
                return Self::report(slf, e, "protocol.error_received() failed");
            }
        }
        Ok(())
    }

    fn fatal(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_interrupt(py, &err) {
            return Err(err);
        }
        if !err.is_instance_of::<PyOSError>(py) {
            Self::report(slf, err.clone_ref(py), message)?;
        }
        Self::force_close(slf, Some(err.value(py).clone().into_any().unbind()))
    }

    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        schedule_connection_lost(&slf.get().loop_obj, slf.as_any(), exc)
    }

    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let dropped = {
            let mut st = slf.get().state.borrow_mut(py)?;
            if st.lost {
                return Ok(());
            }
            st.closing = true;
            st.lost = true;
            st.queued_bytes = 0;
            std::mem::take(&mut st.queue)
        };
        drop(dropped);
        Self::schedule_connection_lost(slf, exc.unwrap_or_else(|| py.None()))
    }

    /// Readiness from the reactor.
    pub fn on_ready(slf: &Bound<'_, Self>, readable: bool, writable: bool) -> PyResult<()> {
        if writable {
            Self::flush(slf)?;
        }
        if readable {
            Self::receive(slf)?;
        }
        Ok(())
    }

    fn receive(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        for _ in 0..RECEIVES_PER_EVENT {
            let Some(protocol) = me.state.try_borrow_mut(py).and_then(|st| {
                if st.closing {
                    None
                } else {
                    st.protocol.as_ref().map(|p| p.clone_ref(py))
                }
            }) else {
                return Ok(());
            };
            let received = me
                .sock
                .call_method1(py, intern!(py, "recvfrom"), (MAX_DATAGRAM,));
            match received {
                Ok(pair) => {
                    let pair = pair.bind(py);
                    let (data, addr) = (pair.get_item(0)?, pair.get_item(1)?);
                    let called = me.context.run(py, || {
                        protocol.call_method1(py, intern!(py, "datagram_received"), (data, addr))
                    });
                    if let Err(e) = called {
                        return Self::fatal(
                            slf,
                            e,
                            "Fatal error: protocol.datagram_received() call failed.",
                        );
                    }
                }
                Err(e) if would_block(py, &e) => return Ok(()),
                Err(e) if e.is_instance_of::<PyOSError>(py) => Self::error_received(slf, e)?,
                Err(e) => return Self::fatal(slf, e, "Fatal read error on datagram transport"),
            }
        }
        // more may be waiting: the next readiness edge will not come for it, so look again
        call_soon_method(&me.loop_obj, slf.as_any(), intern!(py, "_receive"))
    }

    fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        loop {
            let next = {
                let st = me.state.borrow_mut(py)?;
                st.queue
                    .front()
                    .map(|(d, a)| (d.clone_ref(py), a.as_ref().map(|a| a.clone_ref(py))))
            };
            let Some((data, addr)) = next else { break };
            match me.send_one(py, &data, &addr) {
                Ok(()) => {}
                Err(e) if would_block(py, &e) => break,
                Err(e) if e.is_instance_of::<PyOSError>(py) => {
                    Self::pop_front(slf)?;
                    Self::error_received(slf, e)?;
                    continue;
                }
                Err(e) => return Self::fatal(slf, e, "Fatal write error on datagram transport"),
            }
            Self::pop_front(slf)?;
        }
        Self::after_queue_change(slf)
    }

    fn pop_front(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let sent = {
            let mut st = slf.get().state.borrow_mut(py)?;
            let sent = st.queue.pop_front();
            if let Some((data, _)) = &sent {
                let n = data.bind(py).len().unwrap_or(0);
                st.queued_bytes = st.queued_bytes.saturating_sub(n);
            }
            sent
        };
        drop(sent);
        Ok(())
    }

    /// Arm writability, flow control and a deferred close after the queue changed.
    fn after_queue_change(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (arm, crossing, lost) = {
            let mut st = me.state.borrow_mut(py)?;
            let want = !st.queue.is_empty() && !st.lost;
            let arm = (st.attached && st.write_armed != want).then(|| {
                st.write_armed = want;
                want
            });
            let queued = st.queued_bytes;
            let crossing = st.write_marks.crossing(queued);
            let lost = st.queue.is_empty() && st.closing && !st.lost;
            if lost {
                st.lost = true;
            }
            (arm, crossing, lost)
        };
        if let Some(writing) = arm {
            if let Ok(core) = me.loop_obj.bind(py).downcast::<LoopCore>() {
                core.get().set_transport_writing(py, me.fd, writing)?;
            }
        }
        if let Some(crossing) = crossing {
            let method = match crossing {
                Crossing::Pause => "pause_writing",
                Crossing::Resume => "resume_writing",
            };
            if let Some(p) = me.protocol(py) {
                if let Err(e) = me.context.run(py, || p.call_method0(py, method)) {
                    Self::report(slf, e, &format!("protocol.{method}() failed"))?;
                }
            }
        }
        if lost {
            Self::schedule_connection_lost(slf, py.None())?;
        }
        Ok(())
    }

    /// The loop closed under us: forget the protocol without calling it.
    pub fn abandon(&self, py: Python<'_>) {
        let old = self.state.try_borrow_mut(py).map(|mut st| {
            st.closing = true;
            st.lost = true;
            (st.protocol.take(), std::mem::take(&mut st.queue))
        });
        drop(old);
    }
}

#[pymethods]
impl DatagramTransport {
    #[new]
    #[pyo3(signature = (event_loop, sock, protocol, extra, address=None, context=None))]
    fn new(
        event_loop: Bound<'_, PyAny>,
        sock: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        extra: Bound<'_, PyDict>,
        address: Option<Bound<'_, PyAny>>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = event_loop.py();
        let fd: i32 = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(PyValueError::new_err("the socket is closed"));
        }
        let family: i32 = sock
            .getattr(intern!(py, "family"))
            .and_then(|f| f.extract())
            .unwrap_or(libc::AF_UNSPEC);
        Ok(DatagramTransport {
            loop_obj: event_loop.unbind(),
            sock: sock.unbind(),
            fd,
            extra: extra.unbind(),
            address: address.filter(|a| !a.is_none()).map(Bound::unbind),
            context: ProtocolContext::capture(py, context.as_ref())?,
            family,
            state: GilCell::new(State {
                protocol: Some(protocol.unbind()),
                queue: VecDeque::new(),
                queued_bytes: 0,
                closing: false,
                lost: false,
                write_marks: WaterMarks::new(DEFAULT_HIGH_WATER, PauseAt::Above),
                attached: false,
                write_armed: false,
            }),
        })
    }

    /// Start watching the socket (after ``connection_made``).
    fn _start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        {
            let mut st = me.state.borrow_mut(py)?;
            if st.attached || st.lost {
                return Ok(());
            }
            st.attached = true;
        }
        me.loop_obj
            .call_method1(py, intern!(py, "_attach_transport"), (me.fd, slf))?;
        Self::after_queue_change(slf)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (protocol, attached) = {
            let mut st = me.state.borrow_mut(py)?;
            (
                st.protocol.take(),
                std::mem::replace(&mut st.attached, false),
            )
        };
        let result = match &protocol {
            Some(p) => me
                .context
                .run(py, || {
                    p.call_method1(py, intern!(py, "connection_lost"), (exc,))
                })
                .map(drop),
            None => Ok(()),
        };
        release_descriptor(&me.loop_obj, &me.sock, &me.extra, me.fd, attached, py);
        drop(protocol);
        result
    }

    /// Send one datagram to ``addr`` (or the connected peer).
    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {:?}",
                data.get_type().name()?.to_string()
            )));
        }
        let addr = addr.filter(|a| !a.is_none());
        if let (Some(a), None) = (&addr, &me.address) {
            check_inet_address(me.family, a)?;
        }
        if let Some(peer) = &me.address {
            if let Some(a) = &addr {
                if !a.eq(peer.bind(py))? {
                    return Err(PyValueError::new_err(format!(
                        "Invalid address: must be None or {}",
                        peer.bind(py).str()?
                    )));
                }
            }
        }
        let addr = addr.map(Bound::unbind);
        let (queue_empty, lost) = {
            let st = me.state.borrow_mut(py)?;
            (st.queue.is_empty(), st.lost)
        };
        if lost {
            return Ok(());
        }
        let data: Py<PyAny> = if data.is_instance_of::<PyBytes>() {
            data.clone().unbind()
        } else {
            // a mutable buffer may change before it is sent from the queue: take a copy
            PyBytes::new(
                py,
                &data.extract::<Vec<u8>>().or_else(|_| {
                    data.call_method0(intern!(py, "tobytes"))?
                        .extract::<Vec<u8>>()
                })?,
            )
            .into_any()
            .unbind()
        };
        if queue_empty {
            match me.send_one(py, &data, &addr) {
                Ok(()) => return Ok(()),
                Err(e) if would_block(py, &e) => {}
                Err(e) if e.is_instance_of::<PyOSError>(py) => return Self::error_received(slf, e),
                Err(e) => return Self::fatal(slf, e, "Fatal write error on datagram transport"),
            }
        }
        {
            let mut st = me.state.borrow_mut(py)?;
            st.queued_bytes += data.bind(py).len().unwrap_or(0);
            st.queue.push_back((data, addr));
        }
        Self::after_queue_change(slf)
    }

    /// Set the high and low water marks for ``pause_writing``/``resume_writing``.
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Mark, low: Mark) -> PyResult<()> {
        let me = slf.get();
        me.state.borrow_mut(slf.py())?.write_marks.set(high, low)?;
        Self::after_queue_change(slf)
    }

    fn _receive(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::receive(slf)
    }

    /// ``(low, high)`` water marks.
    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.state.borrow_mut(py)?.write_marks.limits())
    }

    /// Bytes of datagrams waiting to be sent.
    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.state.borrow_mut(py)?.queued_bytes)
    }

    /// Close once queued datagrams are sent.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut st = slf.get().state.borrow_mut(py)?;
            if st.closing {
                return Ok(());
            }
            st.closing = true;
        }
        Self::after_queue_change(slf)
    }

    /// Close now, dropping queued datagrams.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    /// Whether the transport is closing or closed.
    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.try_borrow_mut(py).is_none_or(|st| st.closing)
    }

    /// ``'peername'``, ``'sockname'``, ``'socket'``.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        extra_info(py, &self.extra, name, default)
    }

    /// Replace the protocol receiving datagrams.
    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let old = self
            .state
            .borrow_mut(py)?
            .protocol
            .replace(protocol.unbind());
        drop(old);
        Ok(())
    }

    /// The protocol receiving datagrams.
    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol(py).unwrap_or_else(|| py.None())
    }

    /// What `isinstance` sees: asyncio's `DatagramTransport`.
    #[getter(__class__)]
    fn presented_class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static DATAGRAM: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        presented_class(py, &DATAGRAM, "DatagramTransport")
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = match self.state.try_borrow_mut(py) {
            Some(st) if st.lost => "closed",
            Some(st) if st.closing => "closing",
            _ => "open",
        };
        format!("<DatagramTransport fd={} {state}>", self.fd)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.loop_obj)?;
        visit.call(&self.sock)?;
        visit.call(&self.extra)?;
        visit.call(self.context.object())?;
        if let Some(a) = &self.address {
            visit.call(a)?;
        }
        if let Some(st) = self.state.try_borrow_for_gc() {
            if let Some(p) = &st.protocol {
                visit.call(p)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self, py: Python<'_>) {
        let old = self
            .state
            .try_borrow_mut(py)
            .map(|mut st| st.protocol.take());
        drop(old);
    }
}
