//! The Telemetry stream (CONFORMANCE M1–M6): the client announces its settings, the cell answers
//! with the merged settings it will apply, and later sends recover-orphaned-transaction
//! commands down the stream of a producer of the topic.

use std::sync::atomic::Ordering;

use meridian_proto::rocketmq::v2::{
    self as pb, Code, settings::PubSub, telemetry_command::Command,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

use super::convert;
use super::service::{Caller, CellService, ItemStream};
use super::session::RegisterRefusal;
use super::status::{self, Refusal};
use crate::messaging::{Backoff, RetryPolicy, TransactionCheck};

/// Producer retry policy handed to clients (the reference proxy's defaults).
const PRODUCER_MAX_ATTEMPTS: i32 = 3;
const PRODUCER_BACKOFF_INITIAL_MS: u64 = 10;
const PRODUCER_BACKOFF_MAX_MS: u64 = 1_000;
const PRODUCER_BACKOFF_MULTIPLIER: f32 = 2.0;
/// Messages per receive the cell suggests to consumers.
const RECEIVE_BATCH_SIZE: i32 = 32;

impl CellService {
    /// Opens a Telemetry stream; the response stream is returned before anything is read (M1).
    pub(crate) fn open_telemetry(
        &self,
        request: Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> ItemStream<pb::TelemetryCommand> {
        let (sender, receiver) = mpsc::channel(self.inner.config.max_telemetry_queue_commands);
        let caller = self.caller_of(&request);
        let service = self.clone();
        tokio::spawn(async move {
            service
                .run_telemetry(caller, request.into_inner(), sender)
                .await;
        });
        Box::pin(ReceiverStream::new(receiver))
    }

    async fn run_telemetry(
        &self,
        caller: Result<Caller, (Refusal, pb::Language)>,
        mut inbound: tonic::Streaming<pb::TelemetryCommand>,
        sender: mpsc::Sender<Result<pb::TelemetryCommand, tonic::Status>>,
    ) {
        // A4: a refused caller keeps its stream, but every Settings gets the refusal, so that
        // the client surfaces a clean error instead of hanging.
        let (caller, stream_id, terminated) = match caller {
            Ok(caller) => match self
                .inner
                .sessions
                .open_stream(&caller.client_id, sender.clone())
            {
                Ok((id, terminated)) => (Ok(caller), Some(id), Some(terminated)),
                Err(refusal) => {
                    let message = match refusal {
                        RegisterRefusal::TooManyClients => "the cell has too many client sessions",
                        RegisterRefusal::TooManyStreams => {
                            "the client has too many Telemetry streams"
                        }
                    };
                    let language = caller.language;
                    (
                        Err((Refusal::new(Code::TooManyRequests, message), language)),
                        None,
                        None,
                    )
                }
            },
            Err(refused) => (Err(refused), None, None),
        };
        // A stream that was never registered cannot be terminated by the client: it waits on a
        // watch whose sender lives as long as this task (a dropped sender would end the wait).
        let (_unregistered_sender, unregistered) = watch::channel(false);
        let mut terminated = terminated.unwrap_or(unregistered);
        loop {
            let command = tokio::select! {
                command = inbound.next() => command,
                // The response side is gone (the client hung up or the cell is stopping).
                () = sender.closed() => break,
                // NotifyClientTermination: the client's streams end (H2).
                _ = terminated.wait_for(|done| *done) => break,
            };
            let Some(Ok(command)) = command else {
                break;
            };
            let reply = match (&caller, command.command) {
                (Ok(caller), Some(Command::Settings(settings))) => {
                    self.inner
                        .sessions
                        .update_settings(&caller.client_id, &settings);
                    Some(pb::TelemetryCommand {
                        status: Some(status::ok()),
                        command: Some(Command::Settings(self.merged_settings(settings))),
                    })
                }
                (Err((refusal, language)), Some(Command::Settings(settings))) => {
                    Some(pb::TelemetryCommand {
                        status: Some(refusal.to_status(*language)),
                        command: Some(Command::Settings(settings)),
                    })
                }
                // Answers to commands the cell never sends (M6) and unknown items are ignored.
                _ => None,
            };
            if let Some(reply) = reply
                && sender.send(Ok(reply)).await.is_err()
            {
                break;
            }
        }
        if let (Ok(caller), Some(id)) = (&caller, stream_id) {
            self.inner.sessions.close_stream(&caller.client_id, id);
        }
    }

    /// The client's settings completed with what the cell applies (M3).
    fn merged_settings(&self, mut settings: pb::Settings) -> pb::Settings {
        let limits = &self.inner.broker.config().limits;
        match &mut settings.pub_sub {
            Some(PubSub::Publishing(publishing)) => {
                publishing.max_body_size =
                    i32::try_from(limits.max_message_body_bytes).unwrap_or(i32::MAX);
                publishing.validate_message_type = true;
                settings.backoff_policy = Some(pb::RetryPolicy {
                    max_attempts: PRODUCER_MAX_ATTEMPTS,
                    strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
                        pb::ExponentialBackoff {
                            initial: Some(convert::duration(PRODUCER_BACKOFF_INITIAL_MS)),
                            max: Some(convert::duration(PRODUCER_BACKOFF_MAX_MS)),
                            multiplier: PRODUCER_BACKOFF_MULTIPLIER,
                        },
                    )),
                });
            }
            Some(PubSub::Subscription(subscription)) => {
                let group = subscription
                    .group
                    .as_ref()
                    .and_then(|group| self.inner.broker.group(&group.name).ok());
                subscription.receive_batch_size = Some(RECEIVE_BATCH_SIZE);
                subscription.long_polling_timeout =
                    Some(convert::duration(self.inner.config.max_long_polling_ms));
                if let Some(group) = group {
                    subscription.fifo = Some(group.fifo);
                    settings.backoff_policy = Some(retry_policy(&group.retry));
                }
            }
            None => {}
        }
        settings.metric = Some(pb::Metric {
            on: false,
            endpoints: None,
        });
        settings
    }

    /// Sends the broker's transaction checks to producers of each topic until shutdown (M5).
    /// A check that finds no live producer is dropped; the broker asks again on its schedule.
    pub(crate) async fn forward_transaction_checks(self, mut shutdown: watch::Receiver<bool>) {
        let mut checks = self.inner.broker.subscribe_transaction_checks();
        loop {
            let check = tokio::select! {
                check = checks.recv() => check,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match check {
                Ok(check) => self.deliver_check(check),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "transaction checks dropped; they will be repeated");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn deliver_check(&self, check: TransactionCheck) {
        let rotation = self.inner.check_rotation.fetch_add(1, Ordering::Relaxed);
        let producers = self.inner.sessions.producer_streams(
            &check.message.topic,
            usize::try_from(rotation).unwrap_or_default(),
        );
        let command = pb::TelemetryCommand {
            // M5: a command, not a reply; no status.
            status: None,
            command: Some(Command::RecoverOrphanedTransactionCommand(
                pb::RecoverOrphanedTransactionCommand {
                    message: Some(convert::record_message(
                        &check.message,
                        None,
                        &self.inner.store_host,
                    )),
                    transaction_id: check.transaction_id.clone(),
                },
            )),
        };
        for producer in producers {
            // try_send: a producer whose stream is full is skipped, never waited on.
            if producer.try_send(Ok(command.clone())).is_ok() {
                tracing::debug!(topic = %check.message.topic, transaction = %check.transaction_id, check = check.check, "transaction check sent");
                return;
            }
        }
        tracing::debug!(topic = %check.message.topic, transaction = %check.transaction_id, "no live producer for a transaction check");
    }
}

/// A group's retry policy as the protocol states it.
fn retry_policy(policy: &RetryPolicy) -> pb::RetryPolicy {
    let strategy = match &policy.backoff {
        Backoff::Exponential {
            initial_ms,
            max_ms,
            multiplier,
        } => pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
            initial: Some(convert::duration(*initial_ms)),
            max: Some(convert::duration(*max_ms)),
            multiplier: *multiplier as f32,
        }),
        Backoff::Fixed(delay_ms) => {
            pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
                next: vec![convert::duration(*delay_ms)],
            })
        }
        Backoff::Customized(delays_ms) => {
            pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
                next: delays_ms.iter().map(|ms| convert::duration(*ms)).collect(),
            })
        }
    };
    pb::RetryPolicy {
        max_attempts: i32::try_from(policy.max_delivery_attempts).unwrap_or(i32::MAX),
        strategy: Some(strategy),
    }
}
