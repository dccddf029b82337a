//! Startup: the login exchanges and what the server reports while logging in.

use super::*;

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
