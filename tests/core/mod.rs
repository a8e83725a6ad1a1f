//! Agent core: config, scheduling, health, HTTP, events, reload.

mod config;
mod smoke;
mod tcp;
mod websocket;
