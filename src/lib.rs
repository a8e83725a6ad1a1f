//! lifeline: a connection-health monitoring agent.
//!
//! # Architecture
//!
//! ```text
//!  config.toml ──► config::load (pass 1: spans, pass 2: typed, every error collected)
//!                      │
//!                      ▼
//!  check::registry ──► KindSpec ──build──► Arc<dyn Check>       (no sockets until run)
//!                      │
//!                      ▼
//!  app::Agent ──► schedule::spawn: one supervisor task per check / shared session
//!                      │  owns interval, timeout, backoff, heartbeats, force-check
//!                      ▼
//!                 Outcome ──► health (status, score) ──► metrics, events::Bus, Observers
//!                                                         (store, alerts)
//!  http::app ──► /metrics, /health*, /api/v1/events (SSE), /ws, /-/reload
//! ```
//!
//! Checks only report [`check::Outcome`]s; [`health`] alone turns them into statuses;
//! [`schedule`] alone owns time. Adding a kind touches `check/` only.
//!
//! Check kinds and notifiers share TLS, HTTP clients, byte caps, addresses and WebSocket
//! plumbing through [`net`]; kinds never import another kind, and `alert/` imports no kind.

pub mod alert;
pub mod app;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod metrics;
pub mod net;
pub mod plugin;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod time;
