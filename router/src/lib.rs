//! The router: which region may take a write, where homes move when a region fails, and how a
//! planned switchover moves a home without loss.
//!
//! **Owns** the routing decisions, all sans-IO (fed the route table mirrored from meta,
//! heartbeat times and `now_ms`; no sockets, no clock reads):
//! - [`health`]: healthy / suspect / failed from heartbeat silence, with the defaults that keep
//!   region-loss RTO within 3 s (see the module for the arithmetic).
//! - [`lease`]: write leases renewed by quorum-confirmed exchanges with meta, and when another
//!   region may be promoted, so two writable homes never overlap (property-tested).
//! - [`admission`]: the decision for one write in one region (accept under an epoch, or refuse
//!   as not-home, moving, fenced or not-a-replica, naming where it belongs).
//! - [`failover`]: home moves for active-standby topics whose home failed and whose lease ran
//!   out, and the heir that adopts a failed region's delay messages and transactions.
//! - [`switchover`]: the planned move: fence, confirm, catch up, commit (or abort on timeout).
//!
//! **Depends on** serde and thiserror only. **The IO shell** (in the `meridian` binary) mirrors
//! meta's topics into a [`admission::RouteTable`], renews the lease, installs the admission as
//! the cell's write gate (a refusal becomes a forward or a typed RocketMQ error), runs the
//! failover plan and writes its moves to meta with compare-and-set, tells the heir to adopt,
//! and drives switchovers from the CLI.
//!
//! **Must not touch** the commit log or meta's storage: cells apply what the router decides,
//! and homes move only by compare-and-set epoch changes in meta.
//!
//! Not yet: FIFO message-group ownership in active-active topics (groups are accepted in every
//! region), relaying a failed origin's records between survivors, reconciliation of a returning
//! region's unshipped tail.

pub mod admission;
pub mod error;
pub mod failover;
pub mod health;
pub mod lease;
pub mod switchover;

pub use admission::{Admission, Refusal, RouteTable, RouteTopology, TopicRoute, admit};
pub use error::RouterError;
pub use failover::{FailoverInput, HomeMove, heir_of, plan_home_moves};
pub use health::{Health, HealthPolicy, health_at};
pub use lease::{LeasePolicy, WriteLease};
pub use switchover::{Phase, Step, Switchover};
