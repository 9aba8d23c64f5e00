//! The router: global routing of requests between regions.
//!
//! **Will own** which region serves a request (the client's region when healthy, else the nearest
//! healthy one by the topology's latency map), forwarding of writes to a topic's home region or a
//! FIFO group's owning region, active-active and active-standby topics, and the failover,
//! switchover and failback state machines with their fencing epochs (sans-IO, fed events and
//! `now`).
//!
//! **Will depend on** `topology` (latency, placement), `meta` (epochs, region health, policies)
//! and `proto` (wire types).
//!
//! **Must not touch** the commit log: it never writes a cell's storage itself; cells apply what
//! the router decides. It must not move a topic's home without a compare-and-set epoch change in
//! `meta`.
//!
//! Nothing is implemented yet; see the open issue for the router.
