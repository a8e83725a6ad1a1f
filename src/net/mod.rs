//! Network plumbing that check kinds and notifiers share. Nothing here knows a kind or a
//! notifier; kinds (`check/*`) and alerting (`alert/*`) import from here, never from
//! each other.
//!
//! | module | owns |
//! |---|---|
//! | [`tls`] | the process crypto provider, trust roots (OS + PEM bundles), rustls client configs and the crate's one custom certificate verifier |
//! | [`http_client`] | how reqwest clients are built (user agent, TLS), the shared client, and classifying / describing reqwest errors |
//! | [`capped`] | byte caps on what a peer sends: a budgeted stream ([`capped::Capped`]) and one capped body/pipe reader ([`capped::CappedBuf`]) |
//! | [`addr`] | `host:port` parsing and formatting (`[v6]:port`), URL component decoding, and the timed TCP connect (happy eyeballs over several addresses) |
//! | [`dns`] | the agent's one asynchronous resolver (hickory; resolv.conf, `/etc/hosts`, cache, `[agent] dns_servers`), also as reqwest's resolver |
//! | [`deadline`] | the current attempt's deadline, set around each attempt by the supervisor, read by lookups and connects to fail with a precise kind in time |
//! | [`tcp_info`] | the kernel's timing of a TCP handshake (`TCP_INFO` round-trip time), which tcp probes report as their latency |
//! | [`ws`] | opening a WebSocket (timed, classified) and its message size limit |
//! | [`stream`] | a plain or TLS byte stream (timed connect and handshake, budgeted reads) for kinds with their own wire codec (grpc, mysql, mqtt) |
//!
//! The layer reports failures in the check contract's vocabulary
//! ([`crate::check::CheckError`], [`crate::check::ErrorKind`], [`crate::check::Phases`]),
//! which `check/mod.rs` defines without importing any kind.

pub mod addr;
pub mod capped;
pub mod deadline;
pub mod dns;
pub mod http_client;
pub mod stream;
pub mod tcp_info;
pub mod tls;
pub mod ws;
