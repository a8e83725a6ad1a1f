//! Integration tests: one binary (fast linking), one module per area.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

mod common;

mod ami;
mod chaos;
mod cluster;
mod core;
mod dashboards;
mod dns;
mod fuzz_corpus;
mod grpc;
mod icmp;
mod mqtt;
mod mysql;
mod pgredis;
mod plugins;
mod push;
mod sip;
mod status_page;
mod store;
mod tls;
mod web;

mod alerting;
mod notifiers;
mod robust;
mod socketio;
