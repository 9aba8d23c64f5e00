//! The `TestCell` fixture itself: it listens once `start` returns, reports set-up errors
//! instead of hanging, and stops cleanly.

use meridian_cell::messaging::TopicMessageType;
use meridian_conformance::{CellSpec, ConformanceError, TestCell};

#[test]
fn cell_listens_once_started_and_stops_cleanly() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("fixture", 2, TopicMessageType::Normal)
            .group("fixture-group", false),
    )
    .expect("cell");
    assert!(cell.endpoint().ip().is_loopback());
    assert_eq!(cell.access_point(), cell.endpoint().to_string());
    std::net::TcpStream::connect(cell.endpoint()).expect("the listener accepts connections");
    let topic = cell.broker().topic("fixture").expect("topic created");
    assert_eq!(topic.queue_count, 2);
    cell.broker().group("fixture-group").expect("group created");
    cell.stop().expect("clean stop");
}

#[test]
fn a_refused_topic_fails_start_with_the_broker_error() {
    let started =
        TestCell::start(CellSpec::default().topic("no-queues", 0, TopicMessageType::Normal));
    assert!(
        matches!(started, Err(ConformanceError::Messaging(_))),
        "{started:?}"
    );
}
