//! Chaos tests (issue 12): real peers inside network namespaces the tests create
//! (`common::netns`), real faults, and the agent binary (`target/debug/lifeline`) as a
//! child process, so its file descriptors and RSS are its own (not shared with tests
//! running in parallel) and its events come from its `/ws` stream.
//!
//! For each of tcp, http, websocket (session), socketio (session), sip udp, sip tcp
//! (session), ami (session), postgres (session) and redis (session):
//! * [`partition`]: 100 % loss on the peer's link (nftables DROP in its namespace), heal;
//! * [`restart`]: the peer SIGKILLed and started again, 50 times in a row;
//! * [`slow`]: every reply delayed by 1.5 s by a relay written here ([`relay`]);
//!
//! and [`resolver`]: the agent in a namespace whose resolver address drops every packet.
//!
//! Peers: separate processes spawned inside the namespace (lighttpd for tcp/http, the npm
//! `ws` server `tests/peers/websocket/server.js`, the npm `socket.io` server, Kamailio
//! for sip, `tests/peers/ami/server.py` for ami, PostgreSQL, redis-server), killed with
//! SIGKILL by their own PID (Kamailio: its own process group) and started again on the
//! same address. The AMI peer is the transcript server of `common::fake_ami` as a Python
//! process (Asterisk is not in Debian 12; `ami::transcript` replays the recorded session
//! against it byte for byte).

pub mod agent;
mod kill9;
mod partition;
mod peers;
mod relay;
mod resolver;
mod restart;
mod slow;

pub use agent::{AgentProc, BIN, CHECK, Ev};
pub use peers::Peer;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// The kinds the chaos tests cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Http,
    Websocket,
    Socketio,
    SipUdp,
    SipTcp,
    Ami,
    Postgres,
    Redis,
}

impl Kind {
    /// A session check (`mode = "session"`), else a probe.
    pub fn session(self) -> bool {
        !matches!(self, Kind::Tcp | Kind::Http | Kind::SipUdp)
    }

    /// The `[[checks]]` table for [`CHECK`] against `to`, then `timing` lines.
    pub fn check_toml(self, to: SocketAddrV4, timing: &str, slow: bool) -> String {
        let keys = match self {
            Kind::Tcp => format!("kind = \"tcp\"\naddress = \"{to}\""),
            Kind::Http => format!("kind = \"http\"\nurl = \"http://{to}/\""),
            Kind::Websocket => {
                format!("kind = \"websocket\"\nmode = \"session\"\nurl = \"ws://{to}/\"")
            }
            // Through the slow relay, the heartbeat is an acknowledged event (its round
            // trip is the latency); otherwise the server's pings.
            Kind::Socketio if slow => format!(
                "kind = \"socketio\"\nmode = \"session\"\nurl = \"http://{to}\"\nemit = {{ event = \"echo\" }}"
            ),
            Kind::Socketio => {
                format!("kind = \"socketio\"\nmode = \"session\"\nurl = \"http://{to}\"")
            }
            Kind::SipUdp => format!("kind = \"sip\"\ntarget = \"sip:{to};transport=udp\""),
            Kind::SipTcp => {
                format!("kind = \"sip\"\nmode = \"session\"\ntarget = \"sip:{to};transport=tcp\"")
            }
            Kind::Ami => format!(
                "kind = \"ami\"\nmode = \"session\"\naddress = \"{to}\"\nusername = \"monitor\"\nsecret = \"amisecret\""
            ),
            Kind::Postgres => format!(
                "kind = \"postgres\"\nmode = \"session\"\ndsn = \"postgres://app:{}@{to}/appdb?sslmode=disable\"",
                crate::common::postgres::APP_PASSWORD
            ),
            Kind::Redis => {
                format!("kind = \"redis\"\nmode = \"session\"\nurl = \"redis://{to}/0\"")
            }
        };
        format!("[[checks]]\nname = \"{CHECK}\"\n{keys}\n{timing}\n")
    }
}

/// An agent config with the API on `{listen}` and one check.
pub fn agent_config(check: &str) -> String {
    format!("[agent]\nlisten = \"{{listen}}\"\ndata_dir = \"{{dir}}/data\"\n{check}")
}

/// Slack allowed past a bound on this 2-core machine shared with other builds (the
/// agent's timers, a child process, event delivery over `/ws`).
pub const SLACK: Duration = Duration::from_millis(750);

/// Waits until `f` returns true (polling every 50 ms), or panics after `within`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
