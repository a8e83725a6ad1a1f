//! Test-only plugin: does what its config asks, including the things plugins must not do.
//!
//! Config keys (all optional): `fail_create` (refuse with this message), `status` (0–3,
//! default 0), `panic_on` (list of call numbers that panic), `sleep_ms` (block this long
//! in every call, ignoring cancellation), `sleep_on` (only on these call numbers),
//! `error` (return this plugin error), `echo_state` (message = the state JSON),
//! `latency_ms` (report this latency), `create_touch` (create this file when `create`
//! starts), `create_sleep_ms` (block this long in `create`).

use std::ffi::CStr;
use std::time::Duration;

use lifeline_plugin_sdk::{CheckPlugin, Host, Status};
use serde_json::Value;

/// One instance.
#[derive(Debug)]
pub struct Misbehave {
    config: Value,
    calls: u64,
}

fn has(list: &Value, n: u64) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(n)))
}

impl CheckPlugin for Misbehave {
    const NAME: &'static CStr = c"misbehave";
    const VERSION: &'static CStr = c"0.0.1";
    const WANTS_STATE: bool = true;

    fn create(_kind: &str, config_json: &str, _host: &Host<'_>) -> Result<Self, String> {
        let config: Value = serde_json::from_str(config_json).map_err(|e| e.to_string())?;
        if let Some(p) = config.get("create_touch").and_then(Value::as_str) {
            std::fs::write(p, b"create").map_err(|e| e.to_string())?;
        }
        if let Some(ms) = config.get("create_sleep_ms").and_then(Value::as_u64) {
            std::thread::sleep(Duration::from_millis(ms));
            if let Some(p) = config.get("create_touch").and_then(Value::as_str) {
                std::fs::write(p, b"done").map_err(|e| e.to_string())?;
            }
        }
        if let Some(m) = config.get("fail_create").and_then(Value::as_str) {
            return Err(m.to_string());
        }
        Ok(Self { config, calls: 0 })
    }

    fn check(&mut self, state_json: &str, host: &Host<'_>) -> Result<Status, String> {
        self.calls += 1;
        let n = self.calls;
        host.perfdata("calls", n as f64);
        if has(&self.config["panic_on"], n) {
            panic!("boom on call {n}");
        }
        if let Some(ms) = self.config["sleep_ms"].as_u64() {
            let only = &self.config["sleep_on"];
            if only.is_null() || has(only, n) {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        if let Some(e) = self.config["error"].as_str() {
            return Err(e.to_string());
        }
        if let Some(ms) = self.config["latency_ms"].as_u64() {
            host.set_latency(Duration::from_millis(ms));
        }
        if self.config["echo_state"] == true {
            host.set_message(state_json);
        } else {
            host.set_message(&format!("call {n}"));
        }
        Ok(match self.config["status"].as_u64() {
            Some(1) => Status::Warning,
            Some(2) => Status::Critical,
            Some(3) => Status::Unknown,
            _ => Status::Ok,
        })
    }
}

lifeline_plugin_sdk::export_plugin!(Misbehave, kinds: ["misbehave", "misbehave_alt"]);
