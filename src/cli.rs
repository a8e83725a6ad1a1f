//! Command line (SPEC §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// lifeline: one watcher for every connection a system depends on.
#[derive(Debug, Parser)]
#[command(name = "lifeline", version, about)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = "config.toml")]
    pub config: PathBuf,
    /// Web configuration (TLS, basic auth, headers) in the Prometheus exporter-toolkit
    /// format; overrides `[agent] web_config`. Re-read on reload.
    #[arg(long = "web.config.file", global = true, value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGINT/SIGTERM (SIGHUP reloads the config).
    Run,
    /// Parse and validate the config; print every error as PATH:LINE:COL: message.
    Validate,
    /// Run checks once and print the results (exit 0 healthy, 1 degraded, 2 unhealthy, 3 unknown).
    Check {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Checks to run (default: all).
        names: Vec<String>,
    },
    /// Print a check's status transitions, latency samples and uptime from the history
    /// store (read-only; works while the agent runs).
    History {
        /// Check name.
        name: String,
        /// Start: RFC 3339 or a duration back from now.
        #[arg(long, default_value = "24h")]
        since: String,
        /// End (exclusive): RFC 3339 or a duration back from now.
        #[arg(long, default_value = "now")]
        until: String,
        /// At most this many transitions and samples (newest first).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON (the API's history object plus `uptime`).
        #[arg(long)]
        json: bool,
    },
    /// Work with a cluster (`[cluster]`), reading etcd directly.
    Cluster {
        /// What to do.
        #[command(subcommand)]
        action: ClusterCommand,
    },
    /// Work with plugin libraries.
    Plugin {
        /// What to do.
        #[command(subcommand)]
        action: PluginCommand,
    },
}

/// `lifeline cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the members, and per check its runners, notifier of record and each
    /// runner's status, as etcd has them now (the same as `GET /api/v1/cluster`; exit 0,
    /// 1 if etcd cannot be read, 2 on a config without `[cluster]`).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `lifeline plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a plugin library and print its name, version, ABI version and kinds
    /// (exit 0 ok, 2 refused with the reason).
    Inspect {
        /// The `.so` file.
        file: PathBuf,
    },
}
