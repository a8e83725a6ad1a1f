//! Integration tests: one binary (fast linking), one module per area.

mod common;

mod core;
mod dashboards;
mod plugins;
mod sip;
mod status_page;
mod store;
