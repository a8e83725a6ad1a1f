//! Agent core: config, scheduling, health, HTTP, events, reload.

mod binary;
mod config;
mod heartbeat;
mod http_api;
mod http_kind;
mod reaper;
mod smoke;
mod tcp;
mod websocket;
