//! The one place that knows every check kind. Adding a kind means adding its module and
//! one line to [`KINDS`]; nothing else (scheduler, health, HTTP) changes.

use std::sync::Arc;

use super::KindSpec;
pub use super::ParseCx;
use crate::config::raw::Table;

/// Reads a kind's keys from a `[[checks]]` table. Errors go to the table's loader;
/// `None` when the table is invalid.
pub type ParseFn = fn(&Table<'_, '_>, &ParseCx<'_>) -> Option<Arc<dyn KindSpec>>;

/// A registered kind.
pub struct KindInfo {
    /// The `kind = "…"` name.
    pub name: &'static str,
    /// Whether `mode = "session"` is supported.
    pub session: bool,
    /// The parser.
    pub parse: ParseFn,
}

/// Every kind lifeline knows.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        name: "tcp",
        session: false,
        parse: super::tcp::parse,
    },
    KindInfo {
        name: "tls",
        session: false,
        parse: super::tls::parse,
    },
    KindInfo {
        name: "dns",
        session: false,
        parse: super::dns::parse,
    },
    KindInfo {
        name: "icmp",
        session: false,
        parse: super::icmp::parse,
    },
    KindInfo {
        name: "http",
        session: false,
        parse: super::http::parse,
    },
    KindInfo {
        name: "websocket",
        session: true,
        parse: super::websocket::parse,
    },
    KindInfo {
        name: "sip",
        session: true,
        parse: super::sip::parse,
    },
    KindInfo {
        name: "exec",
        session: false,
        parse: super::exec::parse,
    },
    KindInfo {
        name: "plugin",
        session: false,
        parse: super::plugin::parse,
    },
    KindInfo {
        name: "rule",
        session: false,
        parse: super::rule::parse,
    },
    KindInfo {
        name: "postgres",
        session: true,
        parse: super::postgres::parse,
    },
    KindInfo {
        name: "redis",
        session: true,
        parse: super::redis::parse,
    },
    KindInfo {
        name: "socketio",
        session: true,
        parse: super::socketio::parse,
    },
    KindInfo {
        name: "ami",
        session: true,
        parse: super::ami::parse,
    },
    KindInfo {
        name: "push",
        session: false,
        parse: super::push::parse,
    },
    KindInfo {
        name: "grpc",
        session: true,
        parse: super::grpc::parse,
    },
    KindInfo {
        name: "mqtt",
        session: true,
        parse: super::mqtt::parse,
    },
    KindInfo {
        name: "mysql",
        session: true,
        parse: super::mysql::parse,
    },
];

/// Looks a kind up by name.
pub fn find(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.name == name)
}
