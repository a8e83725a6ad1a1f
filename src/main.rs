//! The `lifeline` binary: parses the command line, maps errors to exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lifeline::check::{Outcome, Verdict};
use lifeline::cli::{Cli, Command};
use lifeline::config::{CheckConfig, Config, LoadOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    lifeline::telemetry::init(cli.log_format);
    lifeline::net::tls::install_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeline: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = LoadOptions {
        web_config: cli.web_config_file.clone(),
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Validate => validate(&cli.config, &opts),
            Command::Run => run(&cli.config, &opts).await,
            Command::Check { json, names } => check(&cli.config, &opts, json, names).await,
            Command::Plugin {
                action: lifeline::cli::PluginCommand::Inspect { file },
            } => inspect_plugin(&file),
            Command::Cluster {
                action: lifeline::cli::ClusterCommand::Status { json },
            } => cluster_status(&cli.config, &opts, json).await,
            Command::History {
                name,
                since,
                until,
                limit,
                json,
            } => history(&cli.config, &opts, &name, &since, &until, limit, json),
        }
    });
    // A blocking thread may still be inside a slow reload (a plugin's `create` waiting
    // out its timeout): exiting does not wait for it.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn cluster_status(path: &std::path::Path, opts: &LoadOptions, json: bool) -> ExitCode {
    let config = match load(path, opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.cluster.is_none() {
        eprintln!("lifeline: {}: no [cluster] section", path.display());
        return ExitCode::from(2);
    }
    let r = match lifeline::cluster::report::from_etcd(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lifeline: cannot read the cluster from etcd: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!("members ({}):", r.members.len());
    for m in &r.members {
        println!(
            "  {:<24} {:<16} since {}  lease {}",
            m.name, m.location, m.since, m.lease
        );
    }
    println!("checks ({}):", r.checks.len());
    println!("  {:<32} {:<24} RUNNERS (status)", "CHECK", "NOTIFIER");
    for c in &r.checks {
        let runners: Vec<String> = c
            .runners
            .iter()
            .map(|m| {
                let st = c.statuses.get(m).map(|s| s.status.as_str()).unwrap_or("-");
                format!("{m} ({st})")
            })
            .collect();
        println!(
            "  {:<32} {:<24} {}",
            c.name,
            c.notifier.as_deref().unwrap_or("(no live member)"),
            runners.join(", ")
        );
    }
    ExitCode::SUCCESS
}

fn inspect_plugin(file: &std::path::Path) -> ExitCode {
    match lifeline::plugin::load(file) {
        Ok(p) => {
            println!("file:    {}", p.path.display());
            println!("name:    {}", p.name());
            println!("version: {}", p.version());
            println!("abi:     {}", p.abi());
            println!("kinds:   {}", p.kinds().join(", "));
            println!("flags:   {}", p.flag_names().join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lifeline: plugin refused: {e}");
            ExitCode::from(2)
        }
    }
}

fn load(path: &std::path::Path, opts: &LoadOptions) -> Result<Config, ExitCode> {
    lifeline::config::load_with(path, opts).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("{e}");
        }
        eprintln!(
            "{}: {} error{}",
            path.display(),
            errs.0.len(),
            if errs.0.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(2)
    })
}

fn validate(path: &std::path::Path, opts: &LoadOptions) -> ExitCode {
    match load(path, opts) {
        Ok(c) => {
            println!("{}: ok ({} checks)", path.display(), c.checks.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run(path: &std::path::Path, opts: &LoadOptions) -> ExitCode {
    let config = match load(path, opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(n) = lifeline::http::raise_nofile_limit() {
        tracing::debug!(nofile = n, "open file limit");
    }
    let listen = config.agent.listen;
    let metrics = lifeline::metrics::Metrics::new();
    metrics.reload(true);
    // Opening migrates and reads the last states: SQLite work, off the async workers.
    let opened = {
        let (dir, history, m) = (
            config.agent.data_dir.clone(),
            config.history.clone(),
            metrics.clone(),
        );
        tokio::task::spawn_blocking(move || lifeline::store::Store::open(&dir, &history, m)).await
    };
    let store = match opened {
        Ok(Ok(s)) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "history store not started");
            None
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "history store not started");
            None
        }
    };
    let cluster = match &config.cluster {
        None => None,
        Some(_) => match lifeline::cluster::Cluster::new(&config, &metrics) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("lifeline: [cluster]: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let gate = cluster
        .clone()
        .map(|c| c as Arc<dyn lifeline::alert::gate::Gate>);
    let alerts = match lifeline::alert::AlertEngine::start_with(
        &config,
        metrics.clone(),
        lifeline::net::http_client::shared(),
        gate,
    )
    .await
    {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot start alerting");
            return ExitCode::from(1);
        }
    };
    let mut observers: Vec<Arc<dyn lifeline::events::Observer>> = Vec::new();
    if let Some(s) = &store {
        observers.push(s.clone());
    }
    observers.push(alerts.clone());
    if let Some(c) = &cluster {
        observers.push(c.clone());
    }
    let agent = lifeline::app::Agent::new(config, metrics, Arc::new(observers));
    if let Some(s) = &store {
        agent.restore(s.take_restored());
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot listen");
            return ExitCode::from(1);
        }
    };
    if let Some(c) = &cluster {
        // Runs nothing until the member list says what is this member's.
        c.start(agent.clone(), alerts.clone());
    }
    agent.apply().await;
    // The load's document is garbage now: give its pages back.
    let _ = tokio::task::spawn_blocking(lifeline::metrics::background::release_freed_memory).await;
    tokio::spawn(lifeline::metrics::background::trim_every(
        lifeline::metrics::background::TRIM_EVERY,
        agent.cancel.clone(),
    ));
    let tls = agent
        .config
        .load()
        .agent
        .web
        .as_ref()
        .is_some_and(|w| w.tls.is_some());
    tracing::info!(%listen, tls, checks = agent.states().names().len(), "lifeline running");
    let server = tokio::spawn(lifeline::http::serve(
        listener,
        lifeline::http::AppState {
            agent: agent.clone(),
            store: store.clone(),
            alerts: Some(alerts.clone()),
            cluster: cluster.clone(),
        },
        agent.cancel.clone(),
    ));
    wait_for_signals(&agent).await;
    tracing::info!("shutting down");
    if let Some(c) = &cluster {
        // The others take this member's checks over at once, not after lease_ttl.
        c.shutdown().await;
    }
    agent.shutdown(Duration::from_secs(5)).await;
    alerts.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    if let Some(s) = store {
        let _ = tokio::task::spawn_blocking(move || s.shutdown()).await;
    }
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signals(agent: &Arc<lifeline::app::Agent>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                // Off the signal loop: a slow reload never delays SIGTERM, and a second
                // SIGHUP starts a second reload (the later one is what runs).
                let a = agent.clone();
                tokio::spawn(async move {
                    let _ = a.reload().await;
                });
            }
        }
    }
}

fn status_of(o: &Outcome, c: &CheckConfig) -> &'static str {
    match &o.verdict {
        Verdict::Up if o.latency > c.timing.degraded_latency => "degraded",
        Verdict::Up => "healthy",
        Verdict::Warn(_) => "degraded",
        Verdict::Down(_) => "unhealthy",
        Verdict::Unknown => "unknown",
    }
}

async fn check(
    path: &std::path::Path,
    opts: &LoadOptions,
    json: bool,
    names: Vec<String>,
) -> ExitCode {
    let config = match load(path, opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !config.checks.iter().any(|c| &c.name == *n))
        .collect();
    if !unknown.is_empty() {
        for n in unknown {
            eprintln!("lifeline: no check named `{n}`");
        }
        return ExitCode::from(3);
    }
    let results = lifeline::app::check_once(&config, &names).await;
    let mut worst = 0u8;
    let mut rows = Vec::new();
    for (c, o) in &results {
        let status = status_of(o, c);
        worst = worst.max(match status {
            "healthy" => 0,
            "degraded" => 1,
            "unhealthy" => 2,
            _ => 3,
        });
        rows.push(serde_json::json!({
            "name": c.name,
            "kind": c.kind,
            "mode": c.mode.as_str(),
            "status": status,
            "latency_ms": o.latency.as_secs_f64() * 1000.0,
            "error_kind": o.error_kind(),
            "message": o.message,
            "details": o.details,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        println!(
            "{:<24} {:<10} {:<10} {:>10}  MESSAGE",
            "NAME", "KIND", "STATUS", "LATENCY"
        );
        for r in &rows {
            println!(
                "{:<24} {:<10} {:<10} {:>8.1}ms  {}{}",
                r["name"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
                r["latency_ms"].as_f64().unwrap_or(0.0),
                r["error_kind"]
                    .as_str()
                    .map(|k| format!("[{k}] "))
                    .unwrap_or_default(),
                r["message"].as_str().unwrap_or(""),
            );
        }
    }
    ExitCode::from(worst)
}

/// `lifeline history NAME`: exit 0, 1 store unreadable, 2 invalid config, 3 unknown check.
fn history(
    path: &std::path::Path,
    opts: &LoadOptions,
    name: &str,
    since: &str,
    until: &str,
    limit: usize,
    json: bool,
) -> ExitCode {
    let config = match load(path, opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = std::time::SystemTime::now();
    let (since_t, until_t) = match (
        lifeline::store::parse_time(since, now),
        lifeline::store::parse_time(until, now),
    ) {
        (Ok(a), Ok(b)) => (a, b + Duration::from_millis(1)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("lifeline: {e}");
            return ExitCode::from(2);
        }
    };
    let configured = config.checks.iter().any(|c| c.name == name);
    let reader = match lifeline::store::Reader::open(&config.agent.data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lifeline: {e}");
            return ExitCode::from(1);
        }
    };
    let found = reader
        .history(name, since_t, until_t, limit.max(1))
        .and_then(|h| Ok((h, reader.uptime(name, since_t, until_t, now)?)));
    let (h, up) = match found {
        Ok((Some(h), Some(u))) => (h, u),
        Ok(_) if configured => {
            println!("{name}: no history recorded yet");
            return ExitCode::SUCCESS;
        }
        Ok(_) => {
            eprintln!("lifeline: no check named `{name}` in the configuration or the history");
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("lifeline: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        let mut v = serde_json::to_value(&h).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "uptime".into(),
                serde_json::to_value(&up).unwrap_or_default(),
            );
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let ratio = up
        .uptime_ratio
        .map(|r| format!("{:.3}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into());
    println!(
        "{name}: uptime {ratio} since {since} ({} samples, agent down {:.0}s)",
        up.samples, up.agent_down_seconds
    );
    println!("\nTRANSITIONS (newest first)");
    if h.transitions.is_empty() {
        println!("  none");
    }
    for t in &h.transitions {
        println!(
            "  {}  {:<12} <- {:<12} {}{}",
            lifeline::time::rfc3339(t.at),
            t.status.as_str(),
            t.previous_status.as_str(),
            t.error_kind
                .as_deref()
                .map(|k| format!("[{k}] "))
                .unwrap_or_default(),
            t.message
        );
    }
    println!("\nSAMPLES (newest first)");
    if h.samples.is_empty() {
        println!("  none");
    }
    for s in &h.samples {
        let lat = s
            .latency_ms
            .map(|l| format!("{l:.1}ms"))
            .unwrap_or_else(|| "-".into());
        println!(
            "  {}  {:<12} {:>10}",
            lifeline::time::rfc3339(s.at),
            s.status.as_str(),
            lat
        );
    }
    ExitCode::SUCCESS
}
