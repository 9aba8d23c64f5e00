//! `State::apply`: one handler per command. Each handler validates everything first and only
//! then mutates, so a rejected command leaves the state (and the revision) untouched.

use super::model::{
    Cell, ConsumerGroup, MessageGroupKey, MessageGroupOwner, MessageType, Region, RegionStatus,
};
use super::model::{Resource, Topic, TopicSpec, Topology, User};
use super::{
    Applied, CellBeat, Change, Command, CommandResult, Object, ObjectKey, Outcome, Request, State,
    Update,
};
use crate::error::MetaError;

impl State {
    /// Applies one replicated request. Deterministic: the same state and request give the
    /// same result on every replica.
    pub fn apply(&mut self, request: &Request) -> CommandResult {
        let now_ms = request.issued_at_ms;
        match &request.command {
            Command::PutRegion {
                name,
                zone,
                endpoints,
            } => self.put_region(name, zone, endpoints),
            Command::SetRegionStatus {
                name,
                status,
                expected_epoch,
            } => self.set_region_status(name, *status, *expected_epoch),
            Command::DeleteRegion { name } => self.delete_region(name),
            Command::PutCell {
                id,
                region,
                endpoints,
            } => self.put_cell(id, region, endpoints),
            Command::DeleteCell { id } => {
                self.cells
                    .remove(id)
                    .ok_or_else(|| MetaError::CellNotFound { cell: id.clone() })?;
                Ok(self.commit(vec![deleted(ObjectKey::Cell(id.clone()))], Outcome::Done))
            }
            Command::RecordHeartbeats { beats } => self.record_heartbeats(beats, now_ms),
            Command::CreateTopic { spec } => self.create_topic(spec),
            Command::UpdateTopic {
                spec,
                expected_epoch,
            } => self.update_topic(spec, *expected_epoch),
            Command::DeleteTopic { name } => self.delete_topic(name),
            Command::BeginTopicMove {
                topic,
                new_home,
                expected_epoch,
            } => self.begin_topic_move(topic, new_home, *expected_epoch),
            Command::AbortTopicMove {
                topic,
                expected_epoch,
            } => self.abort_topic_move(topic, *expected_epoch),
            Command::MoveTopicHome {
                topic,
                new_home,
                expected_epoch,
            } => self.move_topic_home(topic, new_home, *expected_epoch),
            Command::PutConsumerGroup { group } => self.put_consumer_group(group),
            Command::DeleteConsumerGroup { name } => self.delete_consumer_group(name),
            Command::PutUser { user } => self.put_user(user),
            Command::DeleteUser { name } => {
                self.users
                    .remove(name)
                    .ok_or_else(|| MetaError::UserNotFound { user: name.clone() })?;
                Ok(self.commit(vec![deleted(ObjectKey::User(name.clone()))], Outcome::Done))
            }
            Command::ClaimMessageGroup {
                key,
                owner,
                lease_ms,
            } => self.claim_message_group(key, owner, *lease_ms, now_ms),
            Command::ReleaseMessageGroup { key, owner } => self.release_message_group(key, owner),
        }
    }

    /// Advances the revision by one and records what changed.
    fn commit(&mut self, updates: Vec<Update>, outcome: Outcome) -> Applied {
        self.revision += 1;
        self.changes.push(Change {
            revision: self.revision,
            updates,
        });
        Applied {
            revision: self.revision,
            outcome,
        }
    }

    fn put_region(&mut self, name: &str, zone: &str, endpoints: &[String]) -> CommandResult {
        self.limits.check_name("region", name)?;
        self.limits.check_name("zone", zone)?;
        self.limits
            .check_endpoints(&format!("region `{name}`"), endpoints)?;
        let region = match self.regions.get(name) {
            Some(existing) => Region {
                zone: zone.to_string(),
                endpoints: endpoints.to_vec(),
                ..existing.clone()
            },
            None => Region {
                name: name.to_string(),
                zone: zone.to_string(),
                endpoints: endpoints.to_vec(),
                status: RegionStatus::Active,
                epoch: 0,
            },
        };
        self.regions.insert(name.to_string(), region.clone());
        Ok(self.commit(
            vec![put(
                ObjectKey::Region(name.to_string()),
                Object::Region(region),
            )],
            Outcome::Done,
        ))
    }

    fn set_region_status(
        &mut self,
        name: &str,
        status: RegionStatus,
        expected_epoch: u64,
    ) -> CommandResult {
        let region = self
            .regions
            .get_mut(name)
            .ok_or_else(|| MetaError::RegionNotFound {
                region: name.to_string(),
            })?;
        check_epoch(&format!("region `{name}`"), expected_epoch, region.epoch)?;
        region.status = status;
        region.epoch += 1;
        let (epoch, region) = (region.epoch, region.clone());
        Ok(self.commit(
            vec![put(
                ObjectKey::Region(name.to_string()),
                Object::Region(region),
            )],
            Outcome::Epoch { epoch },
        ))
    }

    fn delete_region(&mut self, name: &str) -> CommandResult {
        if !self.regions.contains_key(name) {
            return Err(MetaError::RegionNotFound {
                region: name.to_string(),
            });
        }
        if let Some(cell) = self.cells.values().find(|cell| cell.region == name) {
            return Err(MetaError::RegionInUse {
                region: name.to_string(),
                user: format!("cell `{}`", cell.id),
            });
        }
        if let Some(topic) = self
            .topics
            .values()
            .find(|topic| topic.spec.regions.contains(name))
        {
            return Err(MetaError::RegionInUse {
                region: name.to_string(),
                user: format!("topic `{}`", topic.spec.name),
            });
        }
        self.regions.remove(name);
        Ok(self.commit(
            vec![deleted(ObjectKey::Region(name.to_string()))],
            Outcome::Done,
        ))
    }

    fn put_cell(&mut self, id: &str, region: &str, endpoints: &[String]) -> CommandResult {
        self.limits.check_name("cell", id)?;
        self.limits
            .check_endpoints(&format!("cell `{id}`"), endpoints)?;
        if !self.regions.contains_key(region) {
            return Err(MetaError::RegionNotFound {
                region: region.to_string(),
            });
        }
        let last_heartbeat_ms = match self.cells.get(id) {
            Some(existing) if existing.region != region => {
                return Err(MetaError::CellInOtherRegion {
                    cell: id.to_string(),
                    region: existing.region.clone(),
                });
            }
            Some(existing) => existing.last_heartbeat_ms,
            None => 0,
        };
        let cell = Cell {
            id: id.to_string(),
            region: region.to_string(),
            endpoints: endpoints.to_vec(),
            last_heartbeat_ms,
        };
        self.cells.insert(id.to_string(), cell.clone());
        Ok(self.commit(
            vec![put(ObjectKey::Cell(id.to_string()), Object::Cell(cell))],
            Outcome::Done,
        ))
    }

    /// Heartbeats only move `last_heartbeat_ms` forward, so a delayed batch cannot make a
    /// live cell look older than it is, and never past the batch's own stamp, so a skewed
    /// receiver cannot date a beat in the future. No revision: see the module doc.
    fn record_heartbeats(&mut self, beats: &[CellBeat], now_ms: u64) -> CommandResult {
        self.limits.check_count(
            "cells in one heartbeat batch",
            beats.len(),
            self.limits.heartbeat_batch_cells_max,
        )?;
        let mut recorded = 0;
        let mut unknown_cells = Vec::new();
        for beat in beats {
            match self.cells.get_mut(&beat.cell) {
                Some(cell) => {
                    cell.last_heartbeat_ms = cell.last_heartbeat_ms.max(beat.at_ms.min(now_ms));
                    recorded += 1;
                }
                None => unknown_cells.push(beat.cell.clone()),
            }
        }
        Ok(Applied {
            revision: self.revision,
            outcome: Outcome::Heartbeats {
                recorded,
                unknown_cells,
            },
        })
    }

    fn create_topic(&mut self, spec: &TopicSpec) -> CommandResult {
        if self.topics.contains_key(&spec.name) {
            return Err(MetaError::TopicExists {
                topic: spec.name.clone(),
            });
        }
        self.check_topic_spec(spec)?;
        if let Topology::ActiveStandby { home } = &spec.topology {
            self.check_home_active(home)?;
        }
        let topic = Topic {
            spec: spec.clone(),
            epoch: 0,
            moving_to: None,
        };
        self.topics.insert(spec.name.clone(), topic.clone());
        Ok(self.commit(
            vec![put(
                ObjectKey::Topic(spec.name.clone()),
                Object::Topic(topic),
            )],
            Outcome::Epoch { epoch: 0 },
        ))
    }

    /// Any topic change is compare-and-set on the epoch; a topology change (kind or home)
    /// bumps it, exactly like a failover, so older movers are fenced out.
    fn update_topic(&mut self, spec: &TopicSpec, expected_epoch: u64) -> CommandResult {
        let current = self
            .topics
            .get(&spec.name)
            .ok_or_else(|| MetaError::TopicNotFound {
                topic: spec.name.clone(),
            })?;
        check_epoch(
            &format!("topic `{}`", spec.name),
            expected_epoch,
            current.epoch,
        )?;
        self.check_topic_spec(spec)?;
        if current.spec.message_type != spec.message_type {
            return Err(MetaError::MessageTypeChange {
                topic: spec.name.clone(),
                from: format!("{:?}", current.spec.message_type).to_lowercase(),
                to: format!("{:?}", spec.message_type).to_lowercase(),
            });
        }
        let topology_changed = current.spec.topology != spec.topology;
        if topology_changed && let Topology::ActiveStandby { home } = &spec.topology {
            self.check_home_active(home)?;
        }
        let epoch = if topology_changed {
            current.epoch + 1
        } else {
            current.epoch
        };
        let topic = Topic {
            spec: spec.clone(),
            epoch,
            // A topology change by update ends any switchover in progress.
            moving_to: if topology_changed {
                None
            } else {
                current.moving_to.clone()
            },
        };
        self.topics.insert(spec.name.clone(), topic.clone());
        Ok(self.commit(
            vec![put(
                ObjectKey::Topic(spec.name.clone()),
                Object::Topic(topic),
            )],
            Outcome::Epoch { epoch },
        ))
    }

    fn delete_topic(&mut self, name: &str) -> CommandResult {
        if !self.topics.contains_key(name) {
            return Err(MetaError::TopicNotFound {
                topic: name.to_string(),
            });
        }
        if let Some(group) = self
            .groups
            .values()
            .find(|group| group.topics.contains(name))
        {
            return Err(MetaError::TopicInUse {
                topic: name.to_string(),
                group: group.name.clone(),
            });
        }
        self.topics.remove(name);
        Ok(self.commit(
            vec![deleted(ObjectKey::Topic(name.to_string()))],
            Outcome::Done,
        ))
    }

    fn move_topic_home(
        &mut self,
        name: &str,
        new_home: &str,
        expected_epoch: u64,
    ) -> CommandResult {
        let mut topic = self.movable_topic(name, expected_epoch)?;
        self.check_new_home(&topic, new_home)?;
        topic.spec.topology = Topology::ActiveStandby {
            home: new_home.to_string(),
        };
        topic.epoch += 1;
        topic.moving_to = None;
        self.store_topic_epoch(topic)
    }

    /// A new home must be one of the topic's regions and active.
    fn check_new_home(&self, topic: &Topic, new_home: &str) -> Result<(), MetaError> {
        if !topic.spec.regions.contains(new_home) {
            return Err(MetaError::HomeNotAmongRegions {
                topic: topic.spec.name.clone(),
                home: new_home.to_string(),
            });
        }
        self.check_home_active(new_home)
    }

    /// The active-standby topic `name` at `expected_epoch`, for a switchover step.
    fn movable_topic(&self, name: &str, expected_epoch: u64) -> Result<Topic, MetaError> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| MetaError::TopicNotFound {
                topic: name.to_string(),
            })?;
        if !matches!(topic.spec.topology, Topology::ActiveStandby { .. }) {
            return Err(MetaError::NoHomeToMove {
                topic: name.to_string(),
            });
        }
        check_epoch(&format!("topic `{name}`"), expected_epoch, topic.epoch)?;
        Ok(topic.clone())
    }

    fn store_topic_epoch(&mut self, topic: Topic) -> CommandResult {
        let epoch = topic.epoch;
        let name = topic.spec.name.clone();
        self.topics.insert(name.clone(), topic.clone());
        Ok(self.commit(
            vec![put(ObjectKey::Topic(name), Object::Topic(topic))],
            Outcome::Epoch { epoch },
        ))
    }

    fn begin_topic_move(
        &mut self,
        name: &str,
        new_home: &str,
        expected_epoch: u64,
    ) -> CommandResult {
        let mut topic = self.movable_topic(name, expected_epoch)?;
        self.check_new_home(&topic, new_home)?;
        if matches!(&topic.spec.topology, Topology::ActiveStandby { home } if home == new_home) {
            return Err(MetaError::InvalidMove {
                topic: name.to_string(),
                reason: format!("`{new_home}` is already its home"),
            });
        }
        topic.moving_to = Some(new_home.to_string());
        topic.epoch += 1;
        self.store_topic_epoch(topic)
    }

    fn abort_topic_move(&mut self, name: &str, expected_epoch: u64) -> CommandResult {
        let mut topic = self.movable_topic(name, expected_epoch)?;
        if topic.moving_to.is_none() {
            return Err(MetaError::InvalidMove {
                topic: name.to_string(),
                reason: "no switchover is in progress".to_string(),
            });
        }
        topic.moving_to = None;
        topic.epoch += 1;
        self.store_topic_epoch(topic)
    }

    fn put_consumer_group(&mut self, group: &ConsumerGroup) -> CommandResult {
        self.check_consumer_group(group)?;
        // Ownerships of topics the group no longer subscribes to are dropped with the change.
        let dropped: Vec<MessageGroupKey> = self
            .message_groups
            .keys()
            .filter(|key| key.consumer_group == group.name && !group.topics.contains(&key.topic))
            .cloned()
            .collect();
        let mut updates = vec![put(
            ObjectKey::ConsumerGroup(group.name.clone()),
            Object::ConsumerGroup(group.clone()),
        )];
        updates.extend(self.drop_message_groups(dropped));
        self.groups.insert(group.name.clone(), group.clone());
        Ok(self.commit(updates, Outcome::Done))
    }

    fn delete_consumer_group(&mut self, name: &str) -> CommandResult {
        if !self.groups.contains_key(name) {
            return Err(MetaError::ConsumerGroupNotFound {
                group: name.to_string(),
            });
        }
        let dropped: Vec<MessageGroupKey> = self
            .message_groups
            .keys()
            .filter(|key| key.consumer_group == name)
            .cloned()
            .collect();
        let mut updates = vec![deleted(ObjectKey::ConsumerGroup(name.to_string()))];
        updates.extend(self.drop_message_groups(dropped));
        self.groups.remove(name);
        Ok(self.commit(updates, Outcome::Done))
    }

    fn drop_message_groups(&mut self, keys: Vec<MessageGroupKey>) -> Vec<Update> {
        keys.into_iter()
            .map(|key| {
                self.message_groups.remove(&key);
                deleted(ObjectKey::MessageGroup(key))
            })
            .collect()
    }

    fn put_user(&mut self, user: &User) -> CommandResult {
        self.limits.check_name("user", &user.name)?;
        self.limits.check_count(
            &format!("permissions of user `{}`", user.name),
            user.permissions.len(),
            self.limits.permissions_per_user_max,
        )?;
        for permission in &user.permissions {
            match &permission.resource {
                Resource::Cluster => {}
                Resource::Topic(topic) if !self.topics.contains_key(topic) => {
                    return Err(MetaError::TopicNotFound {
                        topic: topic.clone(),
                    });
                }
                Resource::ConsumerGroup(group) if !self.groups.contains_key(group) => {
                    return Err(MetaError::ConsumerGroupNotFound {
                        group: group.clone(),
                    });
                }
                Resource::Topic(_) | Resource::ConsumerGroup(_) => {}
            }
        }
        self.users.insert(user.name.clone(), user.clone());
        Ok(self.commit(
            vec![put(
                ObjectKey::User(user.name.clone()),
                Object::User(user.clone()),
            )],
            Outcome::Done,
        ))
    }

    fn check_message_group_key(&self, key: &MessageGroupKey) -> Result<(), MetaError> {
        let topic = self
            .topics
            .get(&key.topic)
            .ok_or_else(|| MetaError::TopicNotFound {
                topic: key.topic.clone(),
            })?;
        if topic.spec.message_type != MessageType::Fifo {
            return Err(MetaError::NotFifoTopic {
                topic: key.topic.clone(),
            });
        }
        let group = self.groups.get(&key.consumer_group).ok_or_else(|| {
            MetaError::ConsumerGroupNotFound {
                group: key.consumer_group.clone(),
            }
        })?;
        if !group.topics.contains(&key.topic) {
            return Err(MetaError::NotSubscribed {
                group: key.consumer_group.clone(),
                topic: key.topic.clone(),
            });
        }
        self.limits.check_name("message group", &key.message_group)
    }

    /// Grants the group when it is free, already held by `owner` (a renewal), or its lease
    /// ran out by `now_ms`. The epoch moves only when the owner changes.
    fn claim_message_group(
        &mut self,
        key: &MessageGroupKey,
        owner: &str,
        lease_ms: u64,
        now_ms: u64,
    ) -> CommandResult {
        self.check_message_group_key(key)?;
        self.limits.check_name("consumer", owner)?;
        let lease_max = self.limits.message_group_lease_ms_max;
        if lease_ms == 0 || lease_ms > lease_max {
            return Err(MetaError::LimitExceeded {
                what: "message group lease (ms, must be at least 1)".to_string(),
                count: usize::try_from(lease_ms).unwrap_or(usize::MAX),
                max: usize::try_from(lease_max).unwrap_or(usize::MAX),
            });
        }
        let epoch = match self.message_groups.get(key) {
            None => 1,
            Some(current) if current.owner == owner => current.epoch,
            Some(current) if current.lease_until_ms <= now_ms => current.epoch + 1,
            Some(current) => {
                return Err(MetaError::MessageGroupOwned {
                    key: describe(key),
                    owner: current.owner.clone(),
                    lease_until_ms: current.lease_until_ms,
                });
            }
        };
        let entry = MessageGroupOwner {
            key: key.clone(),
            owner: owner.to_string(),
            lease_until_ms: now_ms.saturating_add(lease_ms),
            epoch,
        };
        self.message_groups.insert(key.clone(), entry.clone());
        Ok(self.commit(
            vec![put(
                ObjectKey::MessageGroup(key.clone()),
                Object::MessageGroup(entry),
            )],
            Outcome::Epoch { epoch },
        ))
    }

    fn release_message_group(&mut self, key: &MessageGroupKey, owner: &str) -> CommandResult {
        match self.message_groups.get(key) {
            Some(current) if current.owner == owner => {}
            _ => {
                return Err(MetaError::NotMessageGroupOwner {
                    key: describe(key),
                    owner: owner.to_string(),
                });
            }
        }
        let updates = self.drop_message_groups(vec![key.clone()]);
        Ok(self.commit(updates, Outcome::Done))
    }
}

/// The compare-and-set rule: a mover must name the epoch it read. Anything else (older from a
/// stale actor, or newer from a confused one) is refused.
fn check_epoch(object: &str, expected: u64, current: u64) -> Result<(), MetaError> {
    if expected != current {
        return Err(MetaError::StaleEpoch {
            object: object.to_string(),
            expected,
            current,
        });
    }
    Ok(())
}

fn describe(key: &MessageGroupKey) -> String {
    format!("{}/{}/{}", key.topic, key.consumer_group, key.message_group)
}

fn put(key: ObjectKey, object: Object) -> Update {
    Update {
        key,
        object: Some(object),
    }
}

fn deleted(key: ObjectKey) -> Update {
    Update { key, object: None }
}
