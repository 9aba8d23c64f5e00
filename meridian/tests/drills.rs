//! Every shipped drill scenario, in its short form, against a fabric of real `meridian start`
//! processes (3 regions on 127.0.0.1-3, free ports): `meridian drill run` must finish, print
//! its report and exit 0, i.e. every promise of the scenario held.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_meridian");
/// The short form's load.
const SHORT_DURATION_MS: u64 = 8_000;
/// Hang guard for one drill (start, load, drain, stop), not a speed check.
const DRILL_TIMEOUT: Duration = Duration::from_secs(300);

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chaos/scenarios")
        .join(format!("{name}.toml"))
}

fn drill(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BINARY)
        .args(["drill", "run"])
        .arg(scenario(name))
        .args(["--duration-ms", &SHORT_DURATION_MS.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning meridian drill run");
    let deadline = Instant::now() + DRILL_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("drill {name} ran longer than {DRILL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "drill {name} broke a promise or failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all promises kept"), "{stdout}");
}

#[test]
fn region_kill() {
    drill("region-kill");
}

#[test]
fn cell_restart() {
    drill("cell-restart");
}

#[test]
fn region_pause() {
    drill("region-pause");
}

#[test]
fn standby_failover() {
    drill("standby-failover");
}

#[test]
fn switchover() {
    drill("switchover");
}

#[test]
fn region_partition() {
    drill("region-partition");
}

#[test]
fn lossy_link() {
    drill("lossy-link");
}

#[test]
fn meta_leader_kill() {
    drill("meta-leader-kill");
}

#[test]
fn clock_skew() {
    drill("clock-skew");
}

#[test]
fn failback() {
    drill("failback");
}
