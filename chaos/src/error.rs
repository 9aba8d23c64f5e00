//! The crate's error type: one enum, each variant keeps its cause.

use std::path::PathBuf;

/// Everything that can fail in `meridian-chaos`.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A `LinkFaults` value is out of range (a percentage above 100, a latency above the cap, ...).
    #[error("invalid link faults: {0}")]
    InvalidFaults(String),

    /// A fault schedule is malformed (unknown link, too many steps, invalid faults in a step).
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),

    /// A schedule, links or checker-spec file could not be parsed as TOML.
    #[error("{what} is not valid TOML")]
    Toml {
        /// Which kind of file.
        what: &'static str,
        /// The parse failure.
        #[source]
        source: toml::de::Error,
    },

    /// A workload or scenario field is unusable.
    #[error("invalid `{field}`: {reason}")]
    InvalidSpec {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },

    /// A schedule or history could not be parsed or written as JSON.
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),

    /// One line of a JSON-lines history did not parse.
    #[error("history line {line}: invalid event")]
    HistoryLine {
        /// 1-based line number in the input.
        line: usize,
        /// The parse failure.
        #[source]
        source: serde_json::Error,
    },

    /// A history holds more events than the reader's limit.
    #[error("history has more than {max_events} events")]
    HistoryTooLarge {
        /// The limit that was exceeded.
        max_events: usize,
    },

    /// A socket or file operation failed.
    #[error("I/O error: {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },

    /// Spawning a managed process failed.
    #[error("cannot spawn {program}")]
    Spawn {
        /// The program that was started.
        program: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },

    /// Sending a signal to a managed process failed.
    #[error("cannot send {signal} to pid {pid}")]
    Signal {
        /// Signal name, e.g. `SIGSTOP`.
        signal: &'static str,
        /// Target process id.
        pid: i32,
        /// The errno from `kill(2)`.
        #[source]
        source: nix::Error,
    },

    /// The operation needs a running process, and there is none.
    #[error("process {0} is not running")]
    NotRunning(String),

    /// A process did not exit within its deadline even after SIGKILL.
    #[error("process {program} did not exit within {waited_ms} ms")]
    ExitTimeout {
        /// The program that was started.
        program: PathBuf,
        /// How long we waited in total.
        waited_ms: u64,
    },
}

impl ChaosError {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ChaosError> = std::result::Result<T, E>;
