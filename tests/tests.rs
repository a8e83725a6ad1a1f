//! Integration tests: one binary (fast linking), one module per area.

mod common;

mod ami;
mod core;
mod dashboards;
mod pgredis;
mod plugins;
mod sip;
mod status_page;
mod store;
mod web;

mod alerting;
mod socketio;
