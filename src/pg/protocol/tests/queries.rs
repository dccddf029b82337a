//! Queries: rows, status, errors in the middle of a result, statement limits.

use super::*;

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
        let rows = [int4_row(5), data_row(&[None])];
        c.feed(
            &[
                execution(true, &rows, command_complete("SELECT 2")),
                ready(b'I'),
            ]
            .concat(),
        );
        let rows = result(&fut);
        assert_eq!(rows.len().unwrap(), 2);
        assert_eq!(int_at(&rows, 0), 5);
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
        let cut_short = execution(false, &[int4_row(1)], error("22012", "division by zero"));
        c.feed(&[cut_short, ready(b'I')].concat());
        let (class, message) = failure(&fut);
        assert_eq!(class, "DivisionByZeroError");
        assert!(message.contains("division by zero"));
        assert!(!c.flag("is_closed"));
        assert!(!c.transport_closed());
        // the next query runs as usual
        let fut = c.call("bind_execute", (state, (3,)));
        c.feed(
            &[
                execution(false, &[int4_row(3)], command_complete("SELECT 1")),
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
        let too_wide = data_row(&[Some(&one), Some(&one)]);
        c.feed(
            &[
                execution(false, &[too_wide], command_complete("SELECT 1")),
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
