//! The message dispatch fed scripted server bytes, with no server: a fake transport collects
//! what the protocol writes, the stdlib loop makes the futures, and each test checks what
//! the protocol did with what "the server" said.

//!
//! This file is the harness (the server's messages, the fake transport, a connection on
//! it); the tests are grouped by what they exercise.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyModule};

use super::PGProtocol;
use crate::testing::{run, with_python};

const FAKES: &str = r#"
import asyncio

class FakeTransport:
    def __init__(self):
        self.writes = []
        self.closed = False
        self.reading = True

    def write(self, data):
        self.writes.append(bytes(data))

    def writelines(self, parts):
        self.writes.append(b"".join(bytes(p) for p in parts))

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def get_extra_info(self, name, default=None):
        return default


def run_callbacks(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()
"#;

// ----- the server's side of the conversation -----

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn auth(code: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    msg(b'R', &body)
}

fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', &[cstr(name), cstr(value)].concat())
}

fn backend_key(pid: i32, secret: i32) -> Vec<u8> {
    msg(b'K', &[pid.to_be_bytes(), secret.to_be_bytes()].concat())
}

fn command_complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

fn fields(kind: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in [(b'S', kind), (b'V', kind), (b'C', code), (b'M', message)] {
        body.push(t);
        body.extend_from_slice(&cstr(v));
    }
    body.push(0);
    body
}

fn error(code: &str, message: &str) -> Vec<u8> {
    msg(b'E', &fields("ERROR", code, message))
}

/// RowDescription of binary columns `(name, type oid)`.
fn row_description(cols: &[(&str, u32)]) -> Vec<u8> {
    let mut body = (cols.len() as i16).to_be_bytes().to_vec();
    for (name, oid) in cols {
        body.extend_from_slice(&cstr(name));
        body.extend_from_slice(&0i32.to_be_bytes()); // table
        body.extend_from_slice(&0i16.to_be_bytes()); // column
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&4i16.to_be_bytes()); // size
        body.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
        body.extend_from_slice(&1i16.to_be_bytes()); // binary
    }
    msg(b'T', &body)
}

fn parameter_description(oids: &[u32]) -> Vec<u8> {
    let mut body = (oids.len() as i16).to_be_bytes().to_vec();
    for oid in oids {
        body.extend_from_slice(&oid.to_be_bytes());
    }
    msg(b't', &body)
}

fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    msg(b'D', &body)
}

fn copy_response(tag: u8) -> Vec<u8> {
    msg(tag, &[0, 0, 1, 0, 0])
}

/// A row of one `int4` column.
fn int4_row(n: i32) -> Vec<u8> {
    data_row(&[Some(&n.to_be_bytes())])
}

/// The server's answer to one bound statement: ParseComplete when the statement was parsed
/// again (`parsed`), BindComplete, the rows, then `end` (a CommandComplete, or the
/// ErrorResponse that cut the result short). The ReadyForQuery after it is the caller's:
/// a pipeline answers several statements before one.
fn execution(parsed: bool, rows: &[Vec<u8>], end: Vec<u8>) -> Vec<u8> {
    let mut reply = Vec::new();
    if parsed {
        reply.extend(msg(b'1', b""));
    }
    reply.extend(msg(b'2', b""));
    rows.iter().for_each(|row| reply.extend_from_slice(row));
    reply.extend(end);
    reply
}

const INT4: u32 = 23;

// ----- the harness -----

struct Conn<'py> {
    py: Python<'py>,
    support: Bound<'py, PyModule>,
    event_loop: Bound<'py, PyAny>,
    transport: Bound<'py, PyAny>,
    proto: Bound<'py, PGProtocol>,
}

impl<'py> Conn<'py> {
    /// A protocol attached to a fake transport: the StartupMessage is written.
    fn new(py: Python<'py>, password: Option<&str>) -> Conn<'py> {
        let support = run(py, FAKES);
        let event_loop = py
            .import("asyncio")
            .and_then(|a| a.call_method0("new_event_loop"))
            .unwrap();
        let transport = support.getattr("FakeTransport").unwrap().call0().unwrap();
        let proto = py
            .get_type::<PGProtocol>()
            .call1((event_loop.clone(), "alice", "shop", password))
            .unwrap()
            .downcast_into::<PGProtocol>()
            .unwrap();
        proto
            .call_method1("connection_made", (transport.clone(),))
            .unwrap();
        Conn {
            py,
            support,
            event_loop,
            transport,
            proto,
        }
    }

    /// Logged in and idle.
    fn started(py: Python<'py>) -> Conn<'py> {
        let c = Conn::new(py, None);
        c.feed(&[auth(0, b""), backend_key(42, 7), ready(b'I')].concat());
        assert!(done(&c.proto.call_method0("startup_waiter").unwrap()));
        c.take_writes();
        c
    }

    fn feed(&self, data: &[u8]) {
        PGProtocol::receive(&self.proto, data).unwrap();
    }

    fn call(&self, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> Bound<'py, PyAny> {
        self.proto
            .call_method1(name, args)
            .inspect_err(|e| e.print(self.py))
            .unwrap()
    }

    /// What the protocol wrote since the last call.
    fn take_writes(&self) -> Vec<u8> {
        let writes = self.transport.getattr("writes").unwrap();
        let list = writes.downcast::<PyList>().unwrap();
        let mut all = Vec::new();
        for w in list.iter() {
            all.extend_from_slice(w.downcast::<PyBytes>().unwrap().as_bytes());
        }
        list.call_method0("clear").unwrap();
        all
    }

    fn run_callbacks(&self) {
        self.support
            .getattr("run_callbacks")
            .unwrap()
            .call1((self.event_loop.clone(),))
            .unwrap();
    }

    fn flag(&self, name: &str) -> bool {
        self.proto.call_method0(name).unwrap().extract().unwrap()
    }

    fn transport_closed(&self) -> bool {
        self.transport.getattr("closed").unwrap().extract().unwrap()
    }

    /// Prepare `SELECT $1::int4 AS n` as the unnamed statement.
    fn prepared(&self) -> Bound<'py, PyAny> {
        let fut = self.call("prepare", ("", "SELECT $1::int4 AS n"));
        self.feed(
            &[
                msg(b'1', b""),
                parameter_description(&[INT4]),
                row_description(&[("n", INT4)]),
                ready(b'I'),
            ]
            .concat(),
        );
        self.take_writes();
        result(&fut)
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let _ = self.event_loop.call_method0("close");
        let _ = self.py;
    }
}

fn done(fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0("done").unwrap().extract().unwrap()
}

fn result<'py>(fut: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    assert!(done(fut), "the future is still pending");
    fut.call_method0("result")
        .inspect_err(|e| e.print(fut.py()))
        .unwrap()
}

/// The future's exception: (class name, message).
fn failure(fut: &Bound<'_, PyAny>) -> (String, String) {
    assert!(done(fut), "the future is still pending");
    let exc = fut.call_method0("exception").unwrap();
    assert!(!exc.is_none(), "the future succeeded");
    let name = exc.get_type().name().unwrap().to_string();
    (name, exc.str().unwrap().to_string())
}

/// The first column of row `index` of a result, an `int4`.
fn int_at(rows: &Bound<'_, PyAny>, index: usize) -> i32 {
    rows.get_item(index)
        .and_then(|row| row.get_item(0))
        .and_then(|value| value.extract())
        .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

mod copy;
mod malformed;
mod messages;
mod pipeline;
mod queries;
mod startup;
