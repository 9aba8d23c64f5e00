//! A planned switchover of an active-standby topic's home, as a state machine fed events and
//! `now_ms`; the shell carries out its actions (meta writes, status reads).
//!
//! 1. **Fence** (shell: `BeginTopicMove` in meta, compare-and-set): the old home answers new
//!    writes "moving" from the moment it sees the new epoch; the machine starts here.
//! 2. **Fence confirmed**: the old home reports its log end after the fence took effect, i.e.
//!    a position past every write it acknowledged for the topic.
//! 3. **Catching up**: the new home reports how far it holds the old home's log; once it holds
//!    everything below the fenced log end, the machine asks to commit.
//! 4. **Commit** (shell: `MoveTopicHome`, compare-and-set on the fenced epoch): the new home
//!    takes writes. Nothing acknowledged is lost (the new home held it all) and nothing is
//!    stored twice (the old home took nothing after the fence).
//!
//! Past `catch_up_timeout_ms` without catching up, the machine asks to abort (shell:
//! `AbortTopicMove`), and the old home takes writes again. The write pause is the time from
//! the fence to the commit or abort.

use serde::{Deserialize, Serialize};

use crate::error::RouterError;

/// Default longest wait for the new home to catch up, ms.
pub const DEFAULT_CATCH_UP_TIMEOUT_MS: u64 = 10_000;

/// Where a switchover stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Fenced in meta; waiting for the old home to confirm and report its log end.
    Fenced,
    /// Waiting for the new home to hold the old home's log below `fenced_log_end`.
    CatchingUp {
        /// The old home's log end after the fence.
        fenced_log_end: u64,
    },
    /// Caught up; the move may be committed.
    Committing,
    /// Committed.
    Done,
    /// Given up; the old home is home again.
    Aborted {
        /// Why.
        reason: String,
    },
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Write `MoveTopicHome { topic, new_home, expected_epoch }` to meta.
    Commit {
        /// The epoch the fence produced.
        expected_epoch: u64,
    },
    /// Write `AbortTopicMove { topic, expected_epoch }` to meta.
    Abort {
        /// The epoch the fence produced.
        expected_epoch: u64,
        /// Why.
        reason: String,
    },
}

/// One switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// Topic.
    pub topic: String,
    /// Old home.
    pub from: String,
    /// New home.
    pub to: String,
    /// The epoch `BeginTopicMove` produced.
    pub fenced_epoch: u64,
    /// When the fence was written, ms.
    pub fenced_at_ms: u64,
    /// Longest wait for catching up, ms.
    pub catch_up_timeout_ms: u64,
    /// Where it stands.
    pub phase: Phase,
    /// When it ended (committed or aborted), ms.
    pub ended_at_ms: Option<u64>,
}

impl Switchover {
    /// A switchover whose fence meta accepted at `now_ms`, producing `fenced_epoch`.
    pub fn fenced(
        topic: &str,
        from: &str,
        to: &str,
        fenced_epoch: u64,
        now_ms: u64,
        catch_up_timeout_ms: u64,
    ) -> Self {
        Switchover {
            topic: topic.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            fenced_epoch,
            fenced_at_ms: now_ms,
            catch_up_timeout_ms,
            phase: Phase::Fenced,
            ended_at_ms: None,
        }
    }

    fn wrong_phase(&self, event: &str) -> RouterError {
        RouterError::Switchover {
            topic: self.topic.clone(),
            detail: format!("{event} in phase {:?}", self.phase),
        }
    }

    /// The old home confirmed the fence; its log ended at `log_end` after it.
    pub fn on_fence_confirmed(&mut self, log_end: u64) -> Result<(), RouterError> {
        if self.phase != Phase::Fenced {
            return Err(self.wrong_phase("fence confirmation"));
        }
        self.phase = Phase::CatchingUp {
            fenced_log_end: log_end,
        };
        Ok(())
    }

    /// The new home holds the old home's log below `held_position`. Returns the commit step
    /// once that covers the fenced log end.
    pub fn on_progress(&mut self, held_position: u64) -> Option<Step> {
        match self.phase {
            Phase::CatchingUp { fenced_log_end } if held_position >= fenced_log_end => {
                self.phase = Phase::Committing;
                Some(Step::Commit {
                    expected_epoch: self.fenced_epoch,
                })
            }
            _ => None,
        }
    }

    /// Time passes; returns the abort step when catching up (or confirming) took too long.
    pub fn on_tick(&mut self, now_ms: u64) -> Option<Step> {
        let waiting = matches!(self.phase, Phase::Fenced | Phase::CatchingUp { .. });
        if !waiting || now_ms < self.fenced_at_ms.saturating_add(self.catch_up_timeout_ms) {
            return None;
        }
        let reason = format!(
            "{} did not catch up with {} within {} ms",
            self.to, self.from, self.catch_up_timeout_ms
        );
        self.phase = Phase::Aborted {
            reason: reason.clone(),
        };
        self.ended_at_ms = Some(now_ms);
        Some(Step::Abort {
            expected_epoch: self.fenced_epoch,
            reason,
        })
    }

    /// Meta accepted the commit.
    pub fn on_committed(&mut self, now_ms: u64) -> Result<(), RouterError> {
        if self.phase != Phase::Committing {
            return Err(self.wrong_phase("commit"));
        }
        self.phase = Phase::Done;
        self.ended_at_ms = Some(now_ms);
        Ok(())
    }

    /// How long writes were paused (fence to end), once ended.
    pub fn write_pause_ms(&self) -> Option<u64> {
        self.ended_at_ms
            .map(|ended| ended.saturating_sub(self.fenced_at_ms))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commit_only_after_the_new_home_holds_everything_below_the_fence() {
        let mut switchover = Switchover::fenced("orders", "us", "eu", 5, 1_000, 10_000);
        assert_eq!(
            switchover.on_progress(1 << 40),
            None,
            "no commit before the fence is confirmed"
        );
        switchover.on_fence_confirmed(4_096).unwrap();
        assert!(switchover.on_fence_confirmed(4_096).is_err());
        assert_eq!(switchover.on_progress(4_095), None);
        assert_eq!(
            switchover.on_progress(4_096),
            Some(Step::Commit { expected_epoch: 5 })
        );
        assert_eq!(
            switchover.on_tick(50_000),
            None,
            "a commit in flight is not aborted"
        );
        switchover.on_committed(1_400).unwrap();
        assert_eq!(switchover.phase, Phase::Done);
        assert_eq!(switchover.write_pause_ms(), Some(400));
    }

    #[test]
    fn a_slow_new_home_aborts_and_the_old_home_resumes() {
        let mut switchover = Switchover::fenced("orders", "us", "eu", 5, 1_000, 2_000);
        switchover.on_fence_confirmed(4_096).unwrap();
        assert_eq!(switchover.on_tick(2_999), None);
        assert!(matches!(
            switchover.on_tick(3_000),
            Some(Step::Abort {
                expected_epoch: 5,
                ..
            })
        ));
        assert!(matches!(switchover.phase, Phase::Aborted { .. }));
        assert_eq!(switchover.on_progress(1 << 40), None);
        assert!(switchover.on_committed(3_001).is_err());
        assert_eq!(switchover.write_pause_ms(), Some(2_000));
    }
}
