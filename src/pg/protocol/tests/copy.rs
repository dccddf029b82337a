//! COPY out and in.

use super::*;

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
