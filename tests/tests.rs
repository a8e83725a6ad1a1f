//! Integration tests: one binary (fast linking), one module per area.

mod common;

mod ami;
mod core;
mod socketio;
