//! Retry policies: how many times a group gets a message and how long it waits between tries.

use crate::messaging::codec::{Reader, Writer};

/// Most levels a customized backoff may list.
pub const MAX_BACKOFF_LEVELS: usize = 64;

/// Delay before the next delivery after a failed one.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// `initial_ms * multiplier^(attempt-1)`, capped at `max_ms`.
    Exponential {
        /// Delay after the first failure.
        initial_ms: u64,
        /// Cap.
        max_ms: u64,
        /// Growth factor per attempt.
        multiplier: u32,
    },
    /// One delay per attempt; attempts past the list reuse its last entry.
    Customized(Vec<u64>),
    /// The same delay after every failure.
    Fixed(u64),
}

/// A group's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries before the message goes to the dead-letter queue (the first delivery counts).
    pub max_delivery_attempts: u32,
    /// Delay between deliveries.
    pub backoff: Backoff,
}

/// RocketMQ's default customized backoff levels for concurrent consumption, in ms
/// (`1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`).
pub const ROCKETMQ_BACKOFF_LEVELS_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

impl RetryPolicy {
    /// RocketMQ's default for concurrent consumption: 16 retries (17 deliveries) on the
    /// customized levels.
    pub fn normal_default() -> Self {
        RetryPolicy {
            max_delivery_attempts: 17,
            backoff: Backoff::Customized(ROCKETMQ_BACKOFF_LEVELS_MS.to_vec()),
        }
    }

    /// RocketMQ's default for orderly consumption: 17 deliveries, a fixed 1 s apart (the
    /// orderly consumer's suspend time), so that a failing message does not stall its group for
    /// hours.
    pub fn fifo_default() -> Self {
        RetryPolicy {
            max_delivery_attempts: 17,
            backoff: Backoff::Fixed(1_000),
        }
    }

    /// Delay before delivery `attempt + 1` after delivery `attempt` (1-based) failed.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let index = attempt.saturating_sub(1);
        match &self.backoff {
            Backoff::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            } => {
                let factor = u64::from(*multiplier).saturating_pow(index.min(63));
                initial_ms.saturating_mul(factor).min(*max_ms)
            }
            Backoff::Customized(levels) => levels
                .get(index as usize)
                .or(levels.last())
                .copied()
                .unwrap_or(0),
            Backoff::Fixed(delay_ms) => *delay_ms,
        }
    }

    /// Whether a message delivered `attempt` times has used all its deliveries.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_delivery_attempts
    }

    /// Checks the policy is usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_delivery_attempts == 0 {
            return Err("max_delivery_attempts must be at least 1".into());
        }
        match &self.backoff {
            Backoff::Exponential { multiplier: 0, .. } => {
                Err("exponential multiplier must be at least 1".into())
            }
            Backoff::Exponential {
                initial_ms, max_ms, ..
            } if initial_ms > max_ms => Err(format!(
                "exponential initial_ms {initial_ms} exceeds max_ms {max_ms}"
            )),
            Backoff::Customized(levels)
                if levels.is_empty() || levels.len() > MAX_BACKOFF_LEVELS =>
            {
                Err(format!(
                    "customized backoff needs 1 to {MAX_BACKOFF_LEVELS} levels, got {}",
                    levels.len()
                ))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        writer.u32(self.max_delivery_attempts);
        match &self.backoff {
            Backoff::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            } => {
                writer.u8(0);
                writer.u64(*initial_ms);
                writer.u64(*max_ms);
                writer.u32(*multiplier);
            }
            Backoff::Customized(levels) => {
                writer.u8(1);
                writer.u32(levels.len() as u32);
                for level in levels {
                    writer.u64(*level);
                }
            }
            Backoff::Fixed(delay_ms) => {
                writer.u8(2);
                writer.u64(*delay_ms);
            }
        }
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Option<Self> {
        let max_delivery_attempts = reader.u32()?;
        let backoff = match reader.u8()? {
            0 => Backoff::Exponential {
                initial_ms: reader.u64()?,
                max_ms: reader.u64()?,
                multiplier: reader.u32()?,
            },
            1 => {
                let count = reader.u32()? as usize;
                if count > MAX_BACKOFF_LEVELS {
                    return None;
                }
                let mut levels = Vec::with_capacity(count);
                for _ in 0..count {
                    levels.push(reader.u64()?);
                }
                Backoff::Customized(levels)
            }
            2 => Backoff::Fixed(reader.u64()?),
            _ => return None,
        };
        Some(RetryPolicy {
            max_delivery_attempts,
            backoff,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_defaults() {
        let normal = RetryPolicy::normal_default();
        assert_eq!(normal.backoff_ms(1), 1_000);
        assert_eq!(normal.backoff_ms(4), 30_000);
        assert_eq!(normal.backoff_ms(18), 7_200_000);
        assert_eq!(
            normal.backoff_ms(40),
            7_200_000,
            "attempts past the list reuse the last level"
        );
        assert!(!normal.exhausted(16));
        assert!(normal.exhausted(17));
        let fifo = RetryPolicy::fifo_default();
        assert_eq!((fifo.backoff_ms(1), fifo.backoff_ms(9)), (1_000, 1_000));
    }

    #[test]
    fn exponential_grows_and_caps() {
        let policy = RetryPolicy {
            max_delivery_attempts: 5,
            backoff: Backoff::Exponential {
                initial_ms: 100,
                max_ms: 1_000,
                multiplier: 2,
            },
        };
        let delays: Vec<u64> = (1..=6).map(|attempt| policy.backoff_ms(attempt)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(
            policy.backoff_ms(u32::MAX),
            1_000,
            "no overflow on absurd attempts"
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let mut policy = RetryPolicy::normal_default();
        policy.max_delivery_attempts = 0;
        assert!(policy.validate().is_err());
        policy.max_delivery_attempts = 3;
        policy.backoff = Backoff::Customized(Vec::new());
        assert!(policy.validate().unwrap_err().contains("1 to 64 levels"));
        policy.backoff = Backoff::Exponential {
            initial_ms: 5,
            max_ms: 1,
            multiplier: 2,
        };
        assert!(policy.validate().is_err());
    }
}
