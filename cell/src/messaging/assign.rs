//! Queue assignment among a consumer group's live clients, for per-queue (push/pull)
//! consumption: sans-IO.
//!
//! Clients heartbeat; a client silent for longer than the session timeout is dropped. Queues are
//! divided the way RocketMQ's `AllocateMessageQueueAveragely` does: clients and queues sorted,
//! each client gets a contiguous run, the first `queues % clients` clients one extra. Every
//! client computes the same answer from the same membership, and any change of membership
//! (a client coming or going) is a rebalance: the next assignment query sees the new division.

use std::collections::BTreeMap;

use crate::messaging::topic::ConsumptionModel;

/// Live members of one consumer group.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    last_heartbeat_ms: BTreeMap<String, u64>,
    generation: u64,
}

impl Membership {
    /// Records a heartbeat; returns whether the client is new (membership changed).
    pub fn heartbeat(&mut self, client_id: &str, now_ms: u64) -> bool {
        let new = self
            .last_heartbeat_ms
            .insert(client_id.to_string(), now_ms)
            .is_none();
        if new {
            self.generation += 1;
        }
        new
    }

    /// Removes a client that says goodbye; returns whether it was a member.
    pub fn leave(&mut self, client_id: &str) -> bool {
        let was = self.last_heartbeat_ms.remove(client_id).is_some();
        if was {
            self.generation += 1;
        }
        was
    }

    /// Drops clients silent for `session_timeout_ms`; returns the dropped ids.
    pub fn expire(&mut self, now_ms: u64, session_timeout_ms: u64) -> Vec<String> {
        let dead: Vec<String> = self
            .last_heartbeat_ms
            .iter()
            .filter(|(_, seen)| now_ms.saturating_sub(**seen) > session_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            self.last_heartbeat_ms.remove(id);
        }
        if !dead.is_empty() {
            self.generation += 1;
        }
        dead
    }

    /// Whether a client is a live member.
    pub fn contains(&self, client_id: &str) -> bool {
        self.last_heartbeat_ms.contains_key(client_id)
    }

    /// Number of live members.
    pub fn len(&self) -> usize {
        self.last_heartbeat_ms.len()
    }

    /// Whether the group has no live member.
    pub fn is_empty(&self) -> bool {
        self.last_heartbeat_ms.is_empty()
    }

    /// Live clients, sorted.
    pub fn clients(&self) -> Vec<&str> {
        self.last_heartbeat_ms.keys().map(String::as_str).collect()
    }

    /// Bumped on every membership change; clients compare it to know when to rebalance.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The queues of a topic with `queue_count` queues that `client_id` should consume.
    pub fn assignment(
        &self,
        client_id: &str,
        queue_count: u32,
        model: ConsumptionModel,
    ) -> Vec<u32> {
        if !self.last_heartbeat_ms.contains_key(client_id) {
            return Vec::new();
        }
        if model == ConsumptionModel::Broadcasting {
            return (0..queue_count).collect();
        }
        let clients = self.clients();
        let Some(index) = clients.iter().position(|id| *id == client_id) else {
            return Vec::new();
        };
        allocate_averagely(index, clients.len(), queue_count)
    }
}

/// The queues client number `index` of `clients` gets out of `queue_count`.
pub fn allocate_averagely(index: usize, clients: usize, queue_count: u32) -> Vec<u32> {
    let queues = queue_count as usize;
    if clients == 0 || index >= clients || index >= queues {
        return Vec::new();
    }
    let base = queues / clients;
    let extra = queues % clients;
    let size = base + usize::from(index < extra);
    let start = index * base + index.min(extra);
    (start..start + size).map(|queue| queue as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_has_exactly_one_owner() {
        for clients in 1..=9usize {
            for queues in 0..=17u32 {
                let mut owners = vec![0; queues as usize];
                for index in 0..clients {
                    for queue in allocate_averagely(index, clients, queues) {
                        owners[queue as usize] += 1;
                    }
                }
                assert!(
                    owners.iter().all(|count| *count == 1),
                    "{clients} clients, {queues} queues"
                );
            }
        }
        assert_eq!(allocate_averagely(0, 3, 8), [0, 1, 2]);
        assert_eq!(allocate_averagely(2, 3, 8), [6, 7]);
    }

    #[test]
    fn rebalances_when_clients_come_and_go() {
        let mut group = Membership::default();
        assert!(group.heartbeat("a", 0));
        assert_eq!(
            group.assignment("a", 4, ConsumptionModel::Clustering),
            [0, 1, 2, 3]
        );
        let generation = group.generation();
        assert!(group.heartbeat("b", 10));
        assert!(
            !group.heartbeat("b", 20),
            "a repeated heartbeat is not a change"
        );
        assert!(group.generation() > generation);
        assert_eq!(
            group.assignment("a", 4, ConsumptionModel::Clustering),
            [0, 1]
        );
        assert_eq!(
            group.assignment("b", 4, ConsumptionModel::Clustering),
            [2, 3]
        );
        // `a` stops heartbeating and times out; `b` takes everything.
        group.heartbeat("b", 5_000);
        assert_eq!(group.expire(5_000, 3_000), ["a"]);
        assert_eq!(
            group.assignment("b", 4, ConsumptionModel::Clustering),
            [0, 1, 2, 3]
        );
        assert!(
            group
                .assignment("a", 4, ConsumptionModel::Clustering)
                .is_empty()
        );
        assert!(group.leave("b"));
        assert!(group.clients().is_empty());
    }

    #[test]
    fn broadcasting_gives_every_client_every_queue() {
        let mut group = Membership::default();
        group.heartbeat("a", 0);
        group.heartbeat("b", 0);
        for client in ["a", "b"] {
            assert_eq!(
                group.assignment(client, 3, ConsumptionModel::Broadcasting),
                [0, 1, 2]
            );
        }
    }
}
