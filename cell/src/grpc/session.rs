//! Client sessions: the settings each client announced on its Telemetry streams, and the
//! streams themselves, so that transaction checks reach a live producer of the topic (M2, M5).

use std::collections::HashMap;

use meridian_proto::rocketmq::v2::{self as pb, settings::PubSub};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

/// The sending half of one Telemetry stream.
pub(crate) type CommandSender = mpsc::Sender<Result<pb::TelemetryCommand, tonic::Status>>;

#[derive(Debug)]
struct ClientSession {
    /// Topics the client publishes to (from its producer settings).
    publishing_topics: Vec<String>,
    /// Open Telemetry streams, by stream id.
    streams: Vec<(u64, CommandSender)>,
    /// Turns true when the client announces its termination: its streams end.
    terminated: watch::Sender<bool>,
}

impl Default for ClientSession {
    fn default() -> Self {
        ClientSession {
            publishing_topics: Vec::new(),
            streams: Vec::new(),
            terminated: watch::Sender::new(false),
        }
    }
}

/// Why a stream was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterRefusal {
    TooManyClients,
    TooManyStreams,
}

/// Every client's session, bounded in clients and streams per client.
#[derive(Debug)]
pub(crate) struct Sessions {
    clients: Mutex<HashMap<String, ClientSession>>,
    next_stream_id: std::sync::atomic::AtomicU64,
    max_clients: usize,
    max_streams_per_client: usize,
}

impl Sessions {
    pub(crate) fn new(max_clients: usize, max_streams_per_client: usize) -> Self {
        Sessions {
            clients: Mutex::new(HashMap::new()),
            next_stream_id: std::sync::atomic::AtomicU64::new(1),
            max_clients,
            max_streams_per_client,
        }
    }

    /// Registers a Telemetry stream of `client_id`; returns its id and a watch that turns true
    /// when the client terminates.
    pub(crate) fn open_stream(
        &self,
        client_id: &str,
        sender: CommandSender,
    ) -> Result<(u64, watch::Receiver<bool>), RegisterRefusal> {
        let mut clients = self.clients.lock();
        if !clients.contains_key(client_id) && clients.len() >= self.max_clients {
            return Err(RegisterRefusal::TooManyClients);
        }
        let session = clients.entry(client_id.to_string()).or_default();
        // Streams whose client has gone are pruned before counting.
        session.streams.retain(|(_, sender)| !sender.is_closed());
        if session.streams.len() >= self.max_streams_per_client {
            return Err(RegisterRefusal::TooManyStreams);
        }
        let id = self
            .next_stream_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        session.streams.push((id, sender));
        Ok((id, session.terminated.subscribe()))
    }

    /// Records the settings a client sent.
    pub(crate) fn update_settings(&self, client_id: &str, settings: &pb::Settings) {
        if let Some(PubSub::Publishing(publishing)) = &settings.pub_sub
            && let Some(session) = self.clients.lock().get_mut(client_id)
        {
            session.publishing_topics = publishing
                .topics
                .iter()
                .map(|topic| topic.name.clone())
                .collect();
        }
    }

    /// Forgets one stream; the session goes when its last stream does.
    pub(crate) fn close_stream(&self, client_id: &str, stream_id: u64) {
        let mut clients = self.clients.lock();
        if let Some(session) = clients.get_mut(client_id) {
            session.streams.retain(|(id, _)| *id != stream_id);
            if session.streams.is_empty() {
                clients.remove(client_id);
            }
        }
    }

    /// Forgets a client entirely (NotifyClientTermination): its streams end.
    pub(crate) fn terminate(&self, client_id: &str) {
        if let Some(session) = self.clients.lock().remove(client_id) {
            session.terminated.send_replace(true);
        }
    }

    /// Live streams of producers publishing to `topic`, one per client, in a rotating order
    /// chosen by `rotation` so that checks spread over producers.
    pub(crate) fn producer_streams(&self, topic: &str, rotation: usize) -> Vec<CommandSender> {
        let clients = self.clients.lock();
        let mut found: Vec<CommandSender> = clients
            .values()
            .filter(|session| session.publishing_topics.iter().any(|t| t == topic))
            .filter_map(|session| {
                session
                    .streams
                    .iter()
                    .find(|(_, sender)| !sender.is_closed())
                    .map(|(_, sender)| sender.clone())
            })
            .collect();
        if !found.is_empty() {
            let shift = rotation % found.len();
            found.rotate_left(shift);
        }
        found
    }

    /// Clients with a session now.
    #[cfg(test)]
    pub(crate) fn client_count(&self) -> usize {
        self.clients.lock().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn producer_settings(topics: &[&str]) -> pb::Settings {
        pb::Settings {
            pub_sub: Some(PubSub::Publishing(pb::Publishing {
                topics: topics
                    .iter()
                    .map(|name| pb::Resource {
                        resource_namespace: String::new(),
                        name: name.to_string(),
                    })
                    .collect(),
                max_body_size: 0,
                validate_message_type: false,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn checks_go_only_to_live_producers_of_the_topic() {
        let sessions = Sessions::new(8, 2);
        let (orders_tx, _orders_rx) = mpsc::channel(1);
        let (other_tx, _other_rx) = mpsc::channel(1);
        let (gone_tx, gone_rx) = mpsc::channel(1);
        sessions.open_stream("p1", orders_tx).unwrap();
        sessions.update_settings("p1", &producer_settings(&["orders"]));
        sessions.open_stream("p2", other_tx).unwrap();
        sessions.update_settings("p2", &producer_settings(&["payments"]));
        sessions.open_stream("p3", gone_tx).unwrap();
        sessions.update_settings("p3", &producer_settings(&["orders"]));
        drop(gone_rx);
        assert_eq!(sessions.producer_streams("orders", 0).len(), 1);
        assert_eq!(sessions.producer_streams("payments", 7).len(), 1);
        assert!(sessions.producer_streams("unknown", 0).is_empty());
    }

    #[test]
    fn sessions_and_streams_are_bounded_and_released() {
        let sessions = Sessions::new(1, 1);
        let (a, _a_rx) = mpsc::channel(1);
        let (b, _b_rx) = mpsc::channel(1);
        let (c, _c_rx) = mpsc::channel(1);
        let (id, _) = sessions.open_stream("c1", a).unwrap();
        assert!(matches!(
            sessions.open_stream("c1", b.clone()),
            Err(RegisterRefusal::TooManyStreams)
        ));
        assert!(matches!(
            sessions.open_stream("c2", c),
            Err(RegisterRefusal::TooManyClients)
        ));
        sessions.close_stream("c1", id);
        assert_eq!(sessions.client_count(), 0);
        let (_, mut terminated) = sessions.open_stream("c2", b).unwrap();
        assert!(!*terminated.borrow_and_update());
        sessions.terminate("c2");
        assert!(
            *terminated.borrow_and_update(),
            "the stream learns of the termination"
        );
        assert_eq!(sessions.client_count(), 0);
    }
}
