//! Forwarding: a send the write gate gives to another region is forwarded to that region's
//! cell over real gRPC on loopback, stored there once, and answered to the caller; a forwarded
//! request is never forwarded again.

#![allow(clippy::unwrap_used)]

mod grpc_support;

use grpc_support::*;
use meridian_cell::grpc::{GrpcForwarder, SendForwarder};
use meridian_cell::messaging::{RefusalReason, WriteDecision, WriteGate, WriteRefusal};

/// Gives every topic's writes to `home`.
#[derive(Debug)]
struct HomeGate {
    home: &'static str,
    own: &'static str,
    epoch: u64,
}

impl WriteGate for HomeGate {
    fn check(&self, topic: &str, _message_group: &str) -> WriteDecision {
        if self.home == self.own {
            WriteDecision::Accept { epoch: self.epoch }
        } else {
            WriteDecision::Refuse(WriteRefusal {
                topic: topic.to_string(),
                home_region: self.home.to_string(),
                epoch: self.epoch,
                reason: RefusalReason::NotHome,
            })
        }
    }
}

fn forwarding_config(to: &[(&str, std::net::SocketAddr)]) -> GrpcConfig {
    let forwarder = GrpcForwarder::new(
        to.iter()
            .map(|(region, addr)| (region.to_string(), addr.to_string())),
        5_000,
    )
    .unwrap();
    GrpcConfig {
        forwarder: Some(Arc::new(forwarder) as Arc<dyn SendForwarder>),
        ..fast_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_for_another_home_is_stored_there_once() {
    let eu = Cell::start_in("eu-west", fast_config(), broker_config()).await;
    eu.broker.set_write_gate(Arc::new(HomeGate {
        home: "eu-west",
        own: "eu-west",
        epoch: 3,
    }));
    let us = Cell::start_in(
        "us-east",
        forwarding_config(&[("eu-west", eu.addr)]),
        broker_config(),
    )
    .await;
    us.broker.set_write_gate(Arc::new(HomeGate {
        home: "eu-west",
        own: "us-east",
        epoch: 3,
    }));
    let mut client = us.client().await;
    let response = send(
        &mut client,
        vec![
            message("orders", "fwd-1", pb::MessageType::Normal, b"one"),
            message("orders", "fwd-2", pb::MessageType::Normal, b"two"),
        ],
        "JAVA",
    )
    .await;
    assert_eq!(code(&response.status), Code::Ok as i32, "{response:?}");
    assert_eq!(response.entries.len(), 2);
    for id in ["fwd-1", "fwd-2"] {
        // Acknowledged (async durability) before the indexer made it readable: wait for it.
        let mut stored = None;
        for _ in 0..TEST_TIMEOUT.as_millis() / 10 {
            stored = eu.broker.storage().read_copy("orders", id).unwrap();
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, stored) = stored.unwrap_or_else(|| panic!("{id} never became readable at home"));
        assert_eq!(
            stored
                .properties
                .get("__MERIDIAN_WRITE_EPOCH")
                .map(String::as_str),
            Some("3")
        );
        assert!(
            !us.broker.storage().contains_copy("orders", id).unwrap(),
            "the forwarding region stores nothing"
        );
    }
    us.stop().await;
    eu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_send_is_not_forwarded_again() {
    // Each cell believes the other is home (an epoch race): the first hop forwards, the second
    // refuses with the home it believes in, and the caller gets that refusal.
    let eu = Cell::start_in("eu-west", fast_config(), broker_config()).await;
    let us = Cell::start_in(
        "us-east",
        forwarding_config(&[("eu-west", eu.addr)]),
        broker_config(),
    )
    .await;
    us.broker.set_write_gate(Arc::new(HomeGate {
        home: "eu-west",
        own: "us-east",
        epoch: 4,
    }));
    eu.broker.set_write_gate(Arc::new(HomeGate {
        home: "us-east",
        own: "eu-west",
        epoch: 5,
    }));
    let mut client = us.client().await;
    let response = send(
        &mut client,
        vec![message("orders", "loop-1", pb::MessageType::Normal, b"x")],
        "JAVA",
    )
    .await;
    assert_eq!(
        code(&response.status),
        Code::Forbidden as i32,
        "{response:?}"
    );
    let text = response.status.unwrap().message;
    assert!(
        text.contains("us-east") && text.contains("epoch 5"),
        "{text}"
    );
    assert!(!eu.broker.storage().contains_id("loop-1").unwrap());
    assert!(!us.broker.storage().contains_id("loop-1").unwrap());
    us.stop().await;
    eu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_without_a_known_endpoint_is_a_clear_error() {
    let us = Cell::start_in("us-east", forwarding_config(&[]), broker_config()).await;
    us.broker.set_write_gate(Arc::new(HomeGate {
        home: "ap-south",
        own: "us-east",
        epoch: 1,
    }));
    let mut client = us.client().await;
    let error = client
        .send_message(request(
            pb::SendMessageRequest {
                messages: vec![message("orders", "nowhere", pb::MessageType::Normal, b"x")],
            },
            "JAVA",
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert!(error.message().contains("ap-south"), "{}", error.message());
    us.stop().await;
}

/// Sends every route query for `topic` to `to`.
#[derive(Debug)]
struct Elsewhere {
    topic: &'static str,
    to: std::net::SocketAddr,
}

impl meridian_cell::grpc::RouteAdvisor for Elsewhere {
    fn redirect(&self, topic: &str) -> Option<meridian_cell::grpc::RouteRedirect> {
        (topic == self.topic).then(|| meridian_cell::grpc::RouteRedirect {
            broker_name: "eu-west-cell".to_string(),
            endpoint: self.to,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_query_can_send_clients_to_another_region() {
    let elsewhere: std::net::SocketAddr = "127.0.0.2:8082".parse().unwrap();
    let us = Cell::start_in(
        "us-east",
        GrpcConfig {
            route_advisor: Some(Arc::new(Elsewhere {
                topic: "orders",
                to: elsewhere,
            })),
            ..fast_config()
        },
        broker_config(),
    )
    .await;
    let mut client = us.client().await;
    for (topic, expected) in [("orders", elsewhere), ("fifo", us.addr)] {
        let route = client
            .query_route(request(
                pb::QueryRouteRequest {
                    topic: resource(topic),
                    endpoints: None,
                },
                "JAVA",
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&route.status), Code::Ok as i32);
        assert!(!route.message_queues.is_empty());
        for queue in &route.message_queues {
            let address = &queue
                .broker
                .as_ref()
                .unwrap()
                .endpoints
                .as_ref()
                .unwrap()
                .addresses[0];
            assert_eq!(address.host, expected.ip().to_string(), "{topic}");
            assert_eq!(address.port, i32::from(expected.port()), "{topic}");
        }
    }
    us.stop().await;
}
