//! Configuration: raw TOML with spans (pass 1, [`raw`]) → validated, typed [`Config`]
//! (pass 2, [`validate`]). Loading never opens a socket. Every error is collected and
//! printed as `PATH:LINE:COL: message`.

pub mod blocks;
pub mod error;
pub mod interpolate;
pub mod names;
pub mod raw;
pub mod readers;
pub mod status_page;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::secret::Secret;
pub use error::{ConfigError, ConfigErrors};
pub use status_page::{StatusPageConfig, Theme};
pub use validate::{load, load_reusing, load_with, parse, parse_reusing, parse_with};

use crate::check::{KindSpec, Mode};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[agent]`.
    pub agent: AgentConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// Every check, defaults applied, in file order.
    pub checks: Vec<Arc<CheckConfig>>,
    /// `[status_page]`.
    pub status_page: StatusPageConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[[notifiers]]`, `[[routes]]`, `[[silences]]`.
    pub alerting: crate::alert::AlertConfig,
    /// `[cluster]`, if the agent is one of several coordinated through etcd.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// What the command line added to the file (kept so a reload reads the same way).
    pub options: LoadOptions,
    /// Where each check came from in the file, so the next reload can take over the
    /// parsed checks whose text did not change (`None`: the file could not be cut up).
    pub(crate) sources: Option<Arc<Sources>>,
}

impl Config {
    /// A hash of the set of check names, when the load recorded one: two configs with
    /// equal hashes have the same names (a 64-bit hash of the set; see `names::Names`).
    pub fn names_hash(&self) -> Option<u64> {
        self.sources.as_ref().map(|s| s.names)
    }
}

/// What a reload compares to reuse a parsed check (see `validate::parse_reusing`).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// One per check, in the order of `Config::checks`.
    pub(crate) blocks: Vec<Block>,
    /// A hash of everything outside a block that a check's parse reads: `[defaults]`,
    /// the plugin directory, `[cluster] replicas`.
    pub(crate) context: u64,
    /// A hash of the set of check names (`depends_on` and `rule` checks refer to them).
    pub(crate) names: u64,
}

/// What a reload needs to know of one parsed check without reading the check itself
/// (at 100,000 checks, reading each one is a cache miss each).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Block {
    /// A hash of its `[[checks]]` block text (`blocks::hash`).
    pub(crate) text: u128,
    /// A hash of its name (`names::hash`).
    pub(crate) name: u64,
    /// Its parse depends only on its text and the context (not `plugin` or `exec`).
    pub(crate) reusable: bool,
    /// Its parse reads other checks' names (`depends_on`, `rule`).
    pub(crate) names_others: bool,
}

/// Settings from the command line that change how the config file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--web.config.file`: overrides `[agent] web_config`.
    pub web_config: Option<PathBuf>,
}

/// Limits of the agent's own HTTP server (`[agent]` keys; see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `header_timeout`: a request's head (and a TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// `idle_timeout`: a keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// `request_timeout`: non-streaming routes answer within this or `503`.
    pub request_timeout: Duration,
    /// `write_timeout`: a client that accepts no bytes for this long is dropped.
    pub write_timeout: Duration,
    /// `max_connections`: open connections past this are closed at once.
    pub max_connections: usize,
    /// `max_streams`: SSE and WebSocket clients past this get `503`.
    pub max_streams: usize,
    /// `max_body_bytes`: larger request bodies get `413`.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_streams: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// `[agent]`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// HTTP listen address (default `127.0.0.1:9477`).
    pub listen: SocketAddr,
    /// History and outbox directory.
    pub data_dir: PathBuf,
    /// Where `plugin = "name"` is looked up.
    pub plugin_dir: PathBuf,
    /// Bearer token required on POST routes, if set.
    pub api_token: Option<Secret<String>>,
    /// This agent's share of the checks.
    pub shard: Option<Shard>,
    /// `[agent.connectivity] checks = [...]`: checks that prove the agent's network.
    pub connectivity: Vec<String>,
    /// `web_config`, resolved against the config file's directory (before the
    /// `--web.config.file` override).
    pub web_config_path: Option<PathBuf>,
    /// `web_config` / `--web.config.file`, loaded: TLS, basic auth, response headers.
    pub web: Option<Arc<crate::http::web_config::WebConfig>>,
    /// `public_paths`: routes readable without basic auth (`/-/healthy`, `/-/ready` always).
    pub public_paths: Vec<String>,
    /// `allowed_origins`: browser origins accepted besides the agent's own.
    pub allowed_origins: Vec<String>,
    /// `allowed_hosts`: if not empty, other `Host` headers get `421`.
    pub allowed_hosts: Vec<String>,
    /// Limits of the HTTP server.
    pub http: HttpLimits,
    /// `dns_servers`: name servers to ask instead of `/etc/resolv.conf`'s (`IP` or
    /// `IP:PORT`, port 53 by default); empty means the system's.
    pub dns_servers: Vec<SocketAddr>,
}

/// `shard = "i/n"`: this agent runs the checks whose name hashes to `i` (1-based) of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based index.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// True if check `name` belongs to this shard (stable FNV-1a hash of the name).
    pub fn owns(&self, name: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.count)) as u32 == self.index - 1
    }
}

/// `[metrics]`: what the agent's own `/metrics` carries per check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `latency_histogram = "classic"` (default, true) or `"none"`: the 16 series of
    /// `lifeline_check_latency_seconds` per check.
    pub latency_histogram: bool,
    /// `[metrics.kinds.<kind>] latency_histogram`: the same, per kind, over the above.
    pub kinds: BTreeMap<&'static str, bool>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            latency_histogram: true,
            kinds: BTreeMap::new(),
        }
    }
}

impl MetricsConfig {
    /// Whether checks of `kind` export the latency histogram.
    pub fn histogram_for(&self, kind: &str) -> bool {
        self.kinds
            .get(kind)
            .copied()
            .unwrap_or(self.latency_histogram)
    }
}

/// `[history]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// How long rows are kept (default 30d).
    pub retention: Duration,
    /// Record at most one latency sample per check this often (0 = every result).
    pub sample_every: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            sample_every: Duration::ZERO,
        }
    }
}

/// `[defaults.backoff]` / a check's `backoff`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// First delay.
    pub base: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
    /// Growth factor, ≥ 1.
    pub multiplier: f64,
    /// Uniform random `[0, jitter)` added to each delay.
    pub jitter: Duration,
    /// After this many consecutive failures `connection:max_attempts_reached` is emitted
    /// once and attempts continue every `max`; 0 = unlimited.
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: Duration::from_secs(1),
            max_attempts: 15,
        }
    }
}

/// `[defaults.heartbeat]` / a check's `heartbeat` (session mode).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// No heartbeat answer for this long → degraded.
    pub poor_after: Duration,
    /// No heartbeat answer for this long → session dropped and reconnected.
    pub stale_after: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            poor_after: Duration::from_secs(15),
            stale_after: Duration::from_secs(30),
        }
    }
}

/// Timing and thresholds of one check (`[defaults]` merged with its own keys).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Probe / heartbeat cadence while healthy.
    pub interval: Duration,
    /// One attempt's budget.
    pub timeout: Duration,
    /// Consecutive failures before a probe check is unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes before it is healthy again.
    pub healthy_threshold: u32,
    /// A success slower than this is degraded.
    pub degraded_latency: Duration,
    /// Retry delays.
    pub backoff: BackoffConfig,
    /// Session heartbeat limits.
    pub heartbeat: HeartbeatConfig,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            unhealthy_threshold: 3,
            healthy_threshold: 1,
            degraded_latency: Duration::from_secs(1),
            backoff: BackoffConfig::default(),
            heartbeat: HeartbeatConfig::default(),
        }
    }
}

/// One `[[checks]]` entry, validated.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Unique name.
    pub name: String,
    /// Kind name (`tcp`, `websocket`, …).
    pub kind: &'static str,
    /// Probe or session.
    pub mode: Mode,
    /// The check's own labels (exported on `lifeline_check_info` only).
    pub labels: BTreeMap<String, String>,
    /// Share in the overall score.
    pub weight: f64,
    /// Failing makes the overall status at least `partial`.
    pub critical: bool,
    /// Checks whose failure holds this one's alerts.
    pub depends_on: Vec<String>,
    /// `replicas`, `locations`, `quorum`: where it runs in a cluster.
    pub placement: crate::cluster::Placement,
    /// Timing and thresholds.
    pub timing: Timing,
    /// The kind's own settings.
    pub spec: Arc<dyn KindSpec>,
    /// Changes whenever anything about the check changes (reload keeps unchanged checks).
    pub fingerprint: u64,
}
