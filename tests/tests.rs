//! Integration tests: one binary (fast linking), one module per area.

mod common;

mod core;

mod alerting;
