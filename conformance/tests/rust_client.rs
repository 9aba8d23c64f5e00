//! The official Rust client, `rocketmq` 5.0.0 from crates.io, unchanged, against a real cell.
//!
//! Each test starts its own cell on `127.0.0.1:0`, drives the client through one scenario of
//! `proto/CONFORMANCE.md` and asserts on what the client hands back. Every test is bounded by a
//! tokio timeout, so a server that makes the client hang fails instead of stalling the suite.
//! 5.0.0 has no `change_invisible_duration` (only `receive`, `receive_with` and `ack`), so the
//! invisibility tests use the receive-time invisible duration and its expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_cell::grpc::{AuthConfig, UserCredential};
use meridian_cell::messaging::TopicMessageType;
use meridian_conformance::{CellSpec, TestCell};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::error::{ClientError, ErrorKind};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};

/// Long poll the client asks for. The client's deadline equals it, so the server must answer
/// within it (CONFORMANCE R4); 10 s keeps empty receives short.
const LONG_POLL: Duration = Duration::from_secs(10);
/// The shortest invisible duration the cell accepts on receive (CONFORMANCE §7).
const MIN_INVISIBLE: Duration = Duration::from_secs(10);
/// Most receive calls a collecting loop makes before giving up.
const MAX_RECEIVE_ROUNDS: usize = 20;

/// Runs a scenario under a timeout so that a hanging client fails the test.
async fn bounded<F: Future<Output = ()>>(limit_s: u64, scenario: F) {
    tokio::time::timeout(Duration::from_secs(limit_s), scenario)
        .await
        .unwrap_or_else(|_| panic!("scenario did not finish within {limit_s} s"));
}

fn client_option(cell: &TestCell) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(cell.access_point());
    option.set_long_polling_timeout(LONG_POLL);
    option
}

fn signed_option(cell: &TestCell, access_key: &str, secret_key: &str) -> ClientOption {
    let mut option = client_option(cell);
    option.set_access_key(access_key);
    option.set_secret_key(secret_key);
    option
}

async fn producer(option: ClientOption, topic: &str) -> Producer {
    let mut producer_option = ProducerOption::default();
    producer_option.set_topics(vec![topic]);
    let mut producer = Producer::new(producer_option, option).expect("producer");
    producer.start().await.expect("producer start");
    producer
}

async fn start_consumer(option: ClientOption, group: &str, topic: &str) -> SimpleConsumer {
    let mut consumer_option = SimpleConsumerOption::default();
    consumer_option.set_consumer_group(group);
    consumer_option.set_topics(vec![topic]);
    let mut consumer = SimpleConsumer::new(consumer_option, option).expect("consumer");
    consumer.start().await.expect("consumer start");
    consumer
}

fn all_tags() -> FilterExpression {
    FilterExpression::new(FilterType::Tag, "*")
}

/// Receives until `want` messages arrived (or the rounds run out), acking each unless `ack` is
/// false. Returns what arrived, in arrival order.
async fn collect(
    consumer: &SimpleConsumer,
    topic: &str,
    filter: &FilterExpression,
    want: usize,
    ack: bool,
) -> Vec<MessageView> {
    let mut received = Vec::new();
    for _ in 0..MAX_RECEIVE_ROUNDS {
        if received.len() >= want {
            break;
        }
        let batch = consumer
            .receive_with(topic, filter, 32, MIN_INVISIBLE)
            .await
            .expect("receive");
        for message in batch {
            if ack {
                consumer.ack(&message).await.expect("ack");
            }
            received.push(message);
        }
    }
    received
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
}

/// The status code the server put in its response, as the client reports it.
fn server_code(error: &ClientError) -> Option<&str> {
    error
        .context()
        .iter()
        .find(|(key, _)| *key == "code")
        .map(|(_, value)| value.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_messages_keep_body_keys_tag_and_properties() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("rs-normal", 4, TopicMessageType::Normal)
            .group("rs-normal-group", false)
            .group("rs-normal-all", false),
    )
    .expect("cell");
    bounded(90, async {
        let producer = producer(client_option(&cell), "rs-normal").await;
        let mut sent = BTreeMap::new();
        for index in 0..3 {
            let body = format!("normal body {index}").into_bytes();
            let message = MessageBuilder::builder()
                .set_topic("rs-normal")
                .set_body(body.clone())
                .set_tag("tag-a")
                .set_keys(vec![format!("key-{index}"), "shared-key".to_string()])
                .set_properties(HashMap::from([
                    ("index".to_string(), index.to_string()),
                    ("origin".to_string(), "rust-client".to_string()),
                ]))
                .build()
                .expect("message");
            let receipt = producer.send(message).await.expect("send");
            assert!(!receipt.message_id().is_empty(), "send receipt has an id");
            assert!(
                receipt.transaction_id().is_empty(),
                "no transaction id for a normal message"
            );
            sent.insert(receipt.message_id().to_string(), (index, body));
        }
        // A message with another tag: the consumer's filter must keep it out.
        let other = MessageBuilder::builder()
            .set_topic("rs-normal")
            .set_body(b"filtered out".to_vec())
            .set_tag("tag-b")
            .build()
            .expect("message");
        let other_id = producer
            .send(other)
            .await
            .expect("send")
            .message_id()
            .to_string();

        let consumer = start_consumer(client_option(&cell), "rs-normal-group", "rs-normal").await;
        let filter = FilterExpression::new(FilterType::Tag, "tag-a");
        let received = collect(&consumer, "rs-normal", &filter, sent.len(), true).await;
        assert_eq!(
            received.len(),
            sent.len(),
            "every tag-a message arrives once"
        );
        for message in &received {
            let (index, body) = sent
                .get(message.message_id())
                .unwrap_or_else(|| panic!("unexpected message {}", message.message_id()));
            assert_eq!(message.topic(), "rs-normal");
            assert_eq!(message.body(), body.as_slice());
            assert_eq!(message.tag(), Some("tag-a"));
            let keys: HashSet<&str> = message.keys().iter().map(String::as_str).collect();
            let expected_key = format!("key-{index}");
            assert_eq!(
                keys,
                HashSet::from([expected_key.as_str(), "shared-key"]),
                "keys"
            );
            assert_eq!(
                message.properties().get("index"),
                Some(&index.to_string()),
                "user property `index`"
            );
            assert_eq!(
                message.properties().get("origin").map(String::as_str),
                Some("rust-client")
            );
            assert_eq!(message.delivery_attempt(), 1, "first delivery");
            assert!(message.born_timestamp() > 0, "born timestamp carried");
            assert!(!message.born_host().is_empty(), "born host carried");
            assert_eq!(message.message_group(), None);
        }
        // Nothing else matches tag-a: the next receive is empty, and never the tag-b message.
        let rest = consumer
            .receive_with("rs-normal", &filter, 32, MIN_INVISIBLE)
            .await
            .expect("empty receive");
        assert!(
            rest.iter().all(|message| message.message_id() != other_id),
            "a tag-b message passed a tag-a filter"
        );
        assert!(rest.is_empty(), "no further tag-a messages: {rest:?}");
        // The `*` filter of another group sees the tag-b message too.
        let everything = start_consumer(client_option(&cell), "rs-normal-all", "rs-normal").await;
        let all = collect(&everything, "rs-normal", &all_tags(), sent.len() + 1, true).await;
        assert!(
            all.iter().any(|message| message.message_id() == other_id),
            "a `*` filter receives every tag"
        );
        consumer.shutdown().await.expect("consumer shutdown");
        everything.shutdown().await.expect("consumer shutdown");
        producer.shutdown().await.expect("producer shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_messages_arrive_in_order_per_message_group() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("rs-fifo", 4, TopicMessageType::Fifo)
            .group("rs-fifo-group", true),
    )
    .expect("cell");
    bounded(120, async {
        let producer = producer(client_option(&cell), "rs-fifo").await;
        let groups = ["order-a", "order-b", "order-c"];
        let per_group = 4;
        // Interleaved, so that order within a group is not an accident of sending them together.
        for seq in 0..per_group {
            for group in groups {
                let message = MessageBuilder::fifo_message_builder(
                    "rs-fifo",
                    format!("{group}:{seq}").into_bytes(),
                    group,
                )
                .set_properties(HashMap::from([("seq", seq.to_string())]))
                .build()
                .expect("message");
                producer.send(message).await.expect("send");
            }
        }
        let consumer = start_consumer(client_option(&cell), "rs-fifo-group", "rs-fifo").await;
        let want = groups.len() * per_group;
        let received = collect(&consumer, "rs-fifo", &all_tags(), want, true).await;
        assert_eq!(received.len(), want, "every FIFO message arrives once");
        let mut order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for message in &received {
            let group = message
                .message_group()
                .expect("FIFO message keeps its group");
            let seq: usize = message
                .properties()
                .get("seq")
                .expect("seq property")
                .parse()
                .expect("numeric seq");
            assert_eq!(
                message.body(),
                format!("{group}:{seq}").as_bytes(),
                "body matches its group and position"
            );
            order.entry(group.to_string()).or_default().push(seq);
        }
        for group in groups {
            assert_eq!(
                order.get(group),
                Some(&(0..per_group).collect::<Vec<_>>()),
                "message group {group} arrived in send order"
            );
        }
        consumer.shutdown().await.expect("consumer shutdown");
        producer.shutdown().await.expect("producer shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_message_is_not_delivered_before_its_timestamp() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("rs-delay", 2, TopicMessageType::Delay)
            .group("rs-delay-group", false),
    )
    .expect("cell");
    bounded(90, async {
        let producer = producer(client_option(&cell), "rs-delay").await;
        let consumer = start_consumer(client_option(&cell), "rs-delay-group", "rs-delay").await;
        // The protocol carries whole seconds; 3 s ahead is well past any send latency.
        let deliver_at_s = (now_ms() / 1000) as i64 + 3;
        let message =
            MessageBuilder::delay_message_builder("rs-delay", b"later".to_vec(), deliver_at_s)
                .build()
                .expect("message");
        let receipt = producer.send(message).await.expect("send");
        let mut arrival = None;
        for _ in 0..MAX_RECEIVE_ROUNDS {
            let batch = consumer
                .receive_with("rs-delay", &all_tags(), 32, MIN_INVISIBLE)
                .await
                .expect("receive");
            let received_at_ms = now_ms();
            if let Some(message) = batch.into_iter().next() {
                consumer.ack(&message).await.expect("ack");
                arrival = Some((message, received_at_ms));
                break;
            }
        }
        let (message, received_at_ms) = arrival.expect("the delay message arrives");
        assert_eq!(message.message_id(), receipt.message_id());
        assert_eq!(message.body(), b"later");
        assert_eq!(
            message.delivery_timestamp(),
            Some(deliver_at_s),
            "delivery timestamp echoed"
        );
        assert!(
            received_at_ms >= deliver_at_s as u128 * 1000,
            "delivered at {received_at_ms} ms, before its delivery time {deliver_at_s} s"
        );
        consumer.shutdown().await.expect("consumer shutdown");
        producer.shutdown().await.expect("producer shutdown");
    })
    .await;
}

/// What the test's transaction checker answers, per message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Commit,
    Rollback,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_directly_and_through_check_back() {
    // One queue: a message committed later lands after every earlier commit, so consuming up
    // to a marker proves what was (and was not) committed before it.
    let cell = TestCell::start(
        CellSpec::default()
            .topic("rs-txn", 1, TopicMessageType::Transaction)
            .group("rs-txn-group", false)
            .transaction_check_delay_ms(1_000),
    )
    .expect("cell");
    bounded(120, async {
        let decisions: Arc<Mutex<HashMap<String, Decision>>> = Arc::default();
        let (checks_tx, mut checks_rx) = tokio::sync::mpsc::unbounded_channel();
        let checker_decisions = Arc::clone(&decisions);
        let checker = move |transaction_id: String, message: MessageView| {
            let decision = checker_decisions
                .lock()
                .expect("decisions")
                .get(message.message_id())
                .copied();
            let _ = checks_tx.send((
                message.message_id().to_string(),
                transaction_id,
                message.topic().to_string(),
                message.body().to_vec(),
                decision,
            ));
            match decision {
                Some(Decision::Commit) => TransactionResolution::COMMIT,
                Some(Decision::Rollback) => TransactionResolution::ROLLBACK,
                // Not registered yet (the check raced the send): ask again later.
                None => TransactionResolution::UNKNOWN,
            }
        };
        let mut producer_option = ProducerOption::default();
        // The cell checks back with producers that publish to the topic (CONFORMANCE M5).
        producer_option.set_topics(vec!["rs-txn"]);
        let mut producer = Producer::new_transaction_producer(
            producer_option,
            client_option(&cell),
            Box::new(checker),
        )
        .expect("transaction producer");
        producer.start().await.expect("producer start");
        let half = |body: &str| {
            MessageBuilder::transaction_message_builder("rs-txn", body.as_bytes().to_vec())
                .build()
                .expect("message")
        };

        let direct = producer
            .send_transaction_message(half("direct commit"))
            .await
            .expect("send half");
        assert!(
            !direct.transaction_id().is_empty(),
            "transaction id returned"
        );
        let direct_id = direct.message_id().to_string();
        decisions
            .lock()
            .expect("decisions")
            .insert(direct_id.clone(), Decision::Commit);
        direct.commit().await.expect("commit");

        let checked_commit = producer
            .send_transaction_message(half("committed on check"))
            .await
            .expect("send half");
        let commit_id = checked_commit.message_id().to_string();
        let commit_txn = checked_commit.transaction_id().to_string();
        let checked_rollback = producer
            .send_transaction_message(half("rolled back on check"))
            .await
            .expect("send half");
        let rollback_id = checked_rollback.message_id().to_string();
        {
            let mut decisions = decisions.lock().expect("decisions");
            decisions.insert(commit_id.clone(), Decision::Commit);
            decisions.insert(rollback_id.clone(), Decision::Rollback);
        }
        // Neither is ended by the producer: the cell must ask through the Telemetry stream.
        drop((checked_commit, checked_rollback));

        let mut resolved = HashSet::new();
        while resolved.len() < 2 {
            let (message_id, transaction_id, topic, body, decision) =
                checks_rx.recv().await.expect("checker channel open");
            assert_eq!(topic, "rs-txn", "check carries the topic");
            assert_ne!(
                message_id, direct_id,
                "a committed transaction is not checked"
            );
            if message_id == commit_id {
                assert_eq!(
                    transaction_id, commit_txn,
                    "check carries the transaction id"
                );
                assert_eq!(body, b"committed on check");
            } else {
                assert_eq!(
                    message_id, rollback_id,
                    "only open transactions are checked"
                );
                assert_eq!(body, b"rolled back on check");
            }
            if decision.is_some() {
                resolved.insert(message_id);
            }
        }
        // The answers travel as EndTransaction calls; wait until the cell applied both.
        while cell.broker().open_transactions() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let marker = producer
            .send_transaction_message(half("marker"))
            .await
            .expect("send half");
        let marker_id = marker.message_id().to_string();
        marker.commit().await.expect("commit marker");

        let consumer = start_consumer(client_option(&cell), "rs-txn-group", "rs-txn").await;
        let mut bodies = BTreeMap::new();
        for _ in 0..MAX_RECEIVE_ROUNDS {
            if bodies.contains_key(&marker_id) {
                break;
            }
            for message in consumer
                .receive_with("rs-txn", &all_tags(), 32, MIN_INVISIBLE)
                .await
                .expect("receive")
            {
                consumer.ack(&message).await.expect("ack");
                bodies.insert(message.message_id().to_string(), message.body().to_vec());
            }
        }
        assert_eq!(
            bodies.get(&direct_id).map(Vec::as_slice),
            Some(&b"direct commit"[..])
        );
        assert_eq!(
            bodies.get(&commit_id).map(Vec::as_slice),
            Some(&b"committed on check"[..])
        );
        assert!(bodies.contains_key(&marker_id), "marker arrives");
        assert!(
            !bodies.contains_key(&rollback_id),
            "a rolled-back transaction became visible"
        );
        assert_eq!(
            bodies.len(),
            3,
            "exactly the committed messages: {bodies:?}"
        );
        consumer.shutdown().await.expect("consumer shutdown");
        producer.shutdown().await.expect("producer shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_message_stays_gone_and_unacked_one_returns_with_attempt_2() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("rs-redeliver", 1, TopicMessageType::Normal)
            .group("rs-redeliver-group", false),
    )
    .expect("cell");
    bounded(120, async {
        let producer = producer(client_option(&cell), "rs-redeliver").await;
        let consumer =
            start_consumer(client_option(&cell), "rs-redeliver-group", "rs-redeliver").await;
        // Empty topic: the long poll ends with MESSAGE_NOT_FOUND, which the client turns into
        // an empty list (not an error, not DEADLINE_EXCEEDED).
        let empty = consumer
            .receive_with("rs-redeliver", &all_tags(), 32, MIN_INVISIBLE)
            .await
            .expect("empty receive");
        assert!(empty.is_empty());

        let mut ids = Vec::new();
        for body in ["acked", "left unacked"] {
            let message = MessageBuilder::builder()
                .set_topic("rs-redeliver")
                .set_body(body.as_bytes().to_vec())
                .build()
                .expect("message");
            ids.push(
                producer
                    .send(message)
                    .await
                    .expect("send")
                    .message_id()
                    .to_string(),
            );
        }
        let first = collect(&consumer, "rs-redeliver", &all_tags(), 2, false).await;
        assert_eq!(first.len(), 2, "both messages arrive");
        for message in &first {
            assert_eq!(message.delivery_attempt(), 1);
            if message.message_id() == ids[0] {
                consumer.ack(message).await.expect("ack");
            }
        }
        // Both were received with the same invisible duration; only the unacked one may come
        // back once it expires, and it must count as the second attempt.
        let mut redelivered = None;
        for _ in 0..MAX_RECEIVE_ROUNDS {
            let batch = consumer
                .receive_with("rs-redeliver", &all_tags(), 32, MIN_INVISIBLE)
                .await
                .expect("receive");
            assert!(
                batch.iter().all(|message| message.message_id() != ids[0]),
                "an acked message was delivered again"
            );
            if let Some(message) = batch.into_iter().next() {
                redelivered = Some(message);
                break;
            }
        }
        let message = redelivered.expect("the unacked message comes back");
        assert_eq!(message.message_id(), ids[1]);
        assert_eq!(message.body(), b"left unacked");
        assert_eq!(message.delivery_attempt(), 2, "second delivery attempt");
        consumer.ack(&message).await.expect("ack redelivery");
        consumer.shutdown().await.expect("consumer shutdown");
        producer.shutdown().await.expect("producer shutdown");
    })
    .await;
}

fn secured_cell() -> TestCell {
    TestCell::start(
        CellSpec::default()
            .topic("rs-secure", 1, TopicMessageType::Normal)
            .group("rs-secure-group", false)
            .auth(AuthConfig {
                users: vec![UserCredential {
                    access_key: "conformance-ak".to_string(),
                    secret_key: "conformance-sk".to_string(),
                    publish_topics: vec!["*".to_string()],
                    subscribe_groups: vec!["*".to_string()],
                }],
            }),
    )
    .expect("cell")
}

/// Starts a producer and sends once; returns the first error the client surfaces.
async fn refused(option: ClientOption) -> ClientError {
    let mut producer_option = ProducerOption::default();
    producer_option.set_topics(vec!["rs-secure"]);
    let mut producer = Producer::new(producer_option, option).expect("producer");
    if let Err(error) = producer.start().await {
        return error;
    }
    let message = MessageBuilder::builder()
        .set_topic("rs-secure")
        .set_body(b"must not be stored".to_vec())
        .build()
        .expect("message");
    producer
        .send(message)
        .await
        .expect_err("a send with bad credentials succeeded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_cell_refuses_wrong_secret_and_missing_credentials() {
    let cell = secured_cell();
    bounded(60, async {
        for (what, option) in [
            (
                "wrong secret",
                signed_option(&cell, "conformance-ak", "not-the-secret"),
            ),
            (
                "unknown access key",
                signed_option(&cell, "someone-else", "conformance-sk"),
            ),
            ("no credentials", client_option(&cell)),
        ] {
            let error = refused(option).await;
            assert_eq!(error.kind(), &ErrorKind::Server, "{what}: {error:?}");
            assert_eq!(
                server_code(&error),
                Some("UNAUTHORIZED"),
                "{what}: {error:?}"
            );
        }
        let stored = cell
            .broker()
            .storage()
            .queue_range("rs-secure", 0)
            .map_or(0, |range| range.next);
        assert_eq!(stored, 0, "a refused client stored a message");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_cell_accepts_the_right_secret() {
    let cell = secured_cell();
    bounded(60, async {
        let option = signed_option(&cell, "conformance-ak", "conformance-sk");
        let producer = producer(option.clone(), "rs-secure").await;
        let message = MessageBuilder::builder()
            .set_topic("rs-secure")
            .set_body(b"signed".to_vec())
            .set_tag("signed")
            .build()
            .expect("message");
        let receipt = producer.send(message).await.expect("signed send");
        let consumer = start_consumer(option, "rs-secure-group", "rs-secure").await;
        let received = collect(&consumer, "rs-secure", &all_tags(), 1, true).await;
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].message_id(), receipt.message_id());
        assert_eq!(received[0].body(), b"signed");
        consumer.shutdown().await.expect("consumer shutdown");
        producer.shutdown().await.expect("producer shutdown");
    })
    .await;
}
