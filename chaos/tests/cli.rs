//! The `meridian-chaos` binary: `check` exit codes and output, `schedule` reproducibility, and
//! `proxy` driven by stdin control commands.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use meridian_chaos::{Event, History, Schedule};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-chaos");

fn history_with_duplicate() -> History {
    History {
        events: vec![
            Event::Send {
                id: "m1".into(),
                region: "us".into(),
                topic: "t".into(),
                group: None,
                seq: None,
                producer: None,
                attempt: 1,
                at_ms: 1,
            },
            Event::SendAck {
                id: "m1".into(),
                region: "us".into(),
                at_ms: 2,
            },
            Event::Receive {
                id: "m1".into(),
                region: "us".into(),
                consumer_group: "cg".into(),
                consumer: "c".into(),
                attempt: 1,
                at_ms: 3,
            },
            Event::Receive {
                id: "m1".into(),
                region: "us".into(),
                consumer_group: "cg".into(),
                consumer: "c".into(),
                attempt: 1,
                at_ms: 4,
            },
        ],
    }
}

#[tokio::test]
async fn check_prints_table_or_json_and_fails_on_violations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let mut history = history_with_duplicate();
    history
        .write_jsonl(std::fs::File::create(&path).unwrap())
        .unwrap();

    let out = Command::new(BIN)
        .args(["check", "--history"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("VIOLATIONS") && table.contains("DUPLICATE"));

    let out = Command::new(BIN)
        .args(["check", "--json", "--history"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["duplicate_count"], 1);

    // Without the duplicate the history is clean and the exit code is 0.
    history.events.pop();
    history
        .write_jsonl(std::fs::File::create(&path).unwrap())
        .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--history"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    // A missing file is an error (exit 2) with its cause.
    let out = Command::new(BIN)
        .args(["check", "--history", "/nonexistent/h.jsonl"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("No such file")
    );
}

#[tokio::test]
async fn schedule_is_reproducible_from_its_seed() {
    let args = [
        "schedule",
        "--seed",
        "17",
        "--link",
        "a",
        "--link",
        "b",
        "--duration-ms",
        "3000",
        "--step-every-ms",
        "1000",
    ];
    let one = Command::new(BIN).args(args).output().await.unwrap();
    let two = Command::new(BIN).args(args).output().await.unwrap();
    assert!(one.status.success());
    assert_eq!(one.stdout, two.stdout);
    let schedule = Schedule::from_toml_str(&String::from_utf8(one.stdout).unwrap()).unwrap();
    assert_eq!(schedule.seed, 17);
    assert_eq!(schedule.steps.len(), 8);
}

#[tokio::test]
async fn proxy_is_controlled_on_stdin() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..len], from).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("links.toml");
    std::fs::write(
        &links,
        format!(
            "[[link]]\nname = \"q\"\nkind = \"udp\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{echo_addr}\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["proxy", "--links"])
        .arg(&links)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next_line = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    let banner = next_line(&mut lines).await;
    let addr = banner.rsplit(' ').next().unwrap().to_string();
    assert!(banner.starts_with("q listening on"), "{banner}");

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    client.send(b"a").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();

    stdin
        .write_all(b"set q {\"blackhole\": true}\n")
        .await
        .unwrap();
    assert_eq!(next_line(&mut lines).await, "ok q");
    client.send(b"b").await.unwrap();
    let blocked = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await;
    assert!(blocked.is_err(), "blackholed");

    stdin.write_all(b"stats q\n").await.unwrap();
    let stats: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(stats["q"]["faults"]["blackhole"], true);
    assert_eq!(stats["q"]["stats"]["upstream"]["dropped_partition"], 1);
    assert_eq!(stats["q"]["stats"]["upstream"]["forwarded_packets"], 1);

    stdin.write_all(b"bogus\n").await.unwrap();
    assert!(
        next_line(&mut lines)
            .await
            .starts_with("error: unknown command")
    );

    stdin.write_all(b"heal all\n").await.unwrap();
    assert_eq!(next_line(&mut lines).await, "ok healed 1");
    client.send(b"c").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();

    child.kill().await.unwrap();
    echo_task.abort();
}
