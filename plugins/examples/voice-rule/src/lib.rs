//! A custom-rule plugin: reads the JSON snapshot of every check and decides whether a
//! service built from several connections is healthy.
//!
//! Kind `all_up`, config:
//!
//! ```toml
//! [[checks]]
//! name = "voice"
//! kind = "plugin"
//! plugin = "voice_rule"
//! config = { up = ["pbx-sip", "pbx-ami"], max_latency_ms = { "pbx-ws" = 200 } }
//! ```
//!
//! Healthy when every check in `up` is up (healthy or degraded) and every check in
//! `max_latency_ms` answered within its limit; critical when one of `up` is down;
//! warning when one is slower than its limit; unknown while a named check has no result.

use std::collections::BTreeMap;
use std::ffi::CStr;

use lifeline_plugin_sdk::{CheckPlugin, Host, Status};
use serde_json::Value;

/// One configured rule.
#[derive(Debug)]
pub struct VoiceRule {
    up: Vec<String>,
    max_latency_ms: BTreeMap<String, f64>,
}

fn parse_config(config_json: &str) -> Result<VoiceRule, String> {
    let v: Value =
        serde_json::from_str(config_json).map_err(|e| format!("config is not JSON: {e}"))?;
    let mut up = Vec::new();
    match v.get("up") {
        None => {}
        Some(Value::Array(a)) => {
            for x in a {
                up.push(
                    x.as_str()
                        .ok_or("`up` must be a list of check names")?
                        .to_string(),
                );
            }
        }
        Some(_) => return Err("`up` must be a list of check names".into()),
    }
    let mut max_latency_ms = BTreeMap::new();
    match v.get("max_latency_ms") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, x) in m {
                let n = x
                    .as_f64()
                    .ok_or_else(|| format!("`max_latency_ms.{k}` must be a number"))?;
                max_latency_ms.insert(k.clone(), n);
            }
        }
        Some(_) => {
            return Err("`max_latency_ms` must be a table of check name = milliseconds".into());
        }
    }
    if let Some(Value::Object(m)) = Some(&v) {
        for k in m.keys() {
            if k != "up" && k != "max_latency_ms" {
                return Err(format!(
                    "unknown config key `{k}` (known: up, max_latency_ms)"
                ));
            }
        }
    }
    if up.is_empty() && max_latency_ms.is_empty() {
        return Err("nothing to check: set `up` and/or `max_latency_ms`".into());
    }
    Ok(VoiceRule { up, max_latency_ms })
}

impl VoiceRule {
    /// Evaluates the rule against a snapshot (`{name: {status, up, latency_ms, …}}`).
    pub fn evaluate(&self, state_json: &str) -> Result<(Status, String), String> {
        let state: Value =
            serde_json::from_str(state_json).map_err(|e| format!("state is not JSON: {e}"))?;
        let get = |name: &str| -> Result<&Value, String> {
            state
                .get(name)
                .ok_or_else(|| format!("no check named `{name}` in this agent"))
        };
        let mut waiting = Vec::new();
        let mut down = Vec::new();
        let mut slow = Vec::new();
        for name in &self.up {
            let s = get(name)?;
            if s["status"] == "unknown" {
                waiting.push(name.as_str());
            } else if s["up"] != true {
                down.push(format!("{name} is {}", s["status"].as_str().unwrap_or("?")));
            }
        }
        for (name, limit) in &self.max_latency_ms {
            let s = get(name)?;
            match s["latency_ms"].as_f64() {
                None => waiting.push(name.as_str()),
                Some(ms) if ms > *limit => {
                    slow.push(format!("{name} took {ms:.0} ms (limit {limit} ms)"))
                }
                Some(_) => {}
            }
        }
        Ok(if !down.is_empty() {
            (Status::Critical, down.join("; "))
        } else if !waiting.is_empty() {
            (
                Status::Unknown,
                format!("no result yet from {}", waiting.join(", ")),
            )
        } else if !slow.is_empty() {
            (Status::Warning, slow.join("; "))
        } else {
            (Status::Ok, "all required checks are up and fast".into())
        })
    }
}

impl CheckPlugin for VoiceRule {
    const NAME: &'static CStr = c"voice_rule";
    const VERSION: &'static CStr = c"0.1.0";
    const WANTS_STATE: bool = true;

    fn create(_kind: &str, config_json: &str, _host: &Host<'_>) -> Result<Self, String> {
        parse_config(config_json)
    }

    fn check(&mut self, state_json: &str, host: &Host<'_>) -> Result<Status, String> {
        let (status, msg) = self.evaluate(state_json)?;
        host.set_message(&msg);
        Ok(status)
    }
}

lifeline_plugin_sdk::export_plugin!(VoiceRule, kinds: ["all_up"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_outcomes() {
        let r = parse_config(r#"{"up":["sip","ami"],"max_latency_ms":{"ws":200}}"#).unwrap();
        let snap = |sip: &str, ws: f64| {
            format!(
                r#"{{"sip":{{"status":"{sip}","up":{}}},"ami":{{"status":"healthy","up":true}},"ws":{{"status":"healthy","up":true,"latency_ms":{ws}}}}}"#,
                sip == "healthy"
            )
        };
        assert_eq!(r.evaluate(&snap("healthy", 10.0)).unwrap().0, Status::Ok);
        assert_eq!(
            r.evaluate(&snap("healthy", 500.0)).unwrap().0,
            Status::Warning
        );
        assert_eq!(
            r.evaluate(&snap("unhealthy", 10.0)).unwrap().0,
            Status::Critical
        );
        assert_eq!(
            r.evaluate(&snap("unknown", 10.0)).unwrap().0,
            Status::Unknown
        );
        assert!(r.evaluate("{}").is_err());
        assert!(parse_config(r#"{"upp":[]}"#).is_err());
    }
}
