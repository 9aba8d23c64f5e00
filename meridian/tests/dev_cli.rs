//! End to end through the front door: runs the built `meridian` binary as `meridian dev` in a
//! temporary data directory, waits for `ready`, then drives the CLI as a user would: create a
//! topic through meta (the endpoints file names meta; every region applies it), list meta's
//! topics, send in us-east, receive in eu-west once replicated, region status,
//! and a scrape of a region's `/metrics` for the replication series. A second test restarts
//! `dev` on the same data directory and receives what was sent before the restart.
//!
//! `meridian dev` binds the fixed dev ports (8081-8083, 9101-9103, 9201-9203, 9301-9303), so
//! the two tests take a file lock and run one at a time even under a parallel test runner.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_meridian");
/// How long `meridian dev` may take to print `ready` (generous: debug build, slow CI disks).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a message may take to replicate to another region before the test fails.
const REPLICATION_TIMEOUT_MS: u64 = 60_000;
/// How long `meridian dev` may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `meridian dev`; killed by PID when dropped (also when the test fails).
struct Dev {
    child: Child,
    /// stdout and stderr lines, for failure messages.
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(data_dir: &Path) -> Dev {
        let mut child = Command::new(BINARY)
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info,rocksdb=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning meridian dev");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn Read + Send>,
            Box::new(stderr) as Box<dyn Read + Send>,
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut dev = Dev {
            child,
            lines,
            seen: Vec::new(),
        };
        dev.wait_ready();
        dev
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.trim() == "ready";
                    self.seen.push(line);
                    if ready {
                        return;
                    }
                }
                Err(_) => panic!(
                    "meridian dev did not print `ready` within {READY_TIMEOUT:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Stops it with SIGTERM (a clean stop) and waits, bounded.
    fn stop(mut self) {
        // SIGTERM by PID to the child this test started (not yet reaped, so the PID is ours).
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "meridian dev exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "meridian dev did not stop within {STOP_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the CLI; returns stdout, panicking with stderr when it fails or runs too long.
fn cli(args: &[&str]) -> String {
    let output = cli_output(args);
    assert!(
        output.0,
        "meridian {} failed:\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.1,
        output.2
    );
    output.1
}

/// Runs the CLI: (success, stdout, stderr).
fn cli_output(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the meridian CLI");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meridian {} ran longer than {COMMAND_TIMEOUT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a JSON command until `done` holds for its output (at most 100 runs, 100 ms apart);
/// returns the last output either way, for the caller's assertion to show.
fn eventually(args: &[&str], done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = json(&cli(args));
        if done(&last) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// `GET /metrics` over plain HTTP/1.0 (the body ends when the server closes).
fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// The dev fabric's fixed ports allow one `meridian dev` at a time on this machine.
fn exclusive() -> std::fs::File {
    let path = std::env::temp_dir().join("meridian-dev-cli-test.lock");
    let file = std::fs::File::create(path).unwrap();
    // Released when the file is closed, also when the test panics or its process dies.
    file.lock().expect("locking the dev test lock file");
    file
}

#[test]
fn dev_fabric_replicates_and_the_cli_drives_it() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let dev = Dev::start(data.path());
    let endpoints_file = data.path().join("endpoints.json");
    let endpoints = json(&std::fs::read_to_string(&endpoints_file).unwrap());
    for region in ["us-east", "eu-west", "ap-south"] {
        for key in [
            "grpc",
            "meta",
            "metrics",
            "replication",
            "tls_dir",
            "admin_token_file",
        ] {
            assert!(
                endpoints[region][key].is_string(),
                "{region}.{key} in {endpoints}"
            );
        }
    }
    assert!(dev.seen.iter().any(|line| line.contains("send_receive.py")));
    let file = endpoints_file.to_str().unwrap();

    // Create the topic in every region through the endpoints file.
    let created = json(&cli(&[
        "topic",
        "create",
        "orders",
        "--queues",
        "4",
        "--endpoints-file",
        file,
        "--json",
    ]));
    for region in ["us-east", "eu-west", "ap-south"] {
        assert_eq!(created[region]["name"], "orders", "{created}");
        assert_eq!(created[region]["type"], "normal", "{created}");
    }
    // Meta's view: the demo topics and this one, in every region, async, active-active.
    let listed = json(&cli(&["topic", "list", "--endpoints-file", file, "--json"]));
    let names: Vec<&str> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|topic| topic["name"].as_str())
        .collect();
    for name in [
        "demo-normal",
        "demo-fifo",
        "demo-delay",
        "demo-txn",
        "orders",
    ] {
        assert!(names.contains(&name), "{listed}");
    }
    let orders =
        &listed["topics"].as_array().unwrap()[names.iter().position(|n| *n == "orders").unwrap()];
    assert_eq!(
        orders["regions"],
        serde_json::json!(["ap-south", "eu-west", "us-east"])
    );
    assert_eq!(orders["replication"], "async");
    assert_eq!(orders["topology"], "active-active");

    // Send in us-east.
    let sent = json(&cli(&[
        "send",
        "--endpoint",
        "127.0.0.1:8081",
        "--topic",
        "orders",
        "--body",
        "across the sea",
        "--key",
        "order-1",
        "--json",
    ]));
    let id = sent["sent"][0]["message_id"].as_str().unwrap().to_string();

    // Receive in eu-west: the receive retries until the message arrives or the timeout ends.
    let timeout = REPLICATION_TIMEOUT_MS.to_string();
    let received = json(&cli(&[
        "receive",
        "--endpoints-file",
        file,
        "--region",
        "eu-west",
        "--topic",
        "orders",
        "--group",
        "readers",
        "--count",
        "1",
        "--timeout-ms",
        &timeout,
        "--json",
    ]));
    assert_eq!(
        received["received"][0]["message_id"],
        id.as_str(),
        "{received}"
    );
    assert_eq!(received["received"][0]["body"], "across the sea");

    // The replicated copy in eu-west names us-east as its origin.
    let found = json(&cli(&[
        "message",
        "query",
        "--id",
        &id,
        "--endpoints-file",
        file,
        "--region",
        "eu-west",
        "--json",
    ]));
    assert_eq!(found["eu-west"][0]["origin_region"], "us-east", "{found}");
    let by_key = json(&cli(&[
        "message",
        "query",
        "--topic",
        "orders",
        "--key",
        "order-1",
        "--endpoint",
        "127.0.0.1:8081",
        "--json",
    ]));
    assert_eq!(by_key["127.0.0.1:8081"][0]["message_id"], id.as_str());
    // Trace events and the replication checkpoint are written just after the operations they
    // record, so these two are polled (bounded).
    let trace = eventually(
        &[
            "message",
            "trace",
            &id,
            "--endpoints-file",
            file,
            "--region",
            "eu-west",
            "--json",
        ],
        |trace| {
            trace["eu-west"]
                .as_array()
                .is_some_and(|events| events.iter().any(|event| event["kind"] == "acked"))
        },
    );
    let kinds: Vec<&str> = trace["eu-west"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"acked"), "{trace}");

    // Lag of the group in eu-west is zero after the ack.
    let group = json(&cli(&[
        "group",
        "describe",
        "readers",
        "--topic",
        "orders",
        "--endpoints-file",
        file,
        "--region",
        "eu-west",
        "--json",
    ]));
    assert_eq!(group["eu-west"]["lag"], 0, "{group}");

    // Region status of eu-west shows what it applied from us-east.
    let status = eventually(
        &["region", "status", "--endpoints-file", file, "--json"],
        |status| {
            status["eu-west"]["replication"]["applied_through"]["us-east"]
                .as_u64()
                .is_some_and(|applied| applied > 0)
        },
    );
    assert_eq!(status["eu-west"]["region"], "eu-west");
    let applied = status["eu-west"]["replication"]["applied_through"]["us-east"]
        .as_u64()
        .unwrap();
    assert!(applied > 0, "{status}");
    assert!(
        status["eu-west"]["replication"]["counters"]["applied_records"]
            .as_u64()
            .unwrap()
            >= 1,
        "{status}"
    );

    // The metrics endpoint of eu-west carries the replication series.
    let metrics_url = endpoints["eu-west"]["metrics"].as_str().unwrap();
    let metrics = scrape(metrics_url);
    assert!(
        metrics.contains("meridian_replication_applied_records_total{region=\"eu-west\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "meridian_replication_applied_through_position{region=\"eu-west\",origin=\"us-east\"}"
        ),
        "{metrics}"
    );
    for series in [
        "meridian_meta_leader_known{region=\"eu-west\"} 1",
        "meridian_meta_agent_registered{region=\"eu-west\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    // The replication lag of each link, in messages and milliseconds (the series operators
    // alert on), for eu-west's links to both peers.
    for peer in ["us-east", "ap-south"] {
        for unit in ["messages", "ms"] {
            let series = format!("meridian_replication_lag_{unit}{{link=\"eu-west->{peer}\"}}");
            assert!(metrics.contains(&series), "{series} in {metrics}");
        }
    }

    // The front's request counts and latency histogram, and the router's view of every region.
    for series in [
        "meridian_grpc_requests_total{region=\"eu-west\",rpc=\"receive_message\"}",
        "meridian_grpc_latency_seconds_bucket{region=\"eu-west\",rpc=\"ack_message\",le=\"+Inf\"}",
        "meridian_acked_messages_total{region=\"eu-west\"}",
        "meridian_region_health{region=\"eu-west\",peer=\"us-east\"} 0",
        "meridian_write_lease_valid{region=\"eu-west\"}",
        "meridian_failover_home_moves_total{region=\"eu-west\"}",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }

    // Planned switchover of an active-standby topic: a send in another region is forwarded to
    // the home; after the switchover the new home takes writes and nothing sent is lost.
    json(&cli(&[
        "topic",
        "create",
        "ledger",
        "--queues",
        "2",
        "--topology",
        "active-standby",
        "--home",
        "us-east",
        "--endpoints-file",
        file,
        "--json",
    ]));
    let before = json(&cli(&[
        "send",
        "--endpoints-file",
        file,
        "--region",
        "eu-west",
        "--topic",
        "ledger",
        "--body",
        "before the move",
        "--json",
    ]));
    let before_id = before["sent"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let moved = json(&cli(&[
        "topic",
        "switchover",
        "ledger",
        "--to",
        "eu-west",
        "--endpoints-file",
        file,
        "--json",
    ]));
    assert_eq!(moved["from"], "us-east", "{moved}");
    assert_eq!(moved["to"], "eu-west", "{moved}");
    assert!(moved["write_pause_ms"].is_u64(), "{moved}");
    let listed = eventually(
        &["topic", "list", "--endpoints-file", file, "--json"],
        |listed| {
            listed["topics"].as_array().is_some_and(|topics| {
                topics
                    .iter()
                    .any(|topic| topic["name"] == "ledger" && topic["home"] == "eu-west")
            })
        },
    );
    assert!(listed["topics"].is_array());
    let after = json(&cli(&[
        "send",
        "--endpoints-file",
        file,
        "--region",
        "ap-south",
        "--topic",
        "ledger",
        "--body",
        "after the move",
        "--json",
    ]));
    let after_id = after["sent"][0]["message_id"].as_str().unwrap().to_string();
    // The new home holds both: the one written in us-east (replicated before the move
    // committed) and the one written after it.
    let ledger = json(&cli(&[
        "receive",
        "--endpoints-file",
        file,
        "--region",
        "eu-west",
        "--topic",
        "ledger",
        "--group",
        "auditors",
        "--count",
        "2",
        "--timeout-ms",
        &timeout,
        "--json",
    ]));
    let mut got: Vec<&str> = ledger["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["message_id"].as_str())
        .collect();
    got.sort_unstable();
    let mut want = vec![before_id.as_str(), after_id.as_str()];
    want.sort_unstable();
    assert_eq!(got, want, "{ledger}");

    // Errors name the flag and the fix, and never panic.
    let (ok, _, stderr) = cli_output(&["topic", "list", "--endpoint", "127.0.0.1"]);
    assert!(!ok);
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    dev.stop();
}

#[test]
fn dev_restart_on_the_same_data_dir_keeps_messages() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let dev = Dev::start(data.path());
    let sent = json(&cli(&[
        "send",
        "--endpoint",
        "127.0.0.1:8081",
        "--topic",
        "kept",
        "--body",
        "still here",
        "--json",
    ]));
    let id = sent["sent"][0]["message_id"].as_str().unwrap().to_string();
    dev.stop();

    let dev = Dev::start(data.path());
    assert!(
        dev.seen
            .iter()
            .any(|line| line.contains("replication certificates loaded from")),
        "the restart should reuse the certificates: {}",
        dev.seen.join("\n")
    );
    let timeout = REPLICATION_TIMEOUT_MS.to_string();
    // In the region it was sent to, and (replicated before or after the restart) in another.
    // One group per region: consumer progress replicates too, so an ack of a shared group in
    // one region would take the message away from that group in the other.
    for (endpoint, group) in [
        ("127.0.0.1:8081", "after-restart-us"),
        ("127.0.0.3:8083", "after-restart-ap"),
    ] {
        let received = json(&cli(&[
            "receive",
            "--endpoint",
            endpoint,
            "--topic",
            "kept",
            "--group",
            group,
            "--count",
            "1",
            "--timeout-ms",
            &timeout,
            "--json",
        ]));
        assert_eq!(
            received["received"][0]["message_id"],
            id.as_str(),
            "{received}"
        );
        assert_eq!(received["received"][0]["body"], "still here");
    }
    dev.stop();
}
