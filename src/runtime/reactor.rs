//! The reactor: one `mio::Poll` (epoll on Linux, kqueue on the BSDs), the file descriptors
//! watched for `add_reader`/`add_writer`, and the waker behind `call_soon_threadsafe`.
//!
//! mio registers edge-triggered; asyncio's `add_reader` promises level-triggered callbacks
//! (called again while the descriptor stays readable). So a descriptor that fired is re-armed
//! (`EPOLL_CTL_MOD`, which reports it again if it is still ready) before the next poll, after
//! its callback had the chance to drain it.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use pyo3::prelude::*;

use super::cell::GilCell;
use super::handle::Handle;
use super::transports::Owner;

const WAKE_TOKEN: Token = Token(usize::MAX);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

#[derive(Default)]
struct Watch {
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// A transport of ours owns the descriptor: readiness goes to it directly, edge-triggered
    /// (it reads and writes until the kernel says EAGAIN), with no Python handle in between.
    transport: Option<Owner>,
    /// The transport has buffered data and waits for the socket to turn writable; without
    /// buffered data it does not listen for writability (each ACK would wake the loop).
    transport_writing: bool,
    registered: bool,
    /// The loop's own (signal wake-up socket): not a reason to poll between callbacks.
    internal: bool,
}

impl Watch {
    fn interest(&self) -> Option<Interest> {
        if self.transport.is_some() {
            return Some(if self.transport_writing {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            });
        }
        match (self.reader.is_some(), self.writer.is_some()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

/// One readiness report: which descriptor, and which of its callbacks are due.
pub struct Ready {
    pub fd: RawFd,
    pub readable: bool,
    /// The peer hung up: no further edge will come, so a reader must read to EOF now.
    pub read_closed: bool,
    pub writable: bool,
}

pub struct Reactor {
    poller: Mutex<(Poll, Events)>,
    registry: Registry,
    waker: Waker,
    watches: GilCell<HashMap<RawFd, Watch>>,
    /// Descriptors whose callbacks were queued since the last poll, to re-arm.
    fired: GilCell<Vec<RawFd>>,
    user_watches: AtomicUsize,
    /// The loop thread is (about to be) blocked in poll: a thread-safe call must wake it.
    sleeping: AtomicBool,
}

fn register_result(res: io::Result<()>) -> PyResult<()> {
    res.map_err(PyErr::from)
}

impl Reactor {
    pub fn new() -> PyResult<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKE_TOKEN)?;
        Ok(Reactor {
            poller: Mutex::new((poll, Events::with_capacity(1024))),
            registry,
            waker,
            watches: GilCell::new(HashMap::new()),
            fired: GilCell::new(Vec::new()),
            user_watches: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
        })
    }

    /// Register `fd` for `interest`, or change the interest of a registered one.
    fn watch_fd(&self, fd: RawFd, registered: bool, interest: Interest) -> io::Result<()> {
        let token = Token(fd as usize);
        if registered {
            // A descriptor closed and reopened under the same number is new to epoll.
            self.registry
                .reregister(&mut SourceFd(&fd), token, interest)
                .or_else(|_| self.registry.register(&mut SourceFd(&fd), token, interest))
        } else {
            self.registry.register(&mut SourceFd(&fd), token, interest)
        }
    }

    /// Whether any descriptor other than the loop's own is watched.
    pub fn has_user_watches(&self) -> bool {
        self.user_watches.load(Ordering::Relaxed) > 0
    }

    /// Wake a blocked poll (from any thread); a no-op when the loop is not polling.
    pub fn wake(&self) -> io::Result<()> {
        // The first caller clears the flag: one wake-up per blocked poll, however many
        // threads schedule callbacks before the loop gets the GIL back.
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.waker.wake()
        } else {
            Ok(())
        }
    }

    /// Install (or with `None` remove) the callback for one direction of `fd`; returns the
    /// handle it replaces, for the caller to cancel outside any borrow.
    pub fn set(
        &self,
        py: Python<'_>,
        fd: RawFd,
        direction: Direction,
        handle: Option<Py<Handle>>,
        internal: bool,
    ) -> PyResult<Option<Py<Handle>>> {
        let mut watches = self.watches.borrow_mut(py)?;
        let existed = watches.contains_key(&fd);
        if !existed && handle.is_none() {
            return Ok(None);
        }
        let watch = watches.entry(fd).or_default();
        let slot = match direction {
            Direction::Read => &mut watch.reader,
            Direction::Write => &mut watch.writer,
        };
        let old = std::mem::replace(slot, handle);
        if !existed {
            watch.internal = internal;
            if !internal {
                self.user_watches.fetch_add(1, Ordering::Relaxed);
            }
        }
        let outcome = match watch.interest() {
            None => {
                // The descriptor may be closed already (then the kernel forgot it).
                if watch.registered {
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                }
                let gone = watches.remove(&fd);
                if let Some(gone) = &gone {
                    if !gone.internal {
                        self.user_watches.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            Some(interest) => {
                let res = self.watch_fd(fd, watch.registered, interest);
                match res {
                    Ok(()) => {
                        watch.registered = true;
                        Ok(())
                    }
                    Err(e) => {
                        // Leave things as they were: restore the old callback.
                        let slot = match direction {
                            Direction::Read => &mut watch.reader,
                            Direction::Write => &mut watch.writer,
                        };
                        let rejected = std::mem::replace(slot, old);
                        let now_empty = watch.interest().is_none();
                        let internal = watch.internal;
                        if now_empty {
                            watches.remove(&fd);
                            if !internal {
                                self.user_watches.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                        drop(watches);
                        drop(rejected);
                        return register_result(Err(e)).map(|_| None);
                    }
                }
            }
        };
        drop(watches);
        outcome.map(|_| old)
    }

    /// Hand `fd` to a transport (or with `None`, take it back and stop watching it).
    pub fn set_transport(
        &self,
        py: Python<'_>,
        fd: RawFd,
        transport: Option<Owner>,
    ) -> PyResult<Option<Owner>> {
        let mut watches = self.watches.borrow_mut(py)?;
        match transport {
            Some(t) => {
                if watches
                    .get(&fd)
                    .is_some_and(|w| w.reader.is_some() || w.writer.is_some())
                {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "File descriptor {fd} is used by add_reader/add_writer"
                    )));
                }
                let interest = Interest::READABLE;
                let existed = watches.contains_key(&fd);
                let watch = watches.entry(fd).or_default();
                let res = self.watch_fd(fd, watch.registered, interest);
                if let Err(e) = res {
                    if !existed {
                        watches.remove(&fd);
                    }
                    return Err(e.into());
                }
                watch.registered = true;
                if !existed {
                    self.user_watches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(watch.transport.replace(t))
            }
            None => {
                let Some(watch) = watches.remove(&fd) else {
                    return Ok(None);
                };
                if watch.registered {
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                }
                if !watch.internal {
                    self.user_watches.fetch_sub(1, Ordering::Relaxed);
                }
                drop(watches);
                Ok(watch.transport)
            }
        }
    }

    /// Listen (or stop listening) for writability of a transport's descriptor.
    pub fn set_transport_writing(&self, py: Python<'_>, fd: RawFd, writing: bool) -> PyResult<()> {
        let mut watches = self.watches.borrow_mut(py)?;
        let Some(watch) = watches.get_mut(&fd) else {
            return Ok(());
        };
        if watch.transport.is_none() || watch.transport_writing == writing {
            return Ok(());
        }
        watch.transport_writing = writing;
        if let (true, Some(interest)) = (watch.registered, watch.interest()) {
            self.registry
                .reregister(&mut SourceFd(&fd), Token(fd as usize), interest)?;
        }
        Ok(())
    }

    /// The transport that owns `fd`, if any.
    pub fn transport_of(&self, py: Python<'_>, fd: RawFd) -> Option<Owner> {
        self.watches.try_borrow_mut(py).and_then(|w| {
            w.get(&fd)
                .and_then(|w| w.transport.as_ref().map(|t| t.clone_ref(py)))
        })
    }

    /// Whether `fd` has a callback for `direction`.
    pub fn is_watched(&self, py: Python<'_>, fd: RawFd, direction: Direction) -> bool {
        self.watches
            .try_borrow_mut(py)
            .and_then(|w| {
                w.get(&fd).map(|w| match direction {
                    Direction::Read => w.reader.is_some(),
                    Direction::Write => w.writer.is_some(),
                })
            })
            .unwrap_or(false)
    }

    /// Re-arm the descriptors that fired, so one still ready is reported again.
    pub fn rearm(&self, py: Python<'_>) -> PyResult<()> {
        let fired = {
            let mut slot = self.fired.borrow_mut(py)?;
            if slot.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *slot)
        };
        let watches = self.watches.borrow_mut(py)?;
        for fd in &fired {
            if let Some(watch) = watches.get(fd) {
                if let (true, Some(interest)) = (watch.registered, watch.interest()) {
                    let _ =
                        self.registry
                            .reregister(&mut SourceFd(fd), Token(*fd as usize), interest);
                }
            }
        }
        drop(watches);
        // keep the allocation for the next round
        let mut slot = self.fired.borrow_mut(py)?;
        if slot.is_empty() {
            let mut fired = fired;
            fired.clear();
            *slot = fired;
        }
        Ok(())
    }

    /// Wait for readiness up to `timeout` (`None`: forever), releasing the GIL while blocked.
    /// Returns the reports and whether the wait was interrupted by a signal.
    pub fn poll(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<(Vec<Ready>, bool)> {
        let blocking = timeout != Some(Duration::ZERO);
        let wait = |timeout: Option<Duration>| -> io::Result<Vec<Ready>> {
            let mut guard = self.poller.lock().unwrap_or_else(|e| e.into_inner());
            let (poll, events) = &mut *guard;
            poll.poll(events, timeout)?;
            Ok(events
                .iter()
                .filter(|ev| ev.token() != WAKE_TOKEN)
                .map(|ev| Ready {
                    fd: ev.token().0 as RawFd,
                    readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    read_closed: ev.is_read_closed() || ev.is_error(),
                    writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                })
                .collect())
        };
        let result = if blocking {
            self.sleeping.store(true, Ordering::SeqCst);
            py.allow_threads(|| {
                let r = wait(timeout);
                self.sleeping.store(false, Ordering::SeqCst);
                r
            })
        } else {
            wait(timeout)
        };
        match result {
            Ok(ready) => Ok((ready, false)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((Vec::new(), true)),
            Err(e) => Err(e.into()),
        }
    }

    /// The callbacks due for one report, noting the descriptor for re-arming.
    pub fn handles_for(
        &self,
        py: Python<'_>,
        ready: &Ready,
        out: &mut Vec<Py<Handle>>,
        transports: &mut Vec<(Owner, bool, bool, bool)>,
    ) -> PyResult<()> {
        let watches = self.watches.borrow_mut(py)?;
        let Some(watch) = watches.get(&ready.fd) else {
            return Ok(());
        };
        if let Some(t) = &watch.transport {
            transports.push((
                t.clone_ref(py),
                ready.readable,
                ready.writable,
                ready.read_closed,
            ));
            return Ok(());
        }
        if ready.readable {
            if let Some(h) = &watch.reader {
                out.push(h.clone_ref(py));
            }
        }
        if ready.writable {
            if let Some(h) = &watch.writer {
                out.push(h.clone_ref(py));
            }
        }
        drop(watches);
        self.fired.borrow_mut(py)?.push(ready.fd);
        Ok(())
    }

    /// Stop watching everything; the handles are returned to be dropped outside any borrow.
    pub fn clear(&self, py: Python<'_>) -> (Vec<Py<Handle>>, Vec<Owner>) {
        let watches = self.watches.take(py);
        let mut handles = Vec::new();
        let mut transports = Vec::new();
        for (fd, watch) in watches {
            transports.extend(watch.transport);
            if watch.registered {
                let _ = self.registry.deregister(&mut SourceFd(&fd));
            }
            handles.extend(watch.reader);
            handles.extend(watch.writer);
        }
        self.user_watches.store(0, Ordering::Relaxed);
        (handles, transports)
    }
}
