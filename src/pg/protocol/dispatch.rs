//! The message state machine: every backend message moves `PGProtocol` along the operation
//! recorded in `Op`, and `ReadyForQuery` settles that operation's future.
//!
//! All of it runs inside the protocol's borrow; what must touch Python objects that could
//! call back (futures, the transport, user callbacks) is pushed as an [`Effect`] and run by
//! the caller once the borrow is gone. A fault of ours while handling a well-formed message
//! is reported to the waiter and the stream goes on; a malformed stream closes the
//! connection (see `framing`).

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyType};

use super::bind::{too_many_arguments, MAX_ARGS};
use super::effects::{run_effects, Effect};
use super::framing;
use super::gc_pause::GcPause;
use super::server_error::{error_fields, server_error};
use super::statement::{Column, StatementState};
use super::{auth, Op, PGProtocol, Phase};
use crate::pg::errors::{interface_error, internal_error, protocol_error, Exc};
use crate::pg::record::RecordBuilder;

/// How many rows of an abandoned fetch one read frees: a couple of milliseconds' work.
const ABANDONED_ROWS_FREED_PER_READ: usize = 16 * 1024;

impl PGProtocol {
    /// Bytes from the server, handed over by one of our transports without a Python call
    /// (the native fast path); the same as `data_received`.
    pub fn receive(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let mut fx = Vec::new();
        {
            let _paused = GcPause::new(py, data.len());
            slf.borrow_mut().feed(py, data, &mut fx);
        }
        run_effects(py, fx)
    }

    /// Rows of a fetch whose caller gave up (its future was failed by a timeout or a
    /// cancellation in Python) keep arriving until the server takes the CancelRequest;
    /// decoding them into objects nobody will see delays the loop and swells memory.
    /// Checked once per read, not per row, and only once rows have come: asking the future
    /// is a Python call, which for a result that fits one read (the common case) cost about
    /// 1% of a `SELECT 1`; a big fetch nobody waits for still stops being decoded from its
    /// second read on.
    fn drop_rows_nobody_waits_for(&mut self, py: Python<'_>) {
        if let Op::Pipeline(p) = &mut self.op {
            p.check_abandoned(py, self.waiter.as_ref());
            return;
        }
        let Op::Execute {
            rows, want_rows, ..
        } = &mut self.op
        else {
            return;
        };
        let abandoned = *want_rows
            && !rows.is_empty()
            && self.waiter.as_ref().is_some_and(|w| {
                w.bind(py)
                    .call_method0(pyo3::intern!(py, "done"))
                    .and_then(|done| done.is_truthy())
                    .unwrap_or(false)
            });
        if abandoned {
            *want_rows = false;
            // Freeing a million rows at once takes a tenth of a second, and the caller who
            // timed out would wait for it: the loop frees them a slice per read instead, and
            // what is left when the operation ends (the cancellation landed).
            self.abandoned_rows = std::mem::take(rows);
        }
        let keep = self
            .abandoned_rows
            .len()
            .saturating_sub(ABANDONED_ROWS_FREED_PER_READ);
        self.abandoned_rows.truncate(keep);
    }

    pub(super) fn feed(&mut self, py: Python<'_>, data: &[u8], fx: &mut Vec<Effect>) {
        self.drop_rows_nobody_waits_for(py);
        // the buffer grows by what arrived, never by what a header announces (see framing)
        self.rbuf.extend_from_slice(data);
        while self.phase != Phase::Closed {
            let parsed = match framing::complete_message(&self.rbuf) {
                Ok(None) => break,
                Ok(Some(total)) if self.rbuf[0] == b'D' && self.unawaited == 0 => {
                    self.data_row(py, total);
                    continue;
                }
                // complete: the parser neither waits nor reserves
                Ok(Some(_)) => Message::parse(&mut self.rbuf).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match parsed {
                Ok(Some(msg)) => {
                    if let Err(e) = self.handle(py, msg, fx) {
                        // A fault of ours while handling a well-formed message: the stream
                        // position is still right, so report it to the waiter and go on.
                        self.record_error(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let err = protocol_error(py, format!("malformed message from the server: {e}"));
                    self.rbuf.clear();
                    self.fail_connection(py, err, fx);
                }
            }
        }
        self.flush_copy_out(py, fx);
    }

    /// The complete DataRow (`total` bytes with its header) at the start of the read
    /// buffer: decoded into the running fetch's rows, straight from the buffer (a message
    /// per row through `Message::parse` cost a split of the buffer, a reference count and
    /// a second header check per row), then consumed.
    fn data_row(&mut self, py: Python<'_>, total: usize) {
        if matches!(self.op, Op::Pipeline(_)) {
            self.pipeline_data_row(py, 5, total);
        } else if let Op::Execute {
            state,
            rows,
            record_class,
            want_rows,
        } = &mut self.op
        {
            if *want_rows && self.error.is_none() {
                let body = &self.rbuf[5..total];
                match decode_row(py, body, state.get(), record_class.as_ref()) {
                    Ok(r) => rows.push(r),
                    Err(e) => {
                        rows.clear();
                        self.error = Some(e);
                    }
                }
            }
        }
        bytes::Buf::advance(&mut self.rbuf, total);
    }

    pub(super) fn on_ready(
        &mut self,
        py: Python<'_>,
        status: u8,
        fx: &mut Vec<Effect>,
    ) -> PyResult<()> {
        self.xact_status = status;
        self.abandoned_rows = Vec::new();
        let op = std::mem::replace(&mut self.op, Op::Idle);
        let waiter = self.waiter.take();
        if let Op::CopyIn { ready: Some(ready) } = &op {
            // the COPY failed before it started: the caller learns it from `ready`
            if let Some(err) = &self.error {
                fx.push(Effect::Reject(ready.clone_ref(py), err.clone_ref(py)));
            } else {
                fx.push(Effect::Resolve(ready.clone_ref(py), py.None()));
            }
        }
        self.end_copy_out(py, fx);
        if matches!(op, Op::Startup) {
            self.phase = Phase::Ready;
        }
        if let Some(w) = waiter {
            match self.error.take() {
                Some(err) => fx.push(Effect::Reject(w, err)),
                None => {
                    let value = self.finish_op(py, op)?;
                    fx.push(Effect::Resolve(w, value));
                }
            }
        }
        self.error = None;
        for w in self.idle_waiters.drain(..) {
            fx.push(Effect::Resolve(w, py.None()));
        }
        Ok(())
    }

    pub(super) fn finish_op(&mut self, py: Python<'_>, op: Op) -> PyResult<PyObject> {
        Ok(match op {
            Op::Idle | Op::Startup => py.None(),
            Op::Prepare {
                name,
                query,
                params,
                columns,
            } => {
                let state =
                    StatementState::build(py, &self.registry, name, query, params, columns)?;
                Py::new(py, state)?.into_any()
            }
            Op::Execute { rows, .. } => PyList::new(py, rows)?.into_any().unbind(),
            Op::Simple => match &self.status {
                Some(s) => PyString::new(py, s).into_any().unbind(),
                None => py.None(),
            },
            Op::Close { state } => {
                state.get().closed.store(true, Ordering::Relaxed);
                py.None()
            }
            Op::ClosePortal | Op::Pipeline(_) => py.None(),
            Op::CopyOut | Op::CopyIn { .. } => match &self.status {
                Some(s) => PyString::new(py, s).into_any().unbind(),
                None => py.None(),
            },
        })
    }

    /// A response to an unawaited query: nobody waits for its rows or tag; its ReadyForQuery
    /// ends it, and an error there fails the connection (a session that could not be reset
    /// must not be used).
    pub(super) fn handle_unawaited(
        &mut self,
        py: Python<'_>,
        msg: Message,
        fx: &mut Vec<Effect>,
    ) -> PyResult<()> {
        match msg {
            Message::ErrorResponse(body) if self.unawaited_error.is_none() => {
                let fields = error_fields(py, body.fields())?;
                self.unawaited_error = Some(server_error(py, &fields, None));
            }
            Message::ReadyForQuery(body) => {
                self.unawaited -= 1;
                self.xact_status = body.status();
                if let Some(err) = self.unawaited_error.take() {
                    let reason = err.value(py).to_string();
                    let lost = Exc::ConnectionDoesNotExistError.err(
                        py,
                        format!(
                            "connection closed: a query sent ahead of this one failed: {reason}"
                        ),
                    );
                    lost.set_cause(py, Some(err));
                    self.fail_connection(py, lost, fx);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn handle(
        &mut self,
        py: Python<'_>,
        msg: Message,
        fx: &mut Vec<Effect>,
    ) -> PyResult<()> {
        if self.unawaited > 0
            && matches!(
                msg,
                Message::ErrorResponse(_)
                    | Message::ReadyForQuery(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::RowDescription(_)
                    | Message::DataRow(_)
            )
        {
            return self.handle_unawaited(py, msg, fx);
        }
        if matches!(self.op, Op::Pipeline(_)) && super::pipeline::owns(&msg) {
            return self.pipeline_message(py, msg, fx);
        }
        match msg {
            // `feed` decodes the rows of our own operations straight from the read buffer
            Message::DataRow(_) => {}
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(|e| protocol_error(py, e.to_string()))?;
                self.status = Some(tag.to_string());
            }
            Message::ReadyForQuery(body) => self.on_ready(py, body.status(), fx)?,
            Message::ErrorResponse(body) => {
                let fields = error_fields(py, body.fields())?;
                let err = server_error(py, &fields, self.query.as_deref());
                if self.phase == Phase::Startup {
                    // The server closes the connection after a startup error.
                    self.fail_connection(py, err, fx);
                } else {
                    self.record_error(err);
                }
            }
            Message::NoticeResponse(body) => {
                if let Some(cb) = &self.on_notice {
                    let fields = error_fields(py, body.fields())?;
                    fx.push(Effect::CallSoon(
                        self.loop_.clone_ref(py),
                        cb.clone_ref(py),
                        vec![fields.into_any().unbind()],
                    ));
                }
            }
            Message::NotificationResponse(body) => {
                if let Some(cb) = &self.on_notification {
                    let channel = body.channel().unwrap_or_default();
                    let payload = body.message().unwrap_or_default();
                    fx.push(Effect::CallSoon(
                        self.loop_.clone_ref(py),
                        cb.clone_ref(py),
                        vec![
                            body.process_id().into_pyobject(py)?.into_any().unbind(),
                            PyString::new(py, channel).into_any().unbind(),
                            PyString::new(py, payload).into_any().unbind(),
                        ],
                    ));
                }
            }
            Message::ParameterStatus(body) => {
                let name = body.name().unwrap_or_default();
                let value = body.value().unwrap_or_default();
                self.settings.bind(py).set_item(name, value)?;
            }
            Message::ParameterDescription(body) => {
                if let Op::Prepare { params, .. } = &mut self.op {
                    // The server writes the count as an Int16 whatever the query holds: past
                    // 65,535 parameters it wraps and OIDs are left over; past 32,767 no Bind
                    // could carry the arguments. Either way the statement is refused as
                    // asyncpg refuses it; the message was read whole, so the connection
                    // stays usable.
                    let mut it = body.parameters();
                    let complete = loop {
                        match it.next() {
                            Ok(Some(oid)) => params.push(oid),
                            Ok(None) => break true,
                            Err(_) => break false,
                        }
                    };
                    if !complete || params.len() > MAX_ARGS {
                        params.clear();
                        return Err(too_many_arguments(py));
                    }
                }
            }
            Message::RowDescription(body) => {
                if let Op::Execute { state, .. } = &self.op {
                    let current = state.clone_ref(py);
                    let fields = read_columns(py, &body)?;
                    if let Some(fresh) = self.redescribed(py, current.get(), fields)? {
                        if let Op::Execute { state, .. } = &mut self.op {
                            *state = Py::new(py, fresh)?;
                        }
                    }
                } else if let Op::Prepare { columns, .. } = &mut self.op {
                    let mut it = body.fields();
                    while let Some(f) = it.next().map_err(|e| protocol_error(py, e.to_string()))? {
                        columns.push(Column {
                            name: f.name().to_string(),
                            type_oid: f.type_oid(),
                            table_oid: f.table_oid(),
                            column_id: f.column_id(),
                        });
                    }
                }
            }
            Message::BackendKeyData(body) => {
                self.backend_pid = body.process_id();
                self.backend_secret = body.secret_key();
            }
            Message::AuthenticationOk => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, _| {
                        this.channel_binding.check_authenticated()?;
                        this.authenticated = true;
                        Ok(())
                    },
                    &mut out,
                )?;
            }
            Message::AuthenticationCleartextPassword => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, out| {
                        this.channel_binding.check_password_request()?;
                        auth::cleartext(&this.password, out)
                    },
                    &mut out,
                )?;
            }
            Message::AuthenticationMd5Password(body) => {
                let mut out = BytesMut::new();
                let salt = body.salt();
                self.auth_step(
                    py,
                    fx,
                    |this, out| {
                        this.channel_binding.check_password_request()?;
                        auth::md5(&this.user, &this.password, salt, out)
                    },
                    &mut out,
                )?;
            }
            Message::AuthenticationSasl(body) => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, out| {
                        let password = this.password.clone();
                        this.auth
                            .sasl_start(&body, &password, &mut this.channel_binding, out)
                    },
                    &mut out,
                )?;
            }
            Message::AuthenticationSaslContinue(body) => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, out| this.auth.sasl_continue(body.data(), out),
                    &mut out,
                )?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let mut out = BytesMut::new();
                self.auth_step(
                    py,
                    fx,
                    |this, _| this.auth.sasl_final(body.data()),
                    &mut out,
                )?;
            }
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => {
                let method = match msg {
                    Message::AuthenticationSspi => "SSPI",
                    Message::AuthenticationKerberosV5 => "Kerberos V5",
                    Message::AuthenticationScmCredential => "SCM credentials",
                    _ => "GSSAPI",
                };
                let err = interface_error(
                    py,
                    format!("unsupported authentication method requested by the server: {method}"),
                );
                self.fail_connection(py, err, fx);
            }
            Message::PortalSuspended => self.suspended = true,
            Message::CopyData(body) if matches!(self.op, Op::CopyOut) && !self.copy_discard => {
                self.copy_out_data(py, body.data(), fx)?;
            }
            Message::CopyInResponse(_) if matches!(self.op, Op::CopyIn { .. }) => {
                if let Op::CopyIn { ready } = &mut self.op {
                    if let Some(r) = ready.take() {
                        fx.push(Effect::Resolve(r, py.None()));
                    }
                }
            }
            Message::CopyInResponse(_) => {
                // COPY FROM STDIN through execute(): refuse cleanly so the server ends the
                // COPY with an error instead of waiting for data forever.
                let mut out = BytesMut::new();
                frontend::copy_fail(
                    "COPY FROM STDIN is not supported by execute(); use copy_to_table()",
                    &mut out,
                )
                .map_err(|e| internal_error(py, e.to_string()))?;
                fx.push(Effect::Write(self.transport(py)?, out.freeze()));
            }
            Message::ParseComplete
            | Message::BindComplete
            | Message::CloseComplete
            | Message::NoData
            | Message::EmptyQueryResponse
            | Message::CopyOutResponse(_)
            | Message::CopyData(_)
            | Message::CopyDone => {}
            _ => {}
        }
        Ok(())
    }

    pub(super) fn auth_step(
        &mut self,
        py: Python<'_>,
        fx: &mut Vec<Effect>,
        step: impl FnOnce(&mut Self, &mut BytesMut) -> Result<(), auth::AuthError>,
        out: &mut BytesMut,
    ) -> PyResult<()> {
        match step(self, out) {
            Ok(()) => {
                if !out.is_empty() {
                    fx.push(Effect::Write(
                        self.transport(py)?,
                        bytes::Bytes::copy_from_slice(&out[..]),
                    ));
                }
            }
            Err(auth::AuthError(msg)) => {
                let err = interface_error(py, msg);
                self.fail_connection(py, err, fx);
            }
        }
        Ok(())
    }
}

/// A RowDescription's columns, with the format code each will be sent in.
pub(super) fn read_columns(
    py: Python<'_>,
    body: &postgres_protocol::message::backend::RowDescriptionBody,
) -> PyResult<Vec<(Column, i16)>> {
    let mut out = Vec::new();
    let mut it = body.fields();
    while let Some(f) = it.next().map_err(|e| protocol_error(py, e.to_string()))? {
        out.push((
            Column {
                name: f.name().to_string(),
                type_oid: f.type_oid(),
                table_oid: f.table_oid(),
                column_id: f.column_id(),
            },
            f.format(),
        ));
    }
    Ok(out)
}

impl PGProtocol {
    /// The re-parsed unnamed statement `state`, as the server describes its rows now: `None`
    /// when nothing changed; otherwise a statement whose codecs match the new types (and
    /// `state` is marked stale for the cache). When a new type cannot be decoded in the
    /// format the Bind asked for, the rows are refused with an error that says the statement
    /// ran: it is not retried.
    pub(super) fn redescribed(
        &mut self,
        py: Python<'_>,
        state: &StatementState,
        fields: Vec<(Column, i16)>,
    ) -> PyResult<Option<StatementState>> {
        let same = fields.len() == state.columns.len()
            && fields
                .iter()
                .zip(&state.columns)
                .all(|((new, _), old)| new.type_oid == old.type_oid && new.name == old.name);
        if same {
            return Ok(None);
        }
        state
            .stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let formats: Vec<i16> = fields.iter().map(|(_, f)| *f).collect();
        let columns = fields.into_iter().map(|(c, _)| c).collect();
        let fresh = StatementState::build(
            py,
            &self.registry,
            String::new(),
            state.query.clone(),
            state.param_oids.clone(),
            columns,
        )?;
        if fresh.unknown_oids.is_empty() && fresh.result_formats == formats {
            return Ok(Some(fresh));
        }
        if self.error.is_none() {
            self.error = Some(interface_error(
                py,
                "the result types of this cached statement changed since it was prepared \
                 (DDL), and the new ones cannot be decoded in the format it asked for; the \
                 statement ran, its rows were dropped, and it will be prepared afresh next time",
            ));
        }
        Ok(None)
    }
}

/// One DataRow's body (after its header) as a Record of `record_class`, each column decoded
/// by the statement's codec. Every count and length is checked against the body first.
pub(super) fn decode_row(
    py: Python<'_>,
    body: &[u8],
    state: &StatementState,
    record_class: Option<&Py<PyType>>,
) -> PyResult<PyObject> {
    let ncols = state.col_codecs.len();
    let Some(count) = body.get(..2) else {
        return Err(protocol_error(py, "DataRow cut short"));
    };
    let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
    if count != ncols {
        let which = if count > ncols { "more" } else { "fewer" };
        return Err(protocol_error(
            py,
            format!("DataRow has {which} columns than the row description"),
        ));
    }
    // the values go straight into the Record's slots: no vector per row; on an error the
    // half-filled row is dropped, releasing what it holds
    let cls = record_class.map(|c| c.bind(py));
    let mut row = RecordBuilder::new(py, &state.desc, ncols, cls)?;
    let mut pos = 2;
    for (i, codec) in state.col_codecs.iter().enumerate() {
        let Some(len) = body.get(pos..pos + 4) else {
            return Err(protocol_error(py, "DataRow cut short"));
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        let value = if len == -1 {
            py.None()
        } else {
            let Ok(len) = usize::try_from(len) else {
                return Err(protocol_error(
                    py,
                    "DataRow has a negative value length other than -1",
                ));
            };
            let Some(data) = body.get(pos..pos + len) else {
                return Err(protocol_error(
                    py,
                    "DataRow has a value longer than the message",
                ));
            };
            pos += len;
            codec.decode(py, data)?
        };
        row.set(i, value);
    }
    if pos != body.len() {
        return Err(protocol_error(py, "DataRow has bytes after its last value"));
    }
    Ok(row.finish())
}
