//! Sends to `sync-quorum` topics: acknowledged only once the quorum confirms, refused (stored
//! here, not acknowledged) when it does not; `async` topics never wait.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use parking_lot::Mutex;

use super::tests::{START_MS, message, open_broker, receive_n, request};
use super::*;
use crate::messaging::clock::ManualClock;
use crate::messaging::quorum::{QuorumError, QuorumFuture, ReplicationQuorum};
use crate::messaging::topic::{GroupConfig, TopicMessageType};

/// A quorum whose answer the test sets, recording the positions it was asked for. (The
/// replicator's real quorum is tested over QUIC in the replicator crate.)
struct ScriptedQuorum {
    answer: Result<(), QuorumError>,
    asked: Mutex<Vec<u64>>,
}

impl ReplicationQuorum for ScriptedQuorum {
    fn wait_persisted(&self, log_end: u64, _timeout_ms: u64) -> QuorumFuture<'_> {
        self.asked.lock().push(log_end);
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

fn broker_with_topics() -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let broker = open_broker(dir.path(), clock as Arc<dyn Clock>);
    broker
        .create_topic("payments", 1, TopicMessageType::Normal)
        .unwrap();
    broker
        .create_topic("clicks", 1, TopicMessageType::Normal)
        .unwrap();
    broker.create_group(GroupConfig::new("g", false)).unwrap();
    broker.set_sync_quorum_topics(["payments".to_string()]);
    (dir, broker)
}

#[tokio::test]
async fn sync_quorum_sends_wait_for_the_quorum_past_their_records() {
    let (_dir, broker) = broker_with_topics();
    let quorum = Arc::new(ScriptedQuorum {
        answer: Ok(()),
        asked: Mutex::new(Vec::new()),
    });
    broker.set_replication_quorum(quorum.clone());
    broker.send(vec![message("payments", "p1")]).await.unwrap();
    broker.send(vec![message("clicks", "c1")]).await.unwrap();
    broker.send(vec![message("payments", "p2")]).await.unwrap();
    let asked = quorum.asked.lock().clone();
    assert_eq!(
        asked.len(),
        2,
        "only the sync-quorum topic waits: {asked:?}"
    );
    // Appends return before the indexer makes them findable by id.
    super::tests::wait_queue_next(&broker, "payments", 0, 2).await;
    let (p1_position, _) = broker.storage().read_by_id("p1").unwrap().unwrap();
    let (p2_position, _) = broker.storage().read_by_id("p2").unwrap().unwrap();
    assert!(
        asked[0] > p1_position && asked[1] > p2_position,
        "{asked:?}"
    );
    assert!(asked[1] > asked[0]);
}

#[tokio::test]
async fn unconfirmed_sync_quorum_sends_are_refused_but_kept() {
    let (_dir, broker) = broker_with_topics();
    // No replicator at all: refused with a clear error.
    let error = broker
        .send(vec![message("payments", "p1")])
        .await
        .unwrap_err();
    assert_eq!(error.rocketmq_code(), 50402);
    assert!(error.to_string().contains("\"payments\""), "{error}");
    broker.set_replication_quorum(Arc::new(ScriptedQuorum {
        answer: Err(QuorumError::TimedOut {
            confirmed: 0,
            required: 1,
            timeout_ms: 5_000,
        }),
        asked: Mutex::new(Vec::new()),
    }));
    let error = broker
        .send(vec![message("payments", "p2")])
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("0 of 1 other regions confirmed"),
        "{error}"
    );
    // The async topic is unaffected.
    broker.send(vec![message("clicks", "c1")]).await.unwrap();
    // Refused means "not acknowledged", not "discarded": the records stay and will replicate,
    // and consumers here see them.
    let got = receive_n(&broker, &request("g", "payments", 32, 2_000), 2).await;
    let mut ids: Vec<_> = got.iter().map(|m| m.record.message_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["p1", "p2"]);
}
