//! Malformed streams close the connection with ProtocolError; split ones are read whole.

use super::*;

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
