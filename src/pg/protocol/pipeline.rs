//! Pipelines: many statements sent before the first reply is read, each with its own future.
//!
//! A pipeline is one operation (`Op::Pipeline`) that stays open while the caller adds
//! statements: `pipeline_prepare` (Parse/Describe of a statement not yet known, so its
//! arguments can be encoded) and `pipeline_execute` (Bind/Execute of a known one) each
//! append one *item* with its own future, settled as soon as that item's reply is complete,
//! so replies are handed over as they arrive, never gathered for the whole pipeline.
//!
//! Two ways to delimit statements (the caller picks at `pipeline_begin`):
//! - `sync_each`: a Sync after every item. Each statement is its own implicit transaction
//!   (or runs in the caller's open transaction); a failure affects only its own item, as when
//!   the statements run one by one.
//! - one Sync at `pipeline_end`: one implicit transaction. After a failure PostgreSQL skips
//!   everything up to the Sync; the items it skipped fail with an error that names the
//!   statement that failed (and has its error as the cause). Replies the caller waits for
//!   before the end (a statement's description) are asked for with Flush, which does not end
//!   the transaction.
//!
//! Encoded messages gather in `buf` and go out once `EXECUTEMANY_FLUSH` bytes are there, on
//! `pipeline_flush` or at the end; the transport's back-pressure is reported to the caller
//! as executemany's status codes, so a pipeline of any length holds a bounded amount of
//! encoded data and only the replies nobody has taken yet.

use std::collections::VecDeque;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyType};

use super::bind::{reparse_if_unnamed, too_many_arguments, write_bind, Site, MAX_ARGS};
use super::dispatch::{decode_row, read_columns};
use super::effects::{operation, Effect};
use super::ops::executemany_status;
use super::server_error::{error_fields, server_error};
use super::statement::{Column, StatementState};
use super::{Op, PGProtocol, EXECUTEMANY_FLUSH};
use crate::pg::errors::{interface_error, protocol_error, Exc};
use crate::runtime::transports::stream::transport_write;

/// The state of an open pipeline.
pub(super) struct Pipeline {
    sync_each: bool,
    /// Items and Syncs in the order they were written; the front is what the next reply is
    /// about.
    entries: VecDeque<Entry>,
    /// How many entries at the back of `entries` are still only in `buf`.
    unsent: usize,
    buf: BytesMut,
    /// Something went to the server (so it must see a Sync before the pipeline ends).
    sent_any: bool,
    /// `pipeline_end` was called: the op ends when `entries` is empty.
    ended: bool,
    /// The first failure since the last Sync: the statement number and its error, which
    /// the items the server skips name.
    failed: Option<(Option<usize>, PyErr)>,
    /// The caller gave up on the whole pipeline (timeout, cancellation): rows still
    /// arriving are not decoded.
    abandoned: bool,
}

enum Entry {
    Item(Item),
    Sync,
}

struct Item {
    /// The caller's statement number (0-based), `None` for the pipeline's own queries.
    index: Option<usize>,
    fut: PyObject,
    query: String,
    kind: Kind,
    /// A fault of ours while handling its reply (a row that cannot be decoded).
    error: Option<PyErr>,
}

enum Kind {
    Execute {
        state: Py<StatementState>,
        rows: Vec<PyObject>,
        record_class: Option<Py<PyType>>,
        want_rows: bool,
    },
    Prepare {
        name: String,
        params: Vec<u32>,
    },
}

fn statement_label(index: Option<usize>) -> String {
    match index {
        Some(i) => format!("pipeline statement #{}", i + 1),
        None => "the pipeline's type introspection query".to_string(),
    }
}

impl Pipeline {
    fn new(sync_each: bool) -> Self {
        Pipeline {
            sync_each,
            entries: VecDeque::new(),
            unsent: 0,
            buf: BytesMut::new(),
            sent_any: false,
            ended: false,
            failed: None,
            abandoned: false,
        }
    }

    fn push(&mut self, item: Item) {
        self.entries.push_back(Entry::Item(item));
        self.unsent += 1;
        if self.sync_each {
            frontend::sync(&mut self.buf);
            self.entries.push_back(Entry::Sync);
            self.unsent += 1;
        }
    }

    /// The buffered messages, to be written now.
    fn take_buf(&mut self) -> Option<bytes::Bytes> {
        if self.buf.is_empty() {
            return None;
        }
        self.unsent = 0;
        self.sent_any = true;
        Some(self.buf.split().freeze())
    }

    fn front_item(&mut self) -> Option<&mut Item> {
        match self.entries.front_mut() {
            Some(Entry::Item(item)) => Some(item),
            _ => None,
        }
    }

    fn pop_item(&mut self) -> Option<Item> {
        match self.entries.front() {
            Some(Entry::Item(_)) => match self.entries.pop_front() {
                Some(Entry::Item(item)) => Some(item),
                _ => None,
            },
            _ => None,
        }
    }

    /// Every item still waiting fails with `err` (the connection is gone).
    pub(super) fn reject_all(self, py: Python<'_>, err: &PyErr, fx: &mut Vec<Effect>) {
        for entry in self.entries {
            if let Entry::Item(item) = entry {
                fx.push(Effect::Reject(item.fut, err.clone_ref(py)));
            }
        }
    }

    /// Called once per read: whether the caller gave up on the whole pipeline.
    pub(super) fn check_abandoned(&mut self, py: Python<'_>, waiter: Option<&PyObject>) {
        if self.abandoned {
            return;
        }
        self.abandoned = waiter.is_some_and(|w| {
            w.bind(py)
                .call_method0(pyo3::intern!(py, "done"))
                .and_then(|done| done.is_truthy())
                .unwrap_or(false)
        });
    }
}

/// Whether `msg` belongs to the items of a pipeline rather than to the connection.
pub(super) fn owns(msg: &Message) -> bool {
    matches!(
        msg,
        Message::DataRow(_)
            | Message::CommandComplete(_)
            | Message::EmptyQueryResponse
            | Message::PortalSuspended
            | Message::ErrorResponse(_)
            | Message::ReadyForQuery(_)
            | Message::RowDescription(_)
            | Message::ParameterDescription(_)
            | Message::NoData
    )
}

fn pipeline_mut<'a>(py: Python<'_>, this: &'a mut PGProtocol) -> PyResult<&'a mut Pipeline> {
    if this.phase == super::Phase::Closed {
        // lost midway: say so, rather than that no pipeline is open
        return Err(Exc::ConnectionDoesNotExistError.err(py, "connection is closed"));
    }
    match &mut this.op {
        Op::Pipeline(p) if !p.ended => Ok(p),
        _ => Err(interface_error(py, "no pipeline in progress")),
    }
}

fn status_of(this: &PGProtocol, flushed: bool) -> u8 {
    let failed = matches!(&this.op, Op::Pipeline(p) if !p.sync_each && p.failed.is_some());
    let failed = failed || this.phase == super::Phase::Closed;
    executemany_status::of(failed, this.writing_paused, flushed)
}

/// `PGProtocol.pipeline_begin`.
pub(super) fn begin(slf: &Bound<'_, PGProtocol>, sync_each: bool) -> PyResult<PyObject> {
    let py = slf.py();
    operation(slf, |this, fx| {
        let op = Op::Pipeline(Box::new(Pipeline::new(sync_each)));
        this.begin(py, op, BytesMut::new(), None, fx)
    })
}

/// `PGProtocol.pipeline_prepare`: Parse/Describe `query` as `name`. Buffered like the rest:
/// the caller adds all the statements it needs described, then `pipeline_flush`es and
/// waits (one write, one round trip).
pub(super) fn prepare(
    slf: &Bound<'_, PGProtocol>,
    name: String,
    query: String,
    index: Option<usize>,
) -> PyResult<PyObject> {
    let py = slf.py();
    let fut = {
        let mut this = slf.borrow_mut();
        let this = &mut *this;
        let fut = this
            .loop_
            .call_method0(py, pyo3::intern!(py, "create_future"))?;
        let p = pipeline_mut(py, this)?;
        let mark = p.buf.len();
        let written = frontend::parse(&name, &query, std::iter::empty(), &mut p.buf)
            .and_then(|()| frontend::describe(b'S', &name, &mut p.buf));
        if let Err(e) = written {
            p.buf.truncate(mark);
            return Err(interface_error(
                py,
                format!("{}: invalid query: {e}", statement_label(index)),
            ));
        }
        let item = Item {
            index,
            fut: fut.clone_ref(py),
            query,
            kind: Kind::Prepare {
                name,
                params: Vec::new(),
            },
            error: None,
        };
        p.push(item);
        fut
    };
    Ok(fut)
}

/// `PGProtocol.pipeline_execute`: Bind/Execute `args` to `state`; returns the item's future
/// and an executemany status code. A bad argument raises before anything of it is buffered.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    slf: &Bound<'_, PGProtocol>,
    state: Py<StatementState>,
    args: &Bound<'_, PyAny>,
    limit: i32,
    record_class: Option<Py<PyType>>,
    want_rows: bool,
    index: Option<usize>,
) -> PyResult<(PyObject, u8)> {
    let py = slf.py();
    let (fut, write) = {
        let mut this = slf.borrow_mut();
        let this = &mut *this;
        let transport = this.transport(py)?;
        // made first: once the item's messages are buffered, nothing may fail before the
        // item is queued, or replies would be matched to the wrong statements
        let fut = this
            .loop_
            .call_method0(py, pyo3::intern!(py, "create_future"))?;
        let p = pipeline_mut(py, this)?;
        let st = state.get();
        if st.is_closed() {
            return Err(interface_error(py, "the prepared statement is closed"));
        }
        let mark = p.buf.len();
        let site = index.map_or(Site::Query, Site::Pipeline);
        let encoded = reparse_if_unnamed(py, st, &mut p.buf)
            .and_then(|()| write_bind(py, &mut p.buf, "", st, args, site))
            .and_then(|()| {
                let redescribe = st.name.is_empty() && !st.columns.is_empty();
                // as in bind_execute: a re-parsed statement is described again, so DDL in
                // between cannot make us decode its rows with the old types' codecs
                if redescribe {
                    frontend::describe(b'P', "", &mut p.buf)
                        .map_err(|e| interface_error(py, e.to_string()))?;
                }
                frontend::execute("", limit, &mut p.buf)
                    .map_err(|e| interface_error(py, e.to_string()))
            });
        if let Err(e) = encoded {
            p.buf.truncate(mark);
            return Err(e);
        }
        let query = st.query.clone();
        p.push(Item {
            index,
            fut: fut.clone_ref(py),
            query,
            kind: Kind::Execute {
                state,
                rows: Vec::new(),
                record_class,
                want_rows,
            },
            error: None,
        });
        let write = if p.buf.len() >= EXECUTEMANY_FLUSH {
            p.take_buf().map(|data| (transport, data))
        } else {
            None
        };
        (fut, write)
    };
    let flushed = write.is_some();
    if let Some((transport, data)) = write {
        transport_write(py, &transport, &data)?;
    }
    Ok((fut, status_of(&slf.borrow(), flushed)))
}

/// `PGProtocol.pipeline_flush`: send what is buffered and, with one Sync for the whole
/// pipeline, ask the server to send its replies so far (Flush). Returns a status code.
pub(super) fn flush(slf: &Bound<'_, PGProtocol>) -> PyResult<u8> {
    let py = slf.py();
    let write = {
        let mut this = slf.borrow_mut();
        let this = &mut *this;
        let transport = this.transport(py)?;
        let p = pipeline_mut(py, this)?;
        if !p.sync_each && (p.sent_any || !p.buf.is_empty()) {
            frontend::flush(&mut p.buf);
        }
        p.take_buf().map(|data| (transport, data))
    };
    let flushed = write.is_some();
    if let Some((transport, data)) = write {
        transport_write(py, &transport, &data)?;
    }
    Ok(status_of(&slf.borrow(), flushed))
}

/// `PGProtocol.pipeline_end`: no more statements. With `failed` (the caller stopped
/// midway) what is still buffered is dropped, its items failing with `reason`; with
/// `rollback` too, a one-Sync pipeline is made to fail server-side, so nothing of it
/// commits. The pipeline's future resolves once every reply is in.
pub(super) fn end(
    slf: &Bound<'_, PGProtocol>,
    failed: bool,
    rollback: bool,
    reason: Option<String>,
) -> PyResult<()> {
    let py = slf.py();
    let mut fx = Vec::new();
    {
        let mut this = slf.borrow_mut();
        let this = &mut *this;
        let transport = this.transport.as_ref().map(|t| t.clone_ref(py));
        let Op::Pipeline(p) = &mut this.op else {
            return Ok(());
        };
        if p.ended {
            return Ok(());
        }
        p.ended = true;
        if failed {
            p.buf.clear();
            let why = reason.unwrap_or_else(|| "the pipeline was stopped".to_string());
            for _ in 0..p.unsent {
                if let Some(Entry::Item(item)) = p.entries.pop_back() {
                    let msg = format!("{} was not sent: {why}", statement_label(item.index));
                    fx.push(Effect::Reject(item.fut, interface_error(py, msg)));
                }
            }
            p.unsent = 0;
        }
        if !p.sync_each && p.sent_any || !p.buf.is_empty() {
            if !p.sync_each {
                if failed && rollback && p.sent_any {
                    // Executing a portal that does not exist is an error before the Sync,
                    // which then rolls back the implicit transaction holding the pipeline.
                    frontend::execute("__asyncpg_rs_abort__", 0, &mut p.buf)
                        .map_err(|e| interface_error(py, e.to_string()))?;
                }
                frontend::sync(&mut p.buf);
                p.entries.push_back(Entry::Sync);
            }
            if let (Some(data), Some(t)) = (p.take_buf(), transport) {
                fx.push(Effect::Write(t, data));
            }
        }
        if p.entries.is_empty() {
            this.finish_pipeline(py, &mut fx);
        }
    }
    super::effects::run_effects(py, fx)
}

impl PGProtocol {
    /// The DataRow at `rbuf[start..end]` (its body, after the header), for the statement
    /// whose reply is coming in. `feed` consumes the bytes afterwards.
    pub(super) fn pipeline_data_row(&mut self, py: Python<'_>, start: usize, end: usize) {
        let Op::Pipeline(p) = &mut self.op else {
            return;
        };
        let abandoned = p.abandoned;
        let Some(item) = p.front_item() else {
            return;
        };
        if let Kind::Execute {
            state,
            rows,
            record_class,
            want_rows,
        } = &mut item.kind
        {
            if *want_rows && item.error.is_none() && !abandoned {
                let body = &self.rbuf[start..end];
                match decode_row(py, body, state.get(), record_class.as_ref()) {
                    Ok(r) => rows.push(r),
                    Err(e) => {
                        rows.clear();
                        item.error = Some(e);
                    }
                }
            }
        }
    }

    /// The pipeline's last reply is in: the connection is idle again.
    fn finish_pipeline(&mut self, py: Python<'_>, fx: &mut Vec<Effect>) {
        self.op = Op::Idle;
        if let Some(w) = self.waiter.take() {
            fx.push(Effect::Resolve(w, py.None()));
        }
        self.error = None;
        for w in self.idle_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
    }

    /// A backend message while a pipeline is open (see [`owns`]).
    pub(super) fn pipeline_message(
        &mut self,
        py: Python<'_>,
        msg: Message,
        fx: &mut Vec<Effect>,
    ) -> PyResult<()> {
        let Op::Pipeline(p) = &mut self.op else {
            return Ok(());
        };
        match msg {
            // `feed` hands DataRows to `pipeline_data_row` straight from the read buffer
            Message::DataRow(_) => {}
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(|e| protocol_error(py, e.to_string()))?;
                self.status = Some(tag.to_string());
                complete_execute(py, p, tag, fx)?;
            }
            Message::EmptyQueryResponse => complete_execute(py, p, "", fx)?,
            // the row limit was reached (fetchrow, fetchval): the statement has no tag
            Message::PortalSuspended => complete_execute(py, p, "", fx)?,
            Message::ErrorResponse(body) => {
                let fields = error_fields(py, body.fields())?;
                match p.pop_item() {
                    Some(item) => {
                        let err = server_error(py, &fields, Some(&item.query));
                        if p.failed.is_none() {
                            p.failed = Some((item.index, err.clone_ref(py)));
                        }
                        fx.push(Effect::Reject(item.fut, err));
                    }
                    None => {
                        // not about an item: the abort that rolls back a stopped pipeline
                        if p.failed.is_none() {
                            p.failed = Some((None, server_error(py, &fields, None)));
                        }
                    }
                }
            }
            Message::ParameterDescription(body) => {
                if let Some(item) = p.front_item() {
                    if let Kind::Prepare { params, .. } = &mut item.kind {
                        // checked as in dispatch: a wrapped or oversized count is refused
                        let mut it = body.parameters();
                        let complete = loop {
                            match fallible_iterator::FallibleIterator::next(&mut it) {
                                Ok(Some(oid)) => params.push(oid),
                                Ok(None) => break true,
                                Err(_) => break false,
                            }
                        };
                        if !complete || params.len() > MAX_ARGS {
                            params.clear();
                            item.error = Some(too_many_arguments(py));
                        }
                    }
                }
            }
            Message::RowDescription(body) => {
                let fields = read_columns(py, &body)?;
                let Some(item) = p.front_item() else {
                    return Ok(());
                };
                match &mut item.kind {
                    Kind::Prepare { .. } => {
                        let columns = fields.into_iter().map(|(c, _)| c).collect();
                        complete_prepare(py, &self.registry, p, columns, fx)?;
                    }
                    Kind::Execute { state, .. } => {
                        let current = state.clone_ref(py);
                        // `redescribed` reports an undecodable change through self.error
                        let earlier = self.error.take();
                        let fresh = self.redescribed(py, current.get(), fields);
                        let late = std::mem::replace(&mut self.error, earlier);
                        if let Op::Pipeline(p) = &mut self.op {
                            if let Some(item) = p.front_item() {
                                if let Kind::Execute { state, .. } = &mut item.kind {
                                    match fresh {
                                        Ok(Some(fresh)) => *state = Py::new(py, fresh)?,
                                        Ok(None) => {}
                                        Err(e) => item.error = Some(e),
                                    }
                                }
                                if item.error.is_none() {
                                    item.error = late;
                                }
                            }
                        }
                    }
                }
            }
            Message::NoData => {
                if matches!(p.front_item().map(|i| &i.kind), Some(Kind::Prepare { .. })) {
                    complete_prepare(py, &self.registry, p, Vec::new(), fx)?;
                }
            }
            Message::ReadyForQuery(body) => {
                self.xact_status = body.status();
                let failed = p.failed.take();
                // the Sync's group ends: whatever of it got no reply was skipped
                while let Some(entry) = p.entries.pop_front() {
                    let Entry::Item(item) = entry else {
                        break;
                    };
                    let err = match &failed {
                        Some((first, cause)) => {
                            let err = interface_error(
                                py,
                                format!(
                                    "{} was skipped: {} failed first: {}",
                                    statement_label(item.index),
                                    statement_label(*first),
                                    cause.value(py)
                                ),
                            );
                            err.set_cause(py, Some(cause.clone_ref(py)));
                            err
                        }
                        None => protocol_error(
                            py,
                            format!(
                                "{} got no reply before ReadyForQuery",
                                statement_label(item.index)
                            ),
                        ),
                    };
                    fx.push(Effect::Reject(item.fut, err));
                }
                if p.ended && p.entries.is_empty() {
                    self.finish_pipeline(py, fx);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The front item, an Execute, is complete: its rows (or, without rows, its tag).
fn complete_execute(
    py: Python<'_>,
    p: &mut Pipeline,
    tag: &str,
    fx: &mut Vec<Effect>,
) -> PyResult<()> {
    let Some(item) = p.pop_item() else {
        return Ok(());
    };
    let outcome = match (item.error, item.kind) {
        (Some(e), _) => Err(e),
        (
            None,
            Kind::Execute {
                rows, want_rows, ..
            },
        ) => {
            if want_rows {
                Ok(PyList::new(py, rows)?.into_any().unbind())
            } else {
                Ok(PyString::new(py, tag).into_any().unbind())
            }
        }
        (None, Kind::Prepare { .. }) => Err(protocol_error(
            py,
            "CommandComplete for a statement that was only being prepared",
        )),
    };
    fx.push(match outcome {
        Ok(v) => Effect::Resolve(item.fut, v),
        Err(e) => Effect::Reject(item.fut, e),
    });
    Ok(())
}

/// The front item, a Prepare, is described: its `StatementState`.
fn complete_prepare(
    py: Python<'_>,
    registry: &crate::pg::types::CodecRegistry,
    p: &mut Pipeline,
    columns: Vec<Column>,
    fx: &mut Vec<Effect>,
) -> PyResult<()> {
    let Some(item) = p.pop_item() else {
        return Ok(());
    };
    let outcome = match (item.error, item.kind) {
        (Some(e), _) => Err(e),
        (None, Kind::Prepare { name, params }) => {
            StatementState::build(py, registry, name, item.query, params, columns)
                .and_then(|st| Py::new(py, st))
                .map(|st| st.into_any())
        }
        (None, Kind::Execute { .. }) => Ok(py.None()),
    };
    fx.push(match outcome {
        Ok(v) => Effect::Resolve(item.fut, v),
        Err(e) => Effect::Reject(item.fut, e),
    });
    Ok(())
}
