//! `meridian start --config FILE`, one region per process: three processes on 127.0.0.1-3
//! (every port picked free by the OS, so this test does not collide with the fixed dev ports of
//! `dev_cli.rs`) form one meta Raft group. Topics are created through meta with the CLI and
//! reach the cells of their regions; a message sent in one region is received in another. Then
//! one region's process is killed with SIGKILL (by its PID): the other two keep serving (meta
//! writes, sends, receives), and the killed region restarted on the same data rejoins and
//! catches up on what meta decided while it was down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian_pki::DevCa;

const BINARY: &str = env!("CARGO_BIN_EXE_meridian");
/// How long a region may take to print `ready` (debug build, a meta election).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one CLI command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a region may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const REGIONS: [(&str, &str); 3] = [
    ("east", "127.0.0.1"),
    ("north", "127.0.0.2"),
    ("west", "127.0.0.3"),
];

/// One `meridian start` process; killed by PID when dropped.
struct Region {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Region {
    fn start(config: &Path) -> Region {
        let mut child = Command::new(BINARY)
            .args(["start", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,rocksdb=warn,openraft=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning meridian start");
        let (sender, lines) = mpsc::channel();
        let streams = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        ];
        for stream in streams {
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
        Region {
            child,
            lines,
            seen: Vec::new(),
        }
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
                    "meridian start did not print `ready` within {READY_TIMEOUT:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGKILL by the PID of the child this test started, then reap it.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and a bounded wait for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "meridian start exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "no stop within {STOP_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_tcp_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ports {
    grpc: u16,
    meta: u16,
    replication: u16,
    metrics: u16,
}

/// Writes the certificates, the admin token, one config per region and an endpoints.json the
/// CLI reads; returns the config paths and the endpoints file.
fn write_fabric(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let ca = DevCa::generate("meridian start test CA").unwrap();
    let token = dir.join("admin-token");
    std::fs::write(&token, "start-test-admin-token\n").unwrap();
    let ports: Vec<Ports> = REGIONS
        .iter()
        .map(|(_, ip)| Ports {
            grpc: free_tcp_port(ip),
            meta: free_tcp_port(ip),
            replication: free_udp_port(ip),
            metrics: free_tcp_port(ip),
        })
        .collect();
    let mut regions_toml = String::new();
    let mut endpoints = serde_json::Map::new();
    for ((name, ip), ports) in REGIONS.iter().zip(&ports) {
        let pki = dir.join("pki").join(name);
        ca.issue(name, &[name.to_string(), ip.to_string()])
            .unwrap()
            .write_to(&pki)
            .unwrap();
        regions_toml.push_str(&format!(
            "[[regions]]\nname = \"{name}\"\nzone = \"{name}-1a\"\ngrpc = \"{ip}:{}\"\n\
             meta = \"{ip}:{}\"\nreplication = \"{ip}:{}\"\nmetrics = \"{ip}:{}\"\n\
             data_dir = \"{}\"\n\n",
            ports.grpc,
            ports.meta,
            ports.replication,
            ports.metrics,
            dir.join("data").join(name).display()
        ));
        endpoints.insert(
            name.to_string(),
            serde_json::json!({
                "grpc": format!("{ip}:{}", ports.grpc),
                "meta": format!("{ip}:{}", ports.meta),
                "tls_dir": pki,
                "admin_token_file": token,
            }),
        );
    }
    let links = "[[links]]\nfrom = \"east\"\nto = \"north\"\nlatency_ms = 1\n\n\
                 [[links]]\nfrom = \"north\"\nto = \"west\"\nlatency_ms = 1\n\n\
                 [[links]]\nfrom = \"east\"\nto = \"west\"\nlatency_ms = 1\n\n\
                 [cell]\ndurability = \"async\"\n\n";
    let mut configs = Vec::new();
    for (name, _) in REGIONS {
        let pki = dir.join("pki").join(name);
        let text = format!(
            "[node]\nregion = \"{name}\"\n\n{regions_toml}{links}[tls]\nca_cert = \"{}\"\n\
             cert = \"{}\"\nkey = \"{}\"\n\n[auth]\nadmin_token = {{ file = \"{}\" }}\n",
            pki.join("ca.pem").display(),
            pki.join("cert.pem").display(),
            pki.join("key.pem").display(),
            token.display()
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        configs.push(path);
    }
    let endpoints_file = dir.join("endpoints.json");
    std::fs::write(
        &endpoints_file,
        serde_json::to_vec_pretty(&serde_json::Value::Object(endpoints)).unwrap(),
    )
    .unwrap();
    (configs, endpoints_file)
}

/// Runs the CLI: (success, stdout, stderr), bounded by `COMMAND_TIMEOUT`.
fn cli_output(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
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

fn cli_json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = cli_output(args);
    assert!(
        ok,
        "meridian {} failed:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

/// Sends one message in `from` and receives it in `to` (the receive waits for replication).
fn send_and_receive(file: &str, topic: &str, from: &str, to: &str, group: &str) {
    let sent = cli_json(&[
        "send",
        "--endpoints-file",
        file,
        "--region",
        from,
        "--topic",
        topic,
        "--body",
        "over the link",
        "--json",
    ]);
    let id = sent["sent"][0]["message_id"].as_str().unwrap().to_string();
    let received = cli_json(&[
        "receive",
        "--endpoints-file",
        file,
        "--region",
        to,
        "--topic",
        topic,
        "--group",
        group,
        "--count",
        "1",
        "--timeout-ms",
        "60000",
        "--json",
    ]);
    assert_eq!(
        received["received"][0]["message_id"],
        id.as_str(),
        "{received}"
    );
}

#[test]
fn three_start_processes_form_one_meta_group_and_survive_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, endpoints_file) = write_fabric(dir.path());
    let file = endpoints_file.to_str().unwrap();
    let mut regions: Vec<Option<Region>> = configs
        .iter()
        .map(|config| Some(Region::start(config)))
        .collect();
    for region in regions.iter_mut().flatten() {
        region.wait_ready();
    }

    // A topic of every region and one of north and west only, created through meta.
    let created = cli_json(&[
        "topic",
        "create",
        "everywhere",
        "--endpoints-file",
        file,
        "--json",
    ]);
    for (name, _) in REGIONS {
        assert_eq!(created[name]["name"], "everywhere", "{created}");
    }
    let created = cli_json(&[
        "topic",
        "create",
        "pair",
        "--regions",
        "north,west",
        "--replication",
        "sync-quorum",
        "--endpoints-file",
        file,
        "--json",
    ]);
    assert_eq!(created["north"]["name"], "pair", "{created}");
    assert_eq!(created["west"]["name"], "pair", "{created}");
    assert!(created.get("east").is_none(), "{created}");
    let (ok, _, stderr) = cli_output(&[
        "topic",
        "describe",
        "pair",
        "--endpoints-file",
        file,
        "--region",
        "east",
    ]);
    assert!(!ok, "east must not hold the topic of north and west");
    assert!(stderr.contains("pair"), "{stderr}");
    let listed = cli_json(&["topic", "list", "--endpoints-file", file, "--json"]);
    let pair = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|topic| topic["name"] == "pair")
        .unwrap();
    assert_eq!(pair["replication"], "sync-quorum", "{listed}");
    assert_eq!(pair["regions"], serde_json::json!(["north", "west"]));
    assert_eq!(pair["epoch"], 0);
    send_and_receive(file, "everywhere", "east", "west", "g-before");

    // kill -9 of east (the region that initialized meta).
    regions[0].take().unwrap().kill_9();
    // The other two keep serving: meta writes (a quorum of two), sync-quorum sends between
    // them, replication.
    // The topic is for every region (east included, which applies it once back); the CLI
    // waits only for the cells selected with --region.
    let created = cli_json(&[
        "topic",
        "create",
        "after-kill",
        "--endpoints-file",
        file,
        "--region",
        "north",
        "--region",
        "west",
        "--json",
    ]);
    assert!(created.get("east").is_none(), "{created}");
    assert_eq!(created["north"]["name"], "after-kill", "{created}");
    assert_eq!(created["west"]["name"], "after-kill", "{created}");
    send_and_receive(file, "pair", "north", "west", "g-pair");

    // East restarts on the same data, rejoins meta and applies what it missed.
    let mut east = Region::start(&configs[0]);
    east.wait_ready();
    assert!(
        !east
            .seen
            .iter()
            .any(|line| line.contains("meta group initialized")),
        "a restart must not initialize meta again: {}",
        east.seen.join("\n")
    );
    regions[0] = Some(east);
    let mut described = None;
    for _ in 0..300 {
        let (ok, stdout, _) = cli_output(&[
            "topic",
            "describe",
            "after-kill",
            "--endpoints-file",
            file,
            "--region",
            "east",
            "--json",
        ]);
        if ok {
            described = Some(stdout);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        described.is_some(),
        "east applied the topic created while it was down"
    );
    send_and_receive(file, "after-kill", "west", "east", "g-after");

    for region in regions.into_iter().flatten() {
        region.stop();
    }
}

#[test]
fn a_wrong_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let fabric = "[[regions]]\nname = \"east\"\nzone = \"e\"\ngrpc = \"127.0.0.1:1\"\n\
                  meta = \"127.0.0.1:2\"\nreplication = \"127.0.0.1:3\"\nmetrics = \"127.0.0.1:4\"\n";
    let cases = [
        ("no-node.toml", fabric.to_string(), "[node]"),
        (
            "no-dir.toml",
            format!("[node]\nregion = \"east\"\n{fabric}"),
            "regions.east.data_dir",
        ),
        (
            "typo.toml",
            format!("[node]\nregion = \"east\"\n{fabric}grcp = \"x\"\n"),
            "grcp",
        ),
    ];
    for (file, text, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) = cli_output(&["start", "--config", path.to_str().unwrap()]);
        assert!(!ok, "{file} must be refused");
        assert!(stderr.contains(expected), "{file}: {stderr}");
        assert!(
            stderr.contains(file),
            "{file}: the error names the file: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
