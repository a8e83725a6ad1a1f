//! Integration tests: one binary (fast linking), one module per area.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

mod common;

mod ami;
mod chaos;
mod core;
mod dashboards;
mod dns;
mod fuzz_corpus;
mod pgredis;
mod plugins;
mod sip;
mod status_page;
mod store;
mod web;

mod alerting;
mod robust;
mod socketio;
