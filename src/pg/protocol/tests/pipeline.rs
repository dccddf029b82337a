//! Pipelines: each item's reply settles its own future; Syncs delimit failures.

use super::*;

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn independent_statements_fail_alone_and_the_pipeline_ends_at_its_last_sync() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let done = c.call("pipeline_begin", (true,));
        let a = c.call(
            "pipeline_execute",
            (state.clone(), (1,), 0, py.None(), true, 0),
        );
        let b = c.call(
            "pipeline_execute",
            (state.clone(), (2,), 0, py.None(), true, 1),
        );
        let (a, b) = (a.get_item(0).unwrap(), b.get_item(0).unwrap());
        assert!(
            c.take_writes().is_empty(),
            "small pipelines are sent at the end"
        );
        c.call("pipeline_end", ());
        let sent = c.take_writes();
        assert_eq!(count(&sent, &msg(b'S', b"")), 2, "a Sync per statement");
        c.feed(
            &[
                execution(true, &[], error("22012", "division by zero")),
                ready(b'I'),
            ]
            .concat(),
        );
        let (class, _) = failure(&a);
        assert_eq!(class, "DivisionByZeroError");
        assert!(!done
            .call_method0("done")
            .unwrap()
            .extract::<bool>()
            .unwrap());
        assert!(c.flag("is_busy"));
        c.feed(
            &[
                execution(true, &[int4_row(2)], command_complete("SELECT 1")),
                ready(b'I'),
            ]
            .concat(),
        );
        assert_eq!(int_at(&result(&b), 0), 2);
        assert!(result(&done).is_none());
        assert!(!c.flag("is_busy"));
    });
}

#[test]
fn one_sync_pipeline_skips_what_follows_a_failure_naming_it() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let done = c.call("pipeline_begin", (false,));
        let futs: Vec<_> = (0..3)
            .map(|i| {
                c.call(
                    "pipeline_execute",
                    (state.clone(), (i,), 0, py.None(), false, i),
                )
                .get_item(0)
                .unwrap()
            })
            .collect();
        c.call("pipeline_end", ());
        let sent = c.take_writes();
        assert_eq!(
            count(&sent, &msg(b'S', b"")),
            1,
            "one Sync for the whole pipeline"
        );
        c.feed(
            &[
                execution(true, &[], command_complete("UPDATE 1")),
                execution(true, &[], error("23505", "duplicate key")),
                ready(b'I'),
            ]
            .concat(),
        );
        let tag: String = result(&futs[0]).extract().unwrap();
        assert_eq!(tag, "UPDATE 1");
        assert_eq!(failure(&futs[1]).0, "UniqueViolationError");
        let (class, message) = failure(&futs[2]);
        assert_eq!(class, "InterfaceError");
        assert!(
            message
                .contains("pipeline statement #3 was skipped: pipeline statement #2 failed first"),
            "{message}"
        );
        assert!(result(&done).is_none());
        assert!(!c.flag("is_busy"));
    });
}

#[test]
fn a_stopped_pipeline_drops_what_was_not_sent_and_a_lost_connection_fails_the_rest() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let whole = c.call("pipeline_begin", (false,));
        let a = c
            .call(
                "pipeline_execute",
                (state.clone(), (1,), 0, py.None(), true, 0),
            )
            .get_item(0)
            .unwrap();
        c.call("pipeline_flush", ());
        let sent = c.take_writes();
        assert!(
            sent.ends_with(&msg(b'H', b"")),
            "Flush, not Sync, mid-pipeline"
        );
        let b = c
            .call(
                "pipeline_execute",
                (state.clone(), (2,), 0, py.None(), true, 1),
            )
            .get_item(0)
            .unwrap();
        c.call("pipeline_end", (true, true, "the caller stopped"));
        let (class, message) = failure(&b);
        assert_eq!(class, "InterfaceError");
        assert!(
            message.contains("#2 was not sent: the caller stopped"),
            "{message}"
        );
        let sent = c.take_writes();
        assert!(
            contains(&sent, b"__asyncpg_rs_abort__"),
            "rolled back server-side"
        );
        assert!(sent.ends_with(&msg(b'S', b"")));
        c.call("abort", ());
        assert_eq!(failure(&a).0, "ConnectionDoesNotExistError");
        assert_eq!(failure(&whole).0, "ConnectionDoesNotExistError");
    });
}

#[test]
fn a_bad_argument_names_the_statement_and_leaves_the_pipeline_open() {
    with_python(|py| {
        let c = Conn::started(py);
        let state = c.prepared();
        let whole = c.call("pipeline_begin", (true,));
        let err = c
            .proto
            .call_method1(
                "pipeline_execute",
                (state.clone(), ("x",), 0, py.None(), true, 6),
            )
            .unwrap_err();
        let message = err.value(py).to_string();
        assert!(
            message.contains("query argument $1 of pipeline statement #7"),
            "{message}"
        );
        let ok = c
            .call("pipeline_execute", (state, (1,), 0, py.None(), true, 7))
            .get_item(0)
            .unwrap();
        c.call("pipeline_end", ());
        let sent = c.take_writes();
        assert_eq!(
            count(&sent, b"B\0"),
            1,
            "only the good statement was encoded"
        );
        c.feed(
            &[
                execution(true, &[], command_complete("SELECT 0")),
                ready(b'I'),
            ]
            .concat(),
        );
        assert_eq!(result(&ok).len().unwrap(), 0);
        assert!(result(&whole).is_none());
        assert!(!c.flag("is_busy"));
    });
}
