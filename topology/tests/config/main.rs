//! Configuration tests: the dev fabric, every parse and validation error class, and round trips.

// Test code: a panic with the value is the most useful failure report.
#![allow(clippy::unwrap_used)]

mod strategies;
mod support;
mod t10_dev_fabric;
mod t20_parse_errors;
mod t30_validation_errors;
mod t40_round_trip;
mod t50_validation_properties;
