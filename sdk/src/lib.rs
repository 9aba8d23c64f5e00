//! The Rust SDK: a RocketMQ-5-style client that knows the fabric.
//!
//! **Will own** `Producer`, `SimpleConsumer` and `PushConsumer`, locality (home region, else the
//! nearest healthy one), failover with idempotent retries (same message id), and the client side
//! of the Meridian topology service.
//!
//! **Will depend on** `proto` (the RocketMQ v2 wire types and the Meridian service) and
//! `topology`.
//!
//! **Must not depend on** `cell`, `meta`, `replicator` or `router`: it talks to the fabric over
//! the network only, like any other client.
//!
//! Nothing is implemented yet; see the open issue for the SDK.
