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
use super::sockets::{SockOp, SockWatch};
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
    /// A socket used through `sock_recv`/`sock_sendall` (`sockets.rs`): it stays registered
    /// between operations, reading interest always, writing while a send waits.
    sock: Option<SockWatch>,
    registered: bool,
    /// The interest epoll has for the descriptor, as far as we know.
    armed: Option<Interest>,
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
        let sock_read = self.sock.is_some();
        let sock_write = self.sock.as_ref().is_some_and(|s| s.writer.is_some());
        match (
            self.reader.is_some() || sock_read,
            self.writer.is_some() || sock_write,
        ) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// Whether the loop has a reason to look at this descriptor between callbacks: something
    /// waits on it. (A socket parked between `sock_*` operations does not count.)
    fn counted(&self) -> bool {
        !self.internal
            && (self.reader.is_some()
                || self.writer.is_some()
                || self.transport.is_some()
                || self.sock.as_ref().is_some_and(SockWatch::busy))
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
    /// Socket records made since the last sweep of stale ones, and how many the sweep kept.
    socks_made: AtomicUsize,
    socks_kept: AtomicUsize,
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
            socks_made: AtomicUsize::new(0),
            socks_kept: AtomicUsize::new(0),
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

    /// Bring epoll's interest for `fd` in line with the watch (`force`: even when we believe it
    /// is already, as for a socket new to us under a number epoll may know from before).
    fn arm(&self, fd: RawFd, watch: &mut Watch, force: bool) -> io::Result<()> {
        let wanted = watch.interest();
        if !force && watch.registered && watch.armed == wanted {
            return Ok(());
        }
        match wanted {
            Some(interest) => {
                self.watch_fd(fd, watch.registered, interest)?;
                watch.registered = true;
                watch.armed = Some(interest);
            }
            None => {
                if watch.registered {
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                }
                watch.registered = false;
                watch.armed = None;
            }
        }
        Ok(())
    }

    fn count_change(&self, before: bool, after: bool) {
        match (before, after) {
            (false, true) => {
                self.user_watches.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.user_watches.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub fn watch_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.watches.borrow_mut(py)?.len())
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
        if !existed {
            watch.internal = internal;
        }
        let before = existed && watch.counted();
        let slot = match direction {
            Direction::Read => &mut watch.reader,
            Direction::Write => &mut watch.writer,
        };
        let old = std::mem::replace(slot, handle);
        // Python callbacks are re-armed after they fire, so always tell epoll (a descriptor
        // closed and reopened under the same number is new to it).
        if let Err(e) = self.arm(fd, watch, true) {
            // Leave things as they were: restore the old callback.
            let slot = match direction {
                Direction::Read => &mut watch.reader,
                Direction::Write => &mut watch.writer,
            };
            let rejected = std::mem::replace(slot, old);
            if watch.interest().is_none() {
                watches.remove(&fd);
            }
            drop(watches);
            drop(rejected);
            return register_result(Err(e)).map(|_| None);
        }
        let after = watch.counted();
        if watch.interest().is_none() {
            watches.remove(&fd);
        }
        self.count_change(before, after);
        drop(watches);
        Ok(old)
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
                let existed = watches.contains_key(&fd);
                let watch = watches.entry(fd).or_default();
                let before = existed && watch.counted();
                // a socket once used with sock_* operations is the transport's now
                let parked = watch.sock.take();
                let previous = watch.transport.replace(t);
                let was_writing = std::mem::replace(&mut watch.transport_writing, false);
                if let Err(e) = self.arm(fd, watch, true) {
                    let ours = std::mem::replace(&mut watch.transport, previous);
                    watch.transport_writing = was_writing;
                    watch.sock = parked;
                    if !existed {
                        watches.remove(&fd);
                    }
                    drop(watches);
                    drop(ours);
                    return Err(e.into());
                }
                self.count_change(before, watch.counted());
                drop(watches);
                drop(parked);
                Ok(previous)
            }
            None => {
                let Some(mut watch) = watches.remove(&fd) else {
                    return Ok(None);
                };
                self.count_change(watch.counted(), false);
                if watch.registered {
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                }
                drop(watches);
                Ok(watch.transport.take())
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
            watch.armed = Some(interest);
        }
        Ok(())
    }

    // ------------------------------------------------------------ sock_* operations

    /// What the record of `sock` knows: whether a read may find data (false only when the
    /// kernel said there was none and no readiness edge came since), and whether reads have
    /// been large.
    pub fn sock_read_hints(
        &self,
        py: Python<'_>,
        fd: RawFd,
        sock: &Bound<'_, PyAny>,
    ) -> PyResult<(bool, bool)> {
        let watches = self.watches.borrow_mut(py)?;
        Ok(match watches.get(&fd).and_then(|w| w.sock.as_ref()) {
            Some(record) if record.is_for(sock) => (record.readable, record.large_reads),
            _ => (true, false),
        })
    }

    /// An immediate read on `sock` got `got` bytes of `asked`.
    pub fn sock_note_read(
        &self,
        py: Python<'_>,
        fd: RawFd,
        sock: &Bound<'_, PyAny>,
        got: usize,
        asked: usize,
    ) -> PyResult<()> {
        let mut watches = self.watches.borrow_mut(py)?;
        if let Some(record) = watches.get_mut(&fd).and_then(|w| w.sock.as_mut()) {
            if record.is_for(sock) {
                record.note_read(got, asked);
            }
        }
        Ok(())
    }

    /// Park `op` until `fd` is ready for `direction`. `tried`: the kernel just said EAGAIN.
    pub fn sock_wait(
        &self,
        py: Python<'_>,
        fd: RawFd,
        sock: &Bound<'_, PyAny>,
        direction: Direction,
        op: SockOp,
        tried: bool,
    ) -> PyResult<()> {
        let mut fresh_record = false;
        let mut watches = self.watches.borrow_mut(py)?;
        let existed = watches.contains_key(&fd);
        let watch = watches.entry(fd).or_default();
        let before = existed && watch.counted();
        if !watch.sock.as_ref().is_some_and(|r| r.is_for(sock)) {
            // new to us, or a record of a socket closed since: epoll may not know this one
            match SockWatch::new(sock, fd) {
                Ok(record) => watch.sock = Some(record),
                Err(e) => {
                    if !existed {
                        watches.remove(&fd);
                    }
                    return Err(e);
                }
            }
            fresh_record = true;
        }
        let Some(record) = watch.sock.as_mut() else {
            return Ok(());
        };
        if tried && direction == Direction::Read {
            record.readable = false;
        }
        // a second operation in the same direction replaces the first, as in asyncio
        let replaced = match direction {
            Direction::Read => record.reader.replace(op),
            Direction::Write => record.writer.replace(op),
        };
        if let Err(e) = self.arm(fd, watch, fresh_record) {
            let record = watch.sock.as_mut();
            let ours = record.and_then(|r| match direction {
                Direction::Read => r.reader.take(),
                Direction::Write => r.writer.take(),
            });
            if watch.interest().is_none() || !existed {
                watches.remove(&fd);
            }
            drop(watches);
            drop((ours, replaced));
            return Err(e.into());
        }
        self.count_change(before, watch.counted());
        drop(watches);
        drop(replaced);
        if fresh_record {
            self.sweep_sockets(py);
        }
        Ok(())
    }

    /// A due operation found nothing after all: wait again (unless replaced meanwhile).
    pub fn sock_retry(
        &self,
        py: Python<'_>,
        fd: RawFd,
        direction: Direction,
        op: SockOp,
    ) -> PyResult<()> {
        let mut watches = self.watches.borrow_mut(py)?;
        let mut leftover = Some(op);
        if let Some(watch) = watches.get_mut(&fd) {
            let before = watch.counted();
            if let Some(record) = watch.sock.as_mut() {
                let slot = match direction {
                    Direction::Read => {
                        record.readable = false;
                        &mut record.reader
                    }
                    Direction::Write => &mut record.writer,
                };
                if slot.is_none() {
                    *slot = leftover.take();
                }
            }
            self.count_change(before, watch.counted());
            if leftover.is_none() {
                // Re-arm (EPOLL_CTL_MOD), which reports the descriptor at once if it is ready
                // after all: the edge that woke this operation is spent, and an EAGAIN that
                // was not the kernel's (a wrapped socket, a spurious one) would otherwise
                // wait for an edge that never comes.
                let _ = self.arm(fd, watch, true);
            }
        }
        drop(watches);
        if leftover.is_some() {
            drop(leftover);
            return self.sock_finished(py, fd);
        }
        Ok(())
    }

    /// A due operation completed, having read `got` bytes of `asked`.
    pub fn sock_done(
        &self,
        py: Python<'_>,
        fd: RawFd,
        direction: Direction,
        got: usize,
        asked: usize,
    ) -> PyResult<()> {
        if direction == Direction::Read {
            let mut watches = self.watches.borrow_mut(py)?;
            if let Some(record) = watches.get_mut(&fd).and_then(|w| w.sock.as_mut()) {
                record.note_read(got, asked);
            }
        }
        self.sock_finished(py, fd)
    }

    /// An operation left the watch (done or abandoned): stop listening for writability if no
    /// send waits any more, and stop counting the socket as busy.
    pub fn sock_finished(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        let mut watches = self.watches.borrow_mut(py)?;
        let Some(watch) = watches.get_mut(&fd) else {
            return Ok(());
        };
        let was = watch.counted();
        let _ = self.arm(fd, watch, false);
        self.count_change(was, watch.counted());
        Ok(())
    }

    /// The operation settling `future` was cancelled (or its coroutine closed): let go of it
    /// now, and of the socket's io reference with it, rather than at the socket's next
    /// readiness, which may never come (a socket closed meanwhile would stay open until then).
    /// `fd` is where to look first; a socket detached since is looked for everywhere.
    pub fn sock_abandon(
        &self,
        py: Python<'_>,
        fd: RawFd,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut watches = self.watches.borrow_mut(py)?;
        let holds = |watch: &Watch| {
            watch.sock.as_ref().is_some_and(|r| {
                [&r.reader, &r.writer]
                    .into_iter()
                    .flatten()
                    .any(|op| op.future().is(future))
            })
        };
        let at = if watches.get(&fd).is_some_and(holds) {
            Some(fd)
        } else {
            watches.iter().find(|(_, w)| holds(w)).map(|(fd, _)| *fd)
        };
        let Some((fd, watch)) = at.and_then(|fd| watches.get_mut(&fd).map(|w| (fd, w))) else {
            return Ok(());
        };
        let before = watch.counted();
        let mut taken = Vec::new();
        if let Some(record) = watch.sock.as_mut() {
            for slot in [&mut record.reader, &mut record.writer] {
                if slot.as_ref().is_some_and(|op| op.future().is(future)) {
                    taken.extend(slot.take());
                }
            }
        }
        let _ = self.arm(fd, watch, false);
        self.count_change(before, watch.counted());
        drop(watches);
        // after the borrow: giving back the io reference may close the socket (Python code)
        drop(taken);
        Ok(())
    }

    /// Forget the records of sockets closed or gone since, once their number has doubled
    /// since the last look (so the cost per operation stays constant).
    fn sweep_sockets(&self, py: Python<'_>) {
        let made = self.socks_made.fetch_add(1, Ordering::Relaxed) + 1;
        if made < self.socks_kept.load(Ordering::Relaxed).max(64) {
            return;
        }
        let Ok(mut watches) = self.watches.borrow_mut(py) else {
            return;
        };
        let mut kept = 0;
        let mut dropped = Vec::new();
        watches.retain(|fd, watch| {
            let Some(record) = &watch.sock else {
                return true;
            };
            if record.busy() || !record.is_stale(py, *fd) {
                kept += 1;
                return true;
            }
            dropped.extend(watch.sock.take());
            let _ = self.arm(*fd, watch, false);
            watch.interest().is_some()
        });
        drop(watches);
        drop(dropped);
        self.socks_made.store(0, Ordering::Relaxed);
        self.socks_kept.store(kept, Ordering::Relaxed);
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
        let mut watches = self.watches.borrow_mut(py)?;
        for fd in &fired {
            if let Some(watch) = watches.get_mut(fd) {
                if let (true, Some(interest)) = (watch.registered, watch.interest()) {
                    let _ =
                        self.registry
                            .reregister(&mut SourceFd(fd), Token(*fd as usize), interest);
                    watch.armed = Some(interest);
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
        sock_due: &mut Vec<(RawFd, Direction, SockOp)>,
    ) -> PyResult<()> {
        let mut watches = self.watches.borrow_mut(py)?;
        let Some(watch) = watches.get_mut(&ready.fd) else {
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
        let before = watch.counted();
        if let Some(record) = watch.sock.as_mut() {
            if ready.read_closed {
                record.peer_closed = true;
            }
            if ready.readable {
                record.readable = true;
                if let Some(op) = record.reader.take() {
                    sock_due.push((ready.fd, Direction::Read, op));
                }
            }
            if ready.writable {
                if let Some(op) = record.writer.take() {
                    sock_due.push((ready.fd, Direction::Write, op));
                }
            }
            self.count_change(before, watch.counted());
            if watch.reader.is_none() && watch.writer.is_none() {
                // edge-triggered: nothing to re-arm
                return Ok(());
            }
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
            drop(watch.sock);
            handles.extend(watch.reader);
            handles.extend(watch.writer);
        }
        self.user_watches.store(0, Ordering::Relaxed);
        (handles, transports)
    }
}
