//! The bad-input campaign against the RocketMQ gRPC front over real HTTP/2: seeded garbage,
//! truncated and oversized request bodies on every unary method. Each gets a gRPC error with a
//! message (or, when the garbage happens to decode, a protocol status), the server never panics
//! or stops serving, and a message acknowledged before the campaign is still there after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc_support;

use bytes::{Buf, BufMut};
use grpc_support::*;
use meridian_proto::rocketmq::v2 as pb;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Passes bytes through as the request body and hands back the response body as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Every unary method of the service.
const UNARY_METHODS: [&str; 9] = [
    "QueryRoute",
    "SendMessage",
    "QueryAssignment",
    "AckMessage",
    "ForwardMessageToDeadLetterQueue",
    "Heartbeat",
    "EndTransaction",
    "NotifyClientTermination",
    "ChangeInvisibleDuration",
];
/// Garbage bodies per method.
const GARBAGE_PER_METHOD: usize = 40;
/// Over the front's 16 MiB decoding limit.
const OVERSIZED_BYTES: usize = (16 << 20) + 1;

/// A small seeded generator (xorshift64*), so a failing body can be reproduced.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

async fn call(
    grpc: &mut tonic::client::Grpc<Channel>,
    method: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    grpc.ready().await.unwrap();
    let path =
        PathAndQuery::try_from(format!("/apache.rocketmq.v2.MessagingService/{method}")).unwrap();
    let mut request = request(body, "RUST");
    request.set_timeout(std::time::Duration::from_secs(10));
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_oversized_requests_get_errors_and_lose_nothing() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let kept = send(
        &mut client,
        vec![message(
            "orders",
            "KEEP-1",
            pb::MessageType::Normal,
            b"keep me",
        )],
        "RUST",
    )
    .await;
    assert_eq!(code(&kept.status), pb::Code::Ok as i32);
    let channel = Channel::from_shared(format!("http://{}", cell.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);

    let mut garbage = Garbage(0x5eed_cafe_f00d_0001);
    let (mut refused, mut decoded) = (0usize, 0usize);
    for method in UNARY_METHODS {
        for round in 0..GARBAGE_PER_METHOD {
            let len = (garbage.next() % 300) as usize;
            let body = garbage.bytes(len);
            match call(&mut grpc, method, body.clone()).await {
                Err(status) => {
                    assert!(
                        !status.message().is_empty(),
                        "{method} #{round} ({body:?}): an error without a message"
                    );
                    assert!(
                        !matches!(status.code(), tonic::Code::Unknown | tonic::Code::Ok),
                        "{method} #{round}: {status:?}"
                    );
                    refused += 1;
                }
                // Garbage that happens to be a valid protobuf message: the front answered it
                // with its own protocol status instead.
                Ok(_) => decoded += 1,
            }
            assert!(
                !cell.server.is_finished(),
                "the server stopped at {method} #{round}"
            );
        }
    }
    assert!(refused > 0, "no garbage body was refused");
    assert_eq!(refused + decoded, UNARY_METHODS.len() * GARBAGE_PER_METHOD);

    // A valid request cut short.
    let whole = pb::SendMessageRequest {
        messages: vec![message("orders", "CUT-1", pb::MessageType::Normal, b"cut")],
    }
    .encode_to_vec();
    let truncated = call(&mut grpc, "SendMessage", whole[..whole.len() / 2].to_vec()).await;
    let status = truncated.expect_err("a truncated request was accepted");
    assert!(status.message().contains("decode"), "{status:?}");

    // A body over the decoding limit is refused before it is decoded.
    let oversized = call(&mut grpc, "SendMessage", vec![0u8; OVERSIZED_BYTES]).await;
    let status = oversized.expect_err("an oversized request was accepted");
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    assert!(!status.message().is_empty());

    // The server still serves, nothing was stored by the campaign, and the message acknowledged
    // before it is still delivered.
    assert!(!cell.server.is_finished());
    let got = receive_at_least(&mut client, "readers", "orders", 30_000, 1).await;
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|message| message.system_properties.as_ref())
        .map(|system| system.message_id.as_str())
        .collect();
    assert_eq!(ids, ["KEEP-1"], "{got:?}");
    assert_eq!(got[0].body, b"keep me");
    cell.stop().await;
}
