//! Messages the server sends on its own: notifications and notices.

use super::*;

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
