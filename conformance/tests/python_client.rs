//! The official Python client, `rocketmq-python-client` 5.1.2, unchanged, against a real cell.
//!
//! The scenarios are scripts in `conformance/python/` that print what the client observed as
//! JSON lines; these tests start a cell, run a script against it and assert on the lines. The
//! interpreter is `$MERIDIAN_PYTHON`, else the virtual environment `scripts/setup.sh` creates
//! at `$HOME/.cache/meridian-venv`; without either the tests fail (they never skip silently).
//! Each script runs with a temporary `HOME`, because the client writes its logs under
//! `$HOME/logs`, and under a timeout that kills it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use meridian_cell::grpc::{AuthConfig, UserCredential};
use meridian_cell::messaging::TopicMessageType;
use meridian_conformance::{CellSpec, TestCell};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// The interpreter with `rocketmq-python-client` installed.
fn python() -> PathBuf {
    if let Some(configured) = std::env::var_os("MERIDIAN_PYTHON") {
        let path = PathBuf::from(configured);
        assert!(
            path.exists(),
            "MERIDIAN_PYTHON points at {}, which does not exist; unset it or run scripts/setup.sh",
            path.display()
        );
        return path;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let venv = home.map(|home| home.join(".cache/meridian-venv/bin/python"));
    match venv {
        Some(path) if path.exists() => path,
        _ => panic!(
            "no Python with rocketmq-python-client 5.1.2: run scripts/setup.sh (it creates \
             $HOME/.cache/meridian-venv) or set MERIDIAN_PYTHON to such an interpreter"
        ),
    }
}

/// What one script run printed.
struct Observed {
    lines: Vec<Value>,
    success: bool,
    stdout: String,
    stderr: String,
    /// The client's own log file (`$HOME/logs/rocketmq_python/rocketmq_client.log`).
    client_log: String,
}

impl Observed {
    fn events(&self, name: &str) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|line| line["event"] == name)
            .collect()
    }

    fn one(&self, name: &str) -> &Value {
        let found = self.events(name);
        assert_eq!(
            found.len(),
            1,
            "one `{name}` event expected\n{}",
            self.dump()
        );
        found[0]
    }

    /// Asserts that the script ran to the end without a client error.
    fn assert_clean(&self) {
        assert!(
            self.success && self.events("error").is_empty() && !self.events("done").is_empty(),
            "scenario did not finish cleanly\n{}",
            self.dump()
        );
    }

    fn dump(&self) -> String {
        // The client's own errors and warnings name the status codes it got back.
        let log: Vec<&str> = self
            .client_log
            .lines()
            .filter(|line| line.contains("[ERROR]") || line.contains("[WARNING]"))
            .collect();
        let tail = &log[log.len().saturating_sub(20)..];
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--- client log (last errors) ---\n{}",
            self.stdout,
            self.stderr,
            tail.join("\n")
        )
    }
}

/// Runs `conformance/python/<script>` against `cell`, killing it after `limit_s` seconds.
///
/// With `MERIDIAN_CONFORMANCE_KEEP_HOME` set, the temporary `HOME` (with the client's full log)
/// is kept and its path printed, for debugging a failure.
async fn run_script(cell: &TestCell, script: &str, args: &[&str], limit_s: u64) -> Observed {
    let mut home = tempfile::tempdir().expect("temporary HOME");
    if std::env::var_os("MERIDIAN_CONFORMANCE_KEEP_HOME").is_some() {
        home.disable_cleanup(true);
        eprintln!("{script}: HOME kept at {}", home.path().display());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut child = tokio::process::Command::new(python())
        .arg(&path)
        .arg("--endpoint")
        .arg(cell.access_point())
        .args(args)
        .env("HOME", home.path())
        .env("PYTHONUNBUFFERED", "1")
        // Keep the checkout clean: no __pycache__ beside the scripts.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("starting {}: {error}", path.display()));
    let mut stdout_pipe = child.stdout.take().expect("stdout piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let stdout_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text).await;
        text
    });
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let status = tokio::time::timeout(Duration::from_secs(limit_s), child.wait()).await;
    let timed_out = status.is_err();
    if timed_out {
        let _ = child.kill().await;
    }
    let stdout = stdout_task.await.expect("stdout reader");
    let stderr = stderr_task.await.expect("stderr reader");
    let observed = Observed {
        lines: stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect(),
        success: matches!(status, Ok(Ok(exit)) if exit.success()),
        stdout,
        stderr,
        client_log: std::fs::read_to_string(
            home.path().join("logs/rocketmq_python/rocketmq_client.log"),
        )
        .unwrap_or_default(),
    };
    assert!(
        !timed_out,
        "{script} did not finish within {limit_s} s\n{}",
        observed.dump()
    );
    observed
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {value}"))
}

fn int(value: &Value, field: &str) -> i64 {
    value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("`{field}` is not an integer in {value}"))
}

fn secured_spec(topic: &str, group: &str) -> CellSpec {
    CellSpec::default()
        .topic(topic, 2, TopicMessageType::Normal)
        .group(group, false)
        .auth(AuthConfig {
            users: vec![UserCredential {
                access_key: "py-ak".to_string(),
                secret_key: "py-sk".to_string(),
                publish_topics: vec!["*".to_string()],
                subscribe_groups: vec!["*".to_string()],
            }],
        })
}

/// Checks a `send_receive.py` run that sent and received `count` messages.
fn assert_sent_and_received(observed: &Observed, tag: &str, count: usize) {
    observed.assert_clean();
    let sent: BTreeMap<String, i64> = observed
        .events("sent")
        .into_iter()
        .map(|line| (text(line, "message_id").to_string(), int(line, "index")))
        .collect();
    assert_eq!(sent.len(), count, "distinct sends\n{}", observed.dump());
    let received = observed.events("received");
    assert_eq!(received.len(), count, "receives\n{}", observed.dump());
    for message in received {
        let id = text(message, "message_id");
        let index = sent
            .get(id)
            .unwrap_or_else(|| panic!("received unknown message {id}\n{}", observed.dump()));
        assert_eq!(text(message, "body"), format!("py body {index}"));
        assert_eq!(text(message, "tag"), tag);
        assert_eq!(
            message["keys"],
            serde_json::json!([format!("key-{index}"), "shared-key"])
        );
        assert_eq!(
            message["properties"],
            serde_json::json!({"index": index.to_string(), "origin": "python-client"})
        );
        assert_eq!(int(message, "delivery_attempt"), 1);
        assert_eq!(message["corrupted"], false, "body digest check failed");
        assert!(!text(message, "receipt_handle").is_empty());
        assert!(int(message, "born_timestamp") > 0);
    }
    assert_eq!(observed.events("acked").len(), count);
    assert_eq!(int(observed.one("empty_receive"), "count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_send_receive_ack_keeps_body_keys_tag_and_properties() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("py-normal", 4, TopicMessageType::Normal)
            .group("py-normal-group", false),
    )
    .expect("cell");
    let observed = run_script(
        &cell,
        "send_receive.py",
        &[
            "--topic",
            "py-normal",
            "--group",
            "py-normal-group",
            "--tag",
            "tag-a",
            "--count",
            "3",
        ],
        120,
    )
    .await;
    assert_sent_and_received(&observed, "tag-a", 3);
    for line in observed.events("sent") {
        assert!(
            line["transaction_id"].is_null() || line["transaction_id"] == "",
            "no transaction id for a normal message: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_change_invisible_duration_brings_the_message_back_early() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("py-invisible", 1, TopicMessageType::Normal)
            .group("py-invisible-group", false),
    )
    .expect("cell");
    let original_invisible_s = 120;
    let observed = run_script(
        &cell,
        "change_invisible.py",
        &[
            "--topic",
            "py-invisible",
            "--group",
            "py-invisible-group",
            "--invisible-s",
            &original_invisible_s.to_string(),
            "--new-invisible-s",
            "10",
            "--max-rounds",
            "20",
        ],
        180,
    )
    .await;
    observed.assert_clean();
    assert!(observed.events("missing").is_empty(), "{}", observed.dump());
    let first = observed.one("received");
    let changed = observed.one("changed");
    let again = observed.one("redelivered");
    assert_eq!(int(first, "delivery_attempt"), 1);
    assert!(
        !text(changed, "receipt_handle").is_empty(),
        "ChangeInvisibleDuration returns a usable handle (C1)"
    );
    assert_eq!(text(again, "message_id"), text(first, "message_id"));
    assert_eq!(int(again, "delivery_attempt"), 2);
    assert!(
        int(again, "received_at_ms") < int(first, "received_at_ms") + original_invisible_s * 1000,
        "the message came back only when the original invisibility ended\n{}",
        observed.dump()
    );
    assert_eq!(observed.events("acked").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_push_consumer_consumes_and_retries_a_failed_message() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("py-push", 2, TopicMessageType::Normal)
            .group("py-push-group", false),
    )
    .expect("cell");
    let observed = run_script(
        &cell,
        "push_consume.py",
        &[
            "--topic",
            "py-push",
            "--group",
            "py-push-group",
            "--count",
            "3",
            "--wait-s",
            "40",
        ],
        120,
    )
    .await;
    assert!(observed.events("error").is_empty(), "{}", observed.dump());
    let finished = observed.one("finished");
    let sent: HashMap<String, String> = observed
        .events("sent")
        .into_iter()
        .map(|line| {
            (
                text(line, "message_id").to_string(),
                int(line, "index").to_string(),
            )
        })
        .collect();
    let mut by_index: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for line in observed.events("consumed") {
        let id = text(line, "message_id");
        let index = sent
            .get(id)
            .unwrap_or_else(|| panic!("consumed unknown message {id}\n{}", observed.dump()));
        assert_eq!(text(line, "body"), format!("push body {index}"));
        assert_eq!(line["corrupted"], false);
        by_index.entry(index.clone()).or_default().push((
            text(line, "result").to_string(),
            int(line, "delivery_attempt"),
        ));
    }
    assert_eq!(
        by_index.get("0"),
        Some(&vec![
            ("FAILURE".to_string(), 1),
            ("SUCCESS".to_string(), 2)
        ]),
        "the failed message is nacked and delivered again as attempt 2\n{}",
        observed.dump()
    );
    for index in ["1", "2"] {
        assert_eq!(
            by_index.get(index),
            Some(&vec![("SUCCESS".to_string(), 1)]),
            "message {index} consumed once\n{}",
            observed.dump()
        );
    }
    assert_eq!(finished["complete"], true, "{}", observed.dump());
    assert!(
        observed.events("shutdown_stuck").is_empty(),
        "the push consumer could not shut down\n{}",
        observed.dump()
    );
    observed.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_secured_cell_accepts_the_right_secret() {
    let cell = TestCell::start(secured_spec("py-secure", "py-secure-group")).expect("cell");
    let observed = run_script(
        &cell,
        "send_receive.py",
        &[
            "--topic",
            "py-secure",
            "--group",
            "py-secure-group",
            "--access-key",
            "py-ak",
            "--secret-key",
            "py-sk",
            "--count",
            "2",
        ],
        120,
    )
    .await;
    assert_sent_and_received(&observed, "tag-a", 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_secured_cell_refuses_a_wrong_secret() {
    let cell = TestCell::start(secured_spec("py-secure", "py-secure-group")).expect("cell");
    for (what, access_key, secret_key) in [
        ("wrong secret", "py-ak", "not-the-secret"),
        ("no credentials", "", ""),
    ] {
        let observed = run_script(
            &cell,
            "send_receive.py",
            &[
                "--topic",
                "py-secure",
                "--group",
                "py-secure-group",
                "--access-key",
                access_key,
                "--secret-key",
                secret_key,
                "--count",
                "1",
                "--mode",
                "produce",
            ],
            60,
        )
        .await;
        assert!(
            !observed.success,
            "{what}: the script succeeded\n{}",
            observed.dump()
        );
        assert!(
            observed.events("sent").is_empty(),
            "{what}: a send went through"
        );
        // The client surfaces the refused route query as a generic "failed to fetch topic
        // route" error; the UNAUTHORIZED status (40100) itself only reaches its log.
        let error = observed.one("error");
        assert_eq!(text(error, "stage"), "send", "{what}\n{}", observed.dump());
        assert!(
            observed.client_log.contains("40100"),
            "{what}: the client did not see UNAUTHORIZED (40100)\n{}\n--- client log ---\n{}",
            observed.dump(),
            observed.client_log
        );
    }
    let stored: u64 = (0..2)
        .map(|queue| {
            cell.broker()
                .storage()
                .queue_range("py-secure", queue)
                .map_or(0, |range| range.next)
        })
        .sum();
    assert_eq!(stored, 0, "a refused client stored a message");
}

fn rust_option(cell: &TestCell) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(cell.access_point());
    option.set_long_polling_timeout(Duration::from_secs(10));
    option
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producer_to_rust_consumer() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("cross-py-rs", 2, TopicMessageType::Normal)
            .group("cross-py-rs-group", false),
    )
    .expect("cell");
    let observed = run_script(
        &cell,
        "send_receive.py",
        &[
            "--topic",
            "cross-py-rs",
            "--tag",
            "from-python",
            "--count",
            "2",
            "--mode",
            "produce",
        ],
        60,
    )
    .await;
    observed.assert_clean();
    let sent: BTreeMap<String, i64> = observed
        .events("sent")
        .into_iter()
        .map(|line| (text(line, "message_id").to_string(), int(line, "index")))
        .collect();
    assert_eq!(sent.len(), 2);
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut consumer_option = SimpleConsumerOption::default();
        consumer_option.set_consumer_group("cross-py-rs-group");
        consumer_option.set_topics(vec!["cross-py-rs"]);
        let mut consumer =
            SimpleConsumer::new(consumer_option, rust_option(&cell)).expect("consumer");
        consumer.start().await.expect("consumer start");
        let filter = FilterExpression::new(FilterType::Tag, "from-python");
        let mut received = Vec::new();
        for _ in 0..20 {
            if received.len() >= sent.len() {
                break;
            }
            for message in consumer
                .receive_with("cross-py-rs", &filter, 32, Duration::from_secs(15))
                .await
                .expect("receive")
            {
                consumer.ack(&message).await.expect("ack");
                received.push(message);
            }
        }
        assert_eq!(received.len(), sent.len());
        for message in &received {
            let index = sent
                .get(message.message_id())
                .expect("the Python message id round-trips");
            assert_eq!(message.body(), format!("py body {index}").as_bytes());
            assert_eq!(message.tag(), Some("from-python"));
            let mut keys = message.keys().to_vec();
            keys.sort();
            assert_eq!(keys, vec![format!("key-{index}"), "shared-key".to_string()]);
            assert_eq!(message.properties().get("index"), Some(&index.to_string()));
            assert_eq!(
                message.properties().get("origin").map(String::as_str),
                Some("python-client")
            );
        }
        consumer.shutdown().await.expect("consumer shutdown");
    })
    .await
    .expect("Rust consumer finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_producer_to_python_consumer() {
    let cell = TestCell::start(
        CellSpec::default()
            .topic("cross-rs-py", 2, TopicMessageType::Normal)
            .group("cross-rs-py-group", false),
    )
    .expect("cell");
    let count = 2;
    let mut sent = BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut producer_option = ProducerOption::default();
        producer_option.set_topics(vec!["cross-rs-py"]);
        let mut producer = Producer::new(producer_option, rust_option(&cell)).expect("producer");
        producer.start().await.expect("producer start");
        for index in 0..count {
            let message = MessageBuilder::builder()
                .set_topic("cross-rs-py")
                .set_body(format!("py body {index}").into_bytes())
                .set_tag("from-rust")
                .set_keys(vec![format!("key-{index}"), "shared-key".to_string()])
                .set_properties(HashMap::from([
                    ("index".to_string(), index.to_string()),
                    ("origin".to_string(), "python-client".to_string()),
                ]))
                .build()
                .expect("message");
            let receipt = producer.send(message).await.expect("send");
            sent.insert(receipt.message_id().to_string(), index);
        }
        producer.shutdown().await.expect("producer shutdown");
    })
    .await
    .expect("Rust producer finished in time");
    let observed = run_script(
        &cell,
        "send_receive.py",
        &[
            "--topic",
            "cross-rs-py",
            "--group",
            "cross-rs-py-group",
            "--tag",
            "from-rust",
            "--count",
            &count.to_string(),
            "--mode",
            "consume",
        ],
        90,
    )
    .await;
    observed.assert_clean();
    let received = observed.events("received");
    assert_eq!(received.len(), count, "{}", observed.dump());
    for message in received {
        // Rust message ids mix letter case; the id must come back exactly as the client made it.
        let index = sent
            .get(text(message, "message_id"))
            .unwrap_or_else(|| panic!("unknown id\n{}", observed.dump()));
        assert_eq!(text(message, "body"), format!("py body {index}"));
        assert_eq!(text(message, "tag"), "from-rust");
        assert_eq!(
            message["keys"],
            serde_json::json!([format!("key-{index}"), "shared-key"])
        );
        assert_eq!(
            message["properties"],
            serde_json::json!({"index": index.to_string(), "origin": "python-client"})
        );
        assert_eq!(message["corrupted"], false);
    }
}
