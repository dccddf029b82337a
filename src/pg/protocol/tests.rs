//! The message dispatch fed scripted server bytes, with no server: a fake transport collects
//! what the protocol writes, the stdlib loop makes the futures, and each test checks what
//! the protocol did with what "the server" said.

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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ----- startup -----

#[test]
fn startup_with_auth_ok_records_settings_and_backend_key() {
    with_python(|py| {
        let c = Conn::new(py, None);
        let startup = c.take_writes();
        assert!(contains(&startup, b"user\0alice\0database\0shop\0"));
        let waiter = c.proto.call_method0("startup_waiter").unwrap();
        let authenticated =
            |c: &Conn<'_>| -> bool { c.proto.getattr("authenticated").unwrap().extract().unwrap() };
        assert!(!authenticated(&c));
        c.feed(&auth(0, b""));
        assert!(authenticated(&c));
        assert!(!done(&waiter), "startup goes on until ReadyForQuery");
        c.feed(
            &[
                parameter_status("server_version", "16.4"),
                parameter_status("TimeZone", "UTC"),
                backend_key(4242, 99),
                ready(b'I'),
            ]
            .concat(),
        );
        assert!(result(&waiter).is_none());
        let settings = c.proto.call_method0("get_settings").unwrap();
        let version: String = settings
            .get_item("server_version")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(version, "16.4");
        let pid: i32 = c
            .proto
            .call_method0("get_server_pid")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(pid, 4242);
        assert!(!c.flag("is_busy"));
        assert!(!c.flag("is_closed"));
    });
}

#[test]
fn md5_challenge_is_answered_with_the_salted_hash() {
    with_python(|py| {
        let c = Conn::new(py, Some("s3cret"));
        c.take_writes();
        let salt = [1u8, 2, 3, 4];
        c.feed(&auth(5, &salt));
        let answer = c.take_writes();
        let expected = postgres_protocol::authentication::md5_hash(b"alice", b"s3cret", salt);
        assert_eq!(answer, msg(b'p', &cstr(&expected)));
    });
}

#[test]
fn scram_challenge_starts_the_exchange_and_a_bad_server_message_fails_the_login() {
    with_python(|py| {
        let c = Conn::new(py, Some("s3cret"));
        c.take_writes();
        let waiter = c.proto.call_method0("startup_waiter").unwrap();
        c.feed(&auth(10, &[cstr("SCRAM-SHA-256"), vec![0]].concat()));
        let first = c.take_writes();
        assert_eq!(first[0], b'p');
        assert!(contains(&first, b"SCRAM-SHA-256\0"));
        assert!(contains(&first, b"n,,n=,r="), "client-first message");
        // a server-first message whose nonce does not extend ours
        c.feed(&auth(11, b"r=bogus,s=c2FsdA==,i=4096"));
        let (class, _) = failure(&waiter);
        assert_eq!(class, "InterfaceError");
        assert!(c.flag("is_closed"));
        assert!(c.transport_closed());
    });
}

#[test]
fn unsupported_authentication_fails_the_login() {
    with_python(|py| {
        let c = Conn::new(py, None);
        let waiter = c.proto.call_method0("startup_waiter").unwrap();
        c.feed(&auth(7, b"")); // GSSAPI
        let (class, message) = failure(&waiter);
        assert_eq!(class, "InterfaceError");
        assert!(message.contains("GSSAPI"), "{message}");
    });
}

// ----- queries -----

#[test]
fn a_query_returns_its_rows_and_status() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let fut = c.call("bind_execute", (state, (5,)));
        let sent = c.take_writes();
        assert_eq!(sent[0], b'P', "the unnamed statement is parsed again");
        assert!(contains(&sent, b"B") && sent.ends_with(&msg(b'S', b"")));
        assert!(c.flag("is_busy"));
        c.feed(
            &[
                msg(b'1', b""),
                msg(b'2', b""),
                data_row(&[Some(&5i32.to_be_bytes())]),
                data_row(&[None]),
                command_complete("SELECT 2"),
                ready(b'I'),
            ]
            .concat(),
        );
        let rows = result(&fut);
        assert_eq!(rows.len().unwrap(), 2);
        let first: i32 = rows
            .get_item(0)
            .unwrap()
            .get_item(0)
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(first, 5);
        assert!(rows.get_item(1).unwrap().get_item(0).unwrap().is_none());
        let status: String = c
            .proto
            .call_method0("last_status")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(status, "SELECT 2");
        assert!(!c.flag("is_busy"));
    });
}

#[test]
fn an_error_in_the_middle_of_a_result_fails_the_query_and_keeps_the_connection() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let fut = c.call("bind_execute", (state.clone(), (1,)));
        c.take_writes();
        c.feed(
            &[
                msg(b'2', b""),
                data_row(&[Some(&1i32.to_be_bytes())]),
                error("22012", "division by zero"),
                ready(b'I'),
            ]
            .concat(),
        );
        let (class, message) = failure(&fut);
        assert_eq!(class, "DivisionByZeroError");
        assert!(message.contains("division by zero"));
        assert!(!c.flag("is_closed"));
        assert!(!c.transport_closed());
        // the next query runs as usual
        let fut = c.call("bind_execute", (state, (3,)));
        c.feed(
            &[
                msg(b'2', b""),
                data_row(&[Some(&3i32.to_be_bytes())]),
                command_complete("SELECT 1"),
                ready(b'I'),
            ]
            .concat(),
        );
        assert_eq!(result(&fut).len().unwrap(), 1);
    });
}

#[test]
fn a_row_with_more_columns_than_described_is_an_error_for_the_query() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let fut = c.call("bind_execute", (state, (1,)));
        let one = 1i32.to_be_bytes();
        c.feed(
            &[
                msg(b'2', b""),
                data_row(&[Some(&one), Some(&one)]),
                command_complete("SELECT 1"),
                ready(b'I'),
            ]
            .concat(),
        );
        let (class, message) = failure(&fut);
        assert_eq!(class, "ProtocolError");
        assert!(message.contains("more columns"), "{message}");
    });
}

#[test]
fn a_parameter_count_past_the_limit_refuses_the_statement() {
    with_python(|py| {
        let c = Conn::started(py);
        let fut = c.call("prepare", ("", "SELECT many"));
        // 40,000 parameters: the Int16 count reads as negative / wraps
        let oids = vec![INT4; 40_000];
        let mut body = (40_000u16).to_be_bytes().to_vec();
        for oid in &oids {
            body.extend_from_slice(&oid.to_be_bytes());
        }
        c.feed(
            &[
                msg(b'1', b""),
                msg(b't', &body),
                msg(b'n', b""),
                ready(b'I'),
            ]
            .concat(),
        );
        let (class, message) = failure(&fut);
        assert_eq!(class, "InterfaceError");
        assert!(message.contains("cannot exceed 32767"), "{message}");
        assert!(!c.flag("is_closed"));
    });
}

// ----- COPY -----

#[test]
fn copy_out_gathers_the_data_for_the_reader() {
    with_python(|py| {
        let c = Conn::started(py);
        let done_fut = c.call("copy_out", ("COPY t TO STDOUT",));
        c.feed(
            &[
                copy_response(b'H'),
                msg(b'd', b"a\n"),
                msg(b'd', b"b\n"),
                msg(b'c', b""),
                command_complete("COPY 2"),
                ready(b'I'),
            ]
            .concat(),
        );
        let tag: String = result(&done_fut).extract().unwrap();
        assert_eq!(tag, "COPY 2");
        let chunks = result(&c.proto.call_method0("copy_out_read").unwrap());
        let data: Vec<Vec<u8>> = chunks.extract().unwrap();
        assert_eq!(data.concat(), b"a\nb\n");
        assert!(result(&c.proto.call_method0("copy_out_read").unwrap()).is_none());
    });
}

#[test]
fn copy_in_sends_data_and_ends_with_copy_done() {
    with_python(|py| {
        let c = Conn::started(py);
        let pair = c.call("copy_in", ("COPY t FROM STDIN",));
        let (ready_fut, done_fut) = (pair.get_item(0).unwrap(), pair.get_item(1).unwrap());
        c.take_writes();
        assert!(!done(&ready_fut));
        c.feed(&copy_response(b'G'));
        assert!(result(&ready_fut).is_none());
        let paused: bool = c
            .call("copy_in_data", (PyBytes::new(py, b"1\n"),))
            .extract()
            .unwrap();
        assert!(!paused);
        c.call("copy_in_end", ());
        assert_eq!(
            c.take_writes(),
            [msg(b'd', b"1\n"), msg(b'c', b"")].concat()
        );
        c.feed(&[command_complete("COPY 1"), ready(b'I')].concat());
        let tag: String = result(&done_fut).extract().unwrap();
        assert_eq!(tag, "COPY 1");
    });
}

#[test]
fn copy_from_stdin_through_a_plain_query_is_refused_with_copy_fail() {
    with_python(|py| {
        let c = Conn::started(py);
        let fut = c.call("simple_query", ("COPY t FROM STDIN",));
        c.take_writes();
        c.feed(&copy_response(b'G'));
        let sent = c.take_writes();
        assert_eq!(sent[0], b'f', "CopyFail");
        c.feed(&[error("57014", "COPY from stdin failed"), ready(b'I')].concat());
        assert!(!failure(&fut).0.is_empty());
        assert!(!c.flag("is_closed"));
    });
}

// ----- asynchronous messages -----

#[test]
fn notifications_and_notices_reach_their_callbacks() {
    with_python(|py| {
        let c = Conn::started(py);
        let got = run(
            py,
            "notices = []\nnotifications = []\ndef on_notification(*a):\n    notifications.append(a)\n",
        );
        let notices = got.getattr("notices").unwrap();
        c.proto
            .call_method1(
                "set_callbacks",
                (
                    notices.getattr("append").unwrap(),
                    got.getattr("on_notification").unwrap(),
                ),
            )
            .unwrap();
        let mut notify = 77i32.to_be_bytes().to_vec();
        notify.extend_from_slice(&cstr("orders"));
        notify.extend_from_slice(&cstr("new"));
        c.feed(
            &[
                msg(b'A', &notify),
                msg(b'N', &fields("NOTICE", "00000", "hello there")),
            ]
            .concat(),
        );
        c.run_callbacks();
        let notifications: Vec<(i32, String, String)> =
            got.getattr("notifications").unwrap().extract().unwrap();
        assert_eq!(notifications, [(77, "orders".into(), "new".into())]);
        assert_eq!(notices.len().unwrap(), 1);
        let message: String = notices
            .get_item(0)
            .unwrap()
            .get_item("M")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(message, "hello there");
    });
}

// ----- malformed streams -----

/// Feed `bad` while a query waits: the connection must close with ProtocolError.
fn assert_fails_the_connection(bad: &[u8], expected: &str) {
    with_python(|py| {
        let c = Conn::started(py);
        let fut = c.call("simple_query", ("SELECT 1",));
        c.feed(bad);
        let (class, message) = failure(&fut);
        assert_eq!(class, "ProtocolError");
        assert!(message.contains(expected), "{message}");
        assert!(c.flag("is_closed"));
        assert!(c.transport_closed());
    });
}

#[test]
fn a_huge_length_closes_the_connection_without_reserving_it() {
    for len in [0xFFFF_FFFFu32, 0x7FFF_FFFF, 0x8000_0000] {
        let mut bad = vec![b'D'];
        bad.extend_from_slice(&len.to_be_bytes());
        assert_fails_the_connection(&bad, "invalid length");
    }
}

#[test]
fn a_length_below_four_closes_the_connection() {
    assert_fails_the_connection(b"Z\0\0\0\x02", "invalid length");
}

#[test]
fn an_unknown_message_type_closes_the_connection() {
    assert_fails_the_connection(b"!\0\0\0\x04", "unexpected message type");
}

#[test]
fn a_body_that_does_not_match_its_type_closes_the_connection() {
    // a CommandComplete whose tag has no terminating NUL
    assert_fails_the_connection(&msg(b'C', b"SELECT 1"), "malformed message");
}

#[test]
fn a_message_split_across_reads_is_read_whole() {
    with_python(|py| {
        let c = Conn::started(py);
        let fut = c.call("simple_query", ("SELECT 1",));
        let reply = [command_complete("SELECT 1"), ready(b'I')].concat();
        for (i, byte) in reply.iter().enumerate() {
            assert!(!done(&fut), "done after {i} bytes");
            c.feed(&[*byte]);
        }
        let tag: String = result(&fut).extract().unwrap();
        assert_eq!(tag, "SELECT 1");
        assert!(!c.flag("is_closed"));
    });
}

#[test]
fn the_protocol_takes_the_native_receive_path() {
    with_python(|py| {
        let c = Conn::new(py, None);
        assert!(crate::runtime::transports::native::native_receiver(c.proto.as_any()).is_some());
        assert!(crate::runtime::transports::native::native_receiver(&c.transport).is_none());
    });
}
