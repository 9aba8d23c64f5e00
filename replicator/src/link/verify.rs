//! The verification loop of one outbound link, sans IO: which origin range to compare next,
//! what a comparison means, and the link's "verified up to" position.
//!
//! The sender periodically asks its destination for the digest of an origin range the
//! destination has acknowledged, computes the digest of the same range from its own log (only
//! the records the link ships, see [`super::filter`]) and hands both to [`Verifier::on_answer`].
//!
//! - Ranges are checked in order from a cursor, each at most `max_range_bytes` long, so one
//!   request never makes either side scan more than that much of the origin's positions.
//! - **"Verified up to" P** means every shipped record before P was found in the destination
//!   with the same content, in the same order. It only moves over matching ranges, starting
//!   from a persisted value, so after a restart verification resumes instead of starting over.
//! - **A mismatch is narrowed by bisection** before it is reported: the range is split at its
//!   midpoint and each half compared again, down to a range holding at most one record on
//!   either side (or until `max_suspect_ranges` halves are pending). So a report names the
//!   damaged record's range, not the whole interval since the last check. Halves that match are
//!   dropped; if every half matches while their union did not (records stored in another
//!   order), the whole range is reported.
//! - After a report the cursor moves on (the rest of the log is still checked) but "verified up
//!   to" stays at the start of the damaged range: the figure an operator watches stops moving.
//!   A restart checks the range again and reports it again until it is repaired.

use std::collections::VecDeque;

/// Limits of the verification loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyConfig {
    /// Longest origin range compared in one request (origin log bytes).
    pub max_range_bytes: u64,
    /// Most halves waiting to be compared while a mismatch is narrowed.
    pub max_suspect_ranges: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            max_range_bytes: 64 << 20,
            max_suspect_ranges: 64,
        }
    }
}

/// A range whose digests differ between origin and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// First origin position of the range.
    pub start: u64,
    /// Position after the range.
    pub end: u64,
    /// Records the origin ships in it.
    pub origin_count: u64,
    /// Records the destination holds in it.
    pub replica_count: u64,
}

/// What one answer meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The range matched.
    Matched,
    /// The range differs; its halves are compared next.
    Narrowing,
    /// A damaged range, as narrow as the limits allow: report it.
    Mismatch(Mismatch),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    start: u64,
    end: u64,
    /// A half of a mismatching range (rather than the next range from the cursor).
    suspect: bool,
}

/// The verification state of one link; survives its sessions.
#[derive(Debug)]
pub struct Verifier {
    config: VerifyConfig,
    verified_up_to: u64,
    /// Next origin position not yet compared.
    cursor: u64,
    /// A mismatch was found at or after `verified_up_to`: it stops moving.
    stuck: bool,
    suspects: VecDeque<(u64, u64)>,
    /// The mismatching range being narrowed, and whether a half of it was reported yet.
    narrowing: Option<(Mismatch, bool)>,
    outstanding: Option<Request>,
}

impl Verifier {
    /// Starts checking at `verified_up_to` (persisted by an earlier run, or 0).
    pub fn new(config: VerifyConfig, verified_up_to: u64) -> Self {
        Verifier {
            config,
            verified_up_to,
            cursor: verified_up_to,
            stuck: false,
            suspects: VecDeque::new(),
            narrowing: None,
            outstanding: None,
        }
    }

    /// Every shipped record before this origin position matched in the destination.
    pub fn verified_up_to(&self) -> u64 {
        self.verified_up_to
    }

    /// Whether halves of a mismatch wait to be compared (worth asking at once, not on the next
    /// tick).
    pub fn is_narrowing(&self) -> bool {
        !self.suspects.is_empty() && self.outstanding.is_none()
    }

    /// The next range to ask the destination about, if any: a pending half first, else the
    /// next range from the cursor within what the destination acknowledged (`acked`). Ranges
    /// below `log_start` (removed by retention at the origin) are skipped: nothing is left to
    /// compare there. One request at a time.
    pub fn next_request(&mut self, acked: u64, log_start: u64) -> Option<(u64, u64)> {
        if self.outstanding.is_some() {
            return None;
        }
        if self.suspects.is_empty() && self.cursor < log_start {
            self.cursor = log_start;
            if !self.stuck {
                self.verified_up_to = self.verified_up_to.max(log_start);
            }
        }
        let request = if let Some((start, end)) = self.suspects.pop_front() {
            Request {
                start,
                end,
                suspect: true,
            }
        } else if acked > self.cursor {
            Request {
                start: self.cursor,
                end: acked.min(
                    self.cursor
                        .saturating_add(self.config.max_range_bytes.max(1)),
                ),
                suspect: false,
            }
        } else {
            return None;
        };
        self.outstanding = Some(request);
        Some((request.start, request.end))
    }

    /// The session ended: an unanswered request is asked again in the next one.
    pub fn on_session_end(&mut self) {
        if let Some(request) = self.outstanding.take()
            && request.suspect
        {
            self.suspects.push_front((request.start, request.end));
        }
    }

    /// The destination's `(count, digest)` of `[start, end)` and the origin's. Returns `None`
    /// for an answer to a request this verifier is not waiting for.
    pub fn on_answer(
        &mut self,
        start: u64,
        end: u64,
        origin: (u64, u64),
        replica: (u64, u64),
    ) -> Option<Verdict> {
        let request = self
            .outstanding
            .filter(|r| (r.start, r.end) == (start, end))?;
        self.outstanding = None;
        if !request.suspect {
            self.cursor = end;
        }
        let verdict = if origin == replica {
            if !request.suspect && !self.stuck {
                self.verified_up_to = end;
            }
            Verdict::Matched
        } else {
            self.stuck = true;
            let mismatch = Mismatch {
                start,
                end,
                origin_count: origin.0,
                replica_count: replica.0,
            };
            if !request.suspect {
                self.narrowing = Some((mismatch, false));
            }
            let narrow_enough = origin.0.max(replica.0) <= 1 || end - start <= 1;
            if narrow_enough || self.suspects.len() + 2 > self.config.max_suspect_ranges {
                if let Some((_, reported)) = self.narrowing.as_mut() {
                    *reported = true;
                }
                Verdict::Mismatch(mismatch)
            } else {
                let mid = start + (end - start) / 2;
                self.suspects.push_front((mid, end));
                self.suspects.push_front((start, mid));
                Verdict::Narrowing
            }
        };
        if self.suspects.is_empty()
            && let Some((root, reported)) = self.narrowing.take()
            && !reported
        {
            // Every half matched on its own: the records are there but in another order.
            return Some(Verdict::Mismatch(root));
        }
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests of a toy log: records at the given origin positions, compared by set.
    fn digest(records: &[u64], start: u64, end: u64) -> (u64, u64) {
        let inside: Vec<u64> = records
            .iter()
            .copied()
            .filter(|position| (start..end).contains(position))
            .collect();
        (
            inside.len() as u64,
            inside
                .iter()
                .fold(7, |hash, p| hash.wrapping_mul(31).wrapping_add(*p)),
        )
    }

    /// Runs the verifier to quiescence against `origin` and `replica`, returning its reports.
    fn run(verifier: &mut Verifier, origin: &[u64], replica: &[u64], acked: u64) -> Vec<Mismatch> {
        let mut reports = Vec::new();
        for _ in 0..10_000 {
            let Some((start, end)) = verifier.next_request(acked, 0) else {
                return reports;
            };
            let verdict = verifier
                .on_answer(
                    start,
                    end,
                    digest(origin, start, end),
                    digest(replica, start, end),
                )
                .expect("answer to the outstanding request");
            if let Verdict::Mismatch(mismatch) = verdict {
                reports.push(mismatch);
            }
        }
        panic!("the verifier did not settle");
    }

    #[test]
    fn matching_ranges_advance_verified_up_to_in_bounded_steps() {
        let config = VerifyConfig {
            max_range_bytes: 100,
            max_suspect_ranges: 64,
        };
        let mut verifier = Verifier::new(config, 0);
        let log: Vec<u64> = (0..50).map(|i| i * 20).collect();
        assert_eq!(verifier.next_request(1_000, 0), Some((0, 100)));
        assert_eq!(
            verifier.next_request(1_000, 0),
            None,
            "one request at a time"
        );
        assert_eq!(
            verifier.on_answer(0, 100, digest(&log, 0, 100), digest(&log, 0, 100)),
            Some(Verdict::Matched)
        );
        assert_eq!(verifier.verified_up_to(), 100);
        assert!(run(&mut verifier, &log, &log, 1_000).is_empty());
        assert_eq!(verifier.verified_up_to(), 1_000);
        // A stale answer is ignored.
        assert_eq!(verifier.on_answer(0, 100, (0, 0), (1, 1)), None);
    }

    #[test]
    fn a_dropped_record_is_narrowed_to_its_own_range_and_stops_verified_up_to() {
        let mut verifier = Verifier::new(VerifyConfig::default(), 0);
        let origin: Vec<u64> = (0..1_000).map(|i| i * 37).collect();
        let mut replica = origin.clone();
        let lost = replica.remove(613);
        let reports = run(&mut verifier, &origin, &replica, 37_000);
        assert_eq!(reports.len(), 1, "{reports:?}");
        let report = reports[0];
        assert!((report.start..report.end).contains(&lost), "{report:?}");
        assert_eq!((report.origin_count, report.replica_count), (1, 0));
        assert_eq!(verifier.verified_up_to(), 0, "stuck before the damage");
        // A restart from the persisted value finds it again.
        let mut again = Verifier::new(VerifyConfig::default(), verifier.verified_up_to());
        assert_eq!(run(&mut again, &origin, &replica, 37_000), reports);
    }

    #[test]
    fn a_forged_record_and_a_reordering_are_reported() {
        let mut verifier = Verifier::new(VerifyConfig::default(), 0);
        let origin: Vec<u64> = (0..100).map(|i| i * 10).collect();
        let mut replica = origin.clone();
        replica.push(555);
        let reports = run(&mut verifier, &origin, &replica, 1_000);
        assert_eq!(reports.len(), 1);
        assert!((reports[0].start..reports[0].end).contains(&555));
        assert_eq!(reports[0].replica_count, reports[0].origin_count + 1);

        // Same records, but the toy digest of each half matches only if split cleanly: a
        // range whose halves all match is reported whole.
        let mut verifier = Verifier::new(VerifyConfig::default(), 0);
        assert_eq!(verifier.next_request(1_000, 0), Some((0, 1_000)));
        assert_eq!(
            verifier.on_answer(0, 1_000, (4, 1), (4, 2)),
            Some(Verdict::Narrowing)
        );
        let first = verifier.next_request(1_000, 0).expect("first half");
        assert_eq!(
            verifier.on_answer(first.0, first.1, (2, 5), (2, 5)),
            Some(Verdict::Matched)
        );
        let second = verifier.next_request(1_000, 0).expect("second half");
        assert_eq!(
            verifier.on_answer(second.0, second.1, (2, 6), (2, 6)),
            Some(Verdict::Mismatch(Mismatch {
                start: 0,
                end: 1_000,
                origin_count: 4,
                replica_count: 4
            }))
        );
    }

    #[test]
    fn a_half_in_flight_when_the_session_ends_is_asked_again() {
        let mut verifier = Verifier::new(VerifyConfig::default(), 0);
        assert_eq!(verifier.next_request(100, 0), Some((0, 100)));
        verifier.on_answer(0, 100, (3, 1), (2, 2));
        assert_eq!(verifier.next_request(100, 0), Some((0, 50)));
        verifier.on_session_end();
        assert_eq!(verifier.next_request(100, 0), Some((0, 50)));
    }

    #[test]
    fn ranges_removed_by_retention_are_skipped() {
        let mut verifier = Verifier::new(VerifyConfig::default(), 0);
        assert_eq!(verifier.next_request(500, 200), Some((200, 500)));
        assert_eq!(verifier.verified_up_to(), 200);
    }
}
