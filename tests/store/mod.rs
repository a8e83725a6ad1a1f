//! History store: recording, API, uptime, restore on restart, crash safety, retention,
//! failure handling.

mod api;
mod crash;
mod failures;
mod restart;
mod uptime;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lifeline::config::HistoryConfig;
use lifeline::metrics::Metrics;
use lifeline::store::{History, Reader, Store};

/// A store on its own (no agent) in `dir`, with `retention`.
pub fn open_store(dir: &Path, retention: Duration) -> Arc<Store> {
    let h = HistoryConfig {
        retention,
        sample_every: Duration::ZERO,
    };
    Store::open(dir, &h, Metrics::new()).expect("store opens")
}

/// Everything recorded for `check` (up to 10,000 rows of each list).
pub fn all_history(r: &Reader, check: &str) -> History {
    r.history(
        check,
        SystemTime::UNIX_EPOCH,
        SystemTime::now() + Duration::from_secs(86_400),
        10_000,
    )
    .expect("history query")
    .unwrap_or_else(|| panic!("no history for {check}"))
}

/// GET `url` and parse JSON; returns (status, body).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    lifeline::net::tls::install_provider();
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let body = r
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body is not JSON: {e}"));
    (status, body)
}

/// A TOML config with one tcp check `t` against `addr` every 50 ms.
pub fn tcp_config(addr: &str, extra: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[defaults]
interval = "50ms"
timeout = "1s"
unhealthy_threshold = 1
[defaults.backoff]
base = "50ms"
max = "100ms"
jitter = "0s"
[[checks]]
name = "t"
kind = "tcp"
address = "{addr}"
{extra}
"#
    )
}
