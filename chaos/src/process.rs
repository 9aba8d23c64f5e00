//! Control of fabric nodes that a test started: graceful stop (SIGTERM, then SIGKILL after a
//! grace period), kill -9, pause (SIGSTOP), resume (SIGCONT) and restart with the same command,
//! environment and data directory. Signals go only to the pid of a child we spawned and have not
//! reaped yet, so they can never hit an unrelated process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::error::{ChaosError, Result};

/// How long to wait for a process to disappear after SIGKILL before reporting it stuck.
pub const KILL_WAIT_MS: u64 = 5_000;

/// What to run. The data directory is whatever the args or env point at; `restart` reuses both,
/// so a restarted node finds its own data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program path (or a name looked up in `PATH`).
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables, added to the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; the parent's when unset.
    pub current_dir: Option<PathBuf>,
    /// Stdout and stderr are appended to this file (across restarts); discarded when unset.
    pub log_path: Option<PathBuf>,
}

impl ProcessSpec {
    /// A spec with a program and arguments, nothing else.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// What a managed process is doing, as far as we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Started and not paused.
    Running,
    /// Stopped by SIGSTOP.
    Paused,
    /// Exited; `code` if it exited normally, `signal` if a signal ended it.
    Exited {
        /// Exit code.
        code: Option<i32>,
        /// Terminating signal number.
        signal: Option<i32>,
    },
}

impl ProcessState {
    fn from_status(status: ExitStatus) -> Self {
        Self::Exited {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

/// A child process under test control.
#[derive(Debug)]
pub struct ManagedProcess {
    spec: ProcessSpec,
    child: Child,
    state: ProcessState,
    starts_count: u32,
}

impl ManagedProcess {
    /// Starts the process. It is killed if this handle is dropped, so a failing test leaks nothing.
    pub fn spawn(spec: ProcessSpec) -> Result<Self> {
        let child = start(&spec)?;
        tracing::info!(program = %spec.program.display(), pid = ?child.id(), "managed process started");
        Ok(Self {
            spec,
            child,
            state: ProcessState::Running,
            starts_count: 1,
        })
    }

    /// The spec it was started with.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The OS pid while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How many times the process was started (1 + restarts).
    pub fn starts_count(&self) -> u32 {
        self.starts_count
    }

    /// Current state; notices an exit that happened on its own.
    pub fn state(&mut self) -> ProcessState {
        if !matches!(self.state, ProcessState::Exited { .. })
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.state = ProcessState::from_status(status);
        }
        self.state
    }

    /// Graceful stop: SIGTERM (plus SIGCONT if paused, so it can act on it), wait up to
    /// `grace_ms`, then SIGKILL. Returns the final state.
    pub async fn stop(&mut self, grace_ms: u64) -> Result<ProcessState> {
        if let ProcessState::Exited { .. } = self.state() {
            return Ok(self.state);
        }
        let was_paused = self.state == ProcessState::Paused;
        self.signal(Signal::SIGTERM)?;
        if was_paused {
            self.signal(Signal::SIGCONT)?;
        }
        match tokio::time::timeout(Duration::from_millis(grace_ms), self.child.wait()).await {
            Ok(Ok(status)) => {
                self.state = ProcessState::from_status(status);
                Ok(self.state)
            }
            Ok(Err(source)) => Err(ChaosError::io("waiting for managed process", source)),
            Err(_elapsed) => {
                tracing::warn!(program = %self.spec.program.display(), grace_ms, "SIGTERM ignored, sending SIGKILL");
                self.kill9().await
            }
        }
    }

    /// SIGKILL and wait for the exit. Works on a paused process too.
    pub async fn kill9(&mut self) -> Result<ProcessState> {
        if let ProcessState::Exited { .. } = self.state() {
            return Ok(self.state);
        }
        self.child
            .start_kill()
            .map_err(|source| ChaosError::io("sending SIGKILL", source))?;
        match tokio::time::timeout(Duration::from_millis(KILL_WAIT_MS), self.child.wait()).await {
            Ok(Ok(status)) => {
                self.state = ProcessState::from_status(status);
                Ok(self.state)
            }
            Ok(Err(source)) => Err(ChaosError::io("waiting for killed process", source)),
            Err(_elapsed) => Err(ChaosError::ExitTimeout {
                program: self.spec.program.clone(),
                waited_ms: KILL_WAIT_MS,
            }),
        }
    }

    /// SIGSTOP: the process keeps its sockets and memory but runs no code (a "gray" failure).
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.state = ProcessState::Paused;
        Ok(())
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&mut self) -> Result<()> {
        self.signal(Signal::SIGCONT)?;
        self.state = ProcessState::Running;
        Ok(())
    }

    /// Stops the process if it runs (gracefully, up to `grace_ms`), then starts the same spec again.
    pub async fn restart(&mut self, grace_ms: u64) -> Result<()> {
        self.stop(grace_ms).await?;
        self.child = start(&self.spec)?;
        self.state = ProcessState::Running;
        self.starts_count = self.starts_count.saturating_add(1);
        tracing::info!(program = %self.spec.program.display(), pid = ?self.child.id(), "managed process restarted");
        Ok(())
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        if let ProcessState::Exited { .. } = self.state() {
            return Err(ChaosError::NotRunning(
                self.spec.program.display().to_string(),
            ));
        }
        let pid = self
            .child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| ChaosError::NotRunning(self.spec.program.display().to_string()))?;
        kill(Pid::from_raw(pid), signal).map_err(|source| ChaosError::Signal {
            signal: signal.as_str(),
            pid,
            source,
        })
    }
}

fn start(spec: &ProcessSpec) -> Result<Child> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = &spec.current_dir {
        command.current_dir(dir);
    }
    match &spec.log_path {
        Some(path) => {
            let log = open_log(path)?;
            let log_err = log
                .try_clone()
                .map_err(|source| ChaosError::io(format!("cloning {}", path.display()), source))?;
            command.stdout(log).stderr(log_err);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    command.spawn().map_err(|source| ChaosError::Spawn {
        program: spec.program.clone(),
        source,
    })
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ChaosError::io(format!("opening {}", path.display()), source))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The scheduler state letter from /proc/<pid>/stat (R, S, T, Z, ...).
    fn proc_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may contain spaces; the state follows it.
        let after = stat.rsplit_once(')')?.1;
        after.trim_start().chars().next()
    }

    async fn wait_for_state(pid: u32, wanted: &[char]) -> char {
        let mut last = '?';
        for _ in 0..200 {
            if let Some(state) = proc_state(pid) {
                last = state;
                if wanted.contains(&state) {
                    return state;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pid {pid} never reached {wanted:?}, last {last}");
    }

    fn sleeper() -> ProcessSpec {
        ProcessSpec::new("sleep", ["30"])
    }

    #[tokio::test]
    async fn pause_resume_and_graceful_stop() {
        let mut process = ManagedProcess::spawn(sleeper()).unwrap();
        let pid = process.pid().unwrap();
        assert_eq!(process.state(), ProcessState::Running);
        process.pause().unwrap();
        assert_eq!(wait_for_state(pid, &['T', 't']).await, 'T');
        assert_eq!(process.state(), ProcessState::Paused);
        process.resume().unwrap();
        wait_for_state(pid, &['S', 'R']).await;
        // A paused process must still stop gracefully: stop() continues it after SIGTERM.
        process.pause().unwrap();
        wait_for_state(pid, &['T']).await;
        let state = process.stop(2_000).await.unwrap();
        assert_eq!(
            state,
            ProcessState::Exited {
                code: None,
                signal: Some(Signal::SIGTERM as i32)
            }
        );
        assert!(process.pid().is_none());
        assert!(matches!(process.pause(), Err(ChaosError::NotRunning(_))));
    }

    #[tokio::test]
    async fn kill9_ends_with_sigkill() {
        let mut process = ManagedProcess::spawn(sleeper()).unwrap();
        let state = process.kill9().await.unwrap();
        assert_eq!(
            state,
            ProcessState::Exited {
                code: None,
                signal: Some(Signal::SIGKILL as i32)
            }
        );
        // Idempotent once exited.
        assert_eq!(process.kill9().await.unwrap(), state);
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
        // An ignored signal stays ignored across exec, so `sleep` itself ignores SIGTERM.
        let spec = ProcessSpec::new("sh", ["-c", "trap '' TERM; exec sleep 30"]);
        let mut process = ManagedProcess::spawn(spec).unwrap();
        let pid = process.pid().unwrap();
        // Wait until the shell has exec'd sleep (so the trap is in place).
        for _ in 0..200 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        let state = process.stop(300).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            state,
            ProcessState::Exited {
                code: None,
                signal: Some(Signal::SIGKILL as i32)
            }
        );
    }

    #[tokio::test]
    async fn restart_keeps_spec_env_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let data = dir.path().join("data");
        // Each start appends one line to the data file and prints how many lines it now has.
        let mut spec = ProcessSpec::new(
            "sh",
            [
                "-c",
                "echo start >> \"$NODE_DATA\"; wc -l < \"$NODE_DATA\"; exec sleep 30",
            ],
        );
        spec.env.push(("NODE_DATA".into(), data.clone().into()));
        spec.log_path = Some(log.clone());
        let log_lines = |wanted: usize| {
            let log = log.clone();
            async move {
                for _ in 0..200 {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.lines().count() >= wanted {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let mut process = ManagedProcess::spawn(spec.clone()).unwrap();
        let first_pid = process.pid().unwrap();
        // Let the first start do its work before it is stopped.
        log_lines(1).await;
        process.restart(2_000).await.unwrap();
        let second_pid = process.pid().unwrap();
        assert_ne!(first_pid, second_pid);
        assert_eq!(process.starts_count(), 2);
        assert_eq!(process.spec(), &spec);
        assert_eq!(process.state(), ProcessState::Running);
        // Both starts wrote to the same data file and the same log.
        log_lines(2).await;
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        assert_eq!(lines, vec!["1", "2"]);
        process.kill9().await.unwrap();
    }

    #[tokio::test]
    async fn spawn_of_missing_program_fails_with_cause() {
        let error = ManagedProcess::spawn(ProcessSpec::new(
            "/nonexistent/meridian-node",
            Vec::<String>::new(),
        ))
        .unwrap_err();
        assert!(matches!(error, ChaosError::Spawn { .. }));
        assert!(std::error::Error::source(&error).is_some());
    }
}
