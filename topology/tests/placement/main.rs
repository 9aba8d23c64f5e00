//! Placement tests: nearest-healthy-region choice and FIFO group ownership, as properties over random
//! fabrics, health views and groups.

// Test code: a panic with the value is the most useful failure report.
#![allow(clippy::unwrap_used)]

mod support;
mod t10_nearest_healthy;
mod t20_group_owner;
