//! The `lifeline` binary: parses the command line, maps errors to exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lifeline::check::{Outcome, Verdict};
use lifeline::cli::{Cli, Command};
use lifeline::config::{CheckConfig, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    lifeline::telemetry::init(cli.log_format);
    lifeline::check::tls::install_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeline: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Validate => validate(&cli.config),
            Command::Run => run(&cli.config).await,
            Command::Check { json, names } => check(&cli.config, json, names).await,
        }
    })
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    lifeline::config::load(path).map_err(|errs| {
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

fn validate(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(c) => {
            println!("{}: ok ({} checks)", path.display(), c.checks.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listen = config.agent.listen;
    let metrics = lifeline::metrics::Metrics::new();
    metrics.reload(true);
    let alerts = match lifeline::alert::AlertEngine::start(&config, metrics.clone()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot start alerting");
            return ExitCode::from(1);
        }
    };
    let observers: Vec<Arc<dyn lifeline::events::Observer>> = vec![alerts.clone()];
    let observers: lifeline::events::Observers = Arc::new(observers);
    let agent = lifeline::app::Agent::new(config, metrics, observers);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot listen");
            return ExitCode::from(1);
        }
    };
    agent.apply().await;
    tracing::info!(%listen, checks = agent.states().names().len(), "lifeline running");
    let server = tokio::spawn(lifeline::http::serve(
        listener,
        lifeline::http::AppState {
            agent: agent.clone(),
            alerts: Some(alerts.clone()),
        },
        agent.cancel.clone(),
    ));
    wait_for_signals(&agent).await;
    tracing::info!("shutting down");
    agent.shutdown(Duration::from_secs(5)).await;
    alerts.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
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
                let _ = agent.reload().await;
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

async fn check(path: &std::path::Path, json: bool, names: Vec<String>) -> ExitCode {
    let config = match load(path) {
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
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        println!("{:<24} {:<10} {:<10} {:>10}  MESSAGE", "NAME", "KIND", "STATUS", "LATENCY");
        for r in &rows {
            println!(
                "{:<24} {:<10} {:<10} {:>8.1}ms  {}{}",
                r["name"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
                r["latency_ms"].as_f64().unwrap_or(0.0),
                r["error_kind"].as_str().map(|k| format!("[{k}] ")).unwrap_or_default(),
                r["message"].as_str().unwrap_or(""),
            );
        }
    }
    ExitCode::from(worst)
}
