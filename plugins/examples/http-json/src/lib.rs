//! A probe plugin: fetches a JSON document over plain HTTP and checks one field.
//!
//! Kind `http_json`, config:
//!
//! ```toml
//! [[checks]]
//! name = "queue"
//! kind = "plugin"
//! plugin = "http_json"
//! config = { url = "http://127.0.0.1:8080/status", pointer = "/queue/state", equals = "ok" }
//! ```
//!
//! * `url`: `http://host[:port]/path` (plain HTTP only: this example has no TLS stack).
//! * `pointer`: an RFC 6901 JSON pointer into the response body.
//! * `equals` (optional): the value the field must have; without it the field only has to
//!   exist. A numeric field is also reported as perfdata under its pointer.
//! * `warn_above` / `crit_above` (optional): thresholds for a numeric field.
//!
//! Only `std` networking and `serde_json`: every socket call gets the time left until the
//! host's deadline, and the body read is capped at 1 MiB.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use lifeline_plugin_sdk::{CheckPlugin, Host, Status};
use serde_json::Value;

const MAX_BODY: u64 = 1024 * 1024;

/// One configured endpoint.
#[derive(Debug)]
pub struct HttpJson {
    host: String,
    port: u16,
    path: String,
    pointer: String,
    equals: Option<Value>,
    warn_above: Option<f64>,
    crit_above: Option<f64>,
}

fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`url` must start with http:// (got `{url}`)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("bad port in `{url}`"))?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("no host in `{url}`"));
    }
    Ok((
        host.trim_matches(['[', ']']).to_string(),
        port,
        path.to_string(),
    ))
}

impl HttpJson {
    fn fetch(&self, host: &Host<'_>) -> Result<(u16, Vec<u8>), String> {
        let left = || host.time_left().max(Duration::from_millis(1));
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("resolve {}: no addresses", self.host))?;
        let mut s = TcpStream::connect_timeout(&addr, left())
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_write_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\nUser-Agent: lifeline-http-json/0.1\r\nConnection: close\r\n\r\n",
            self.path, self.host, self.port
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if host.is_cancelled() {
                return Err("cancelled by the host".into());
            }
            s.set_read_timeout(Some(left()))
                .map_err(|e| e.to_string())?;
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() as u64 > MAX_BODY + 16 * 1024 {
                        return Err("response larger than 1 MiB".into());
                    }
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("malformed HTTP response (no end of headers)")?;
        let head = String::from_utf8_lossy(&buf[..end]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or("malformed HTTP status line")?;
        Ok((status, buf[end + 4..].to_vec()))
    }
}

impl CheckPlugin for HttpJson {
    const NAME: &'static CStr = c"http_json";
    const VERSION: &'static CStr = c"0.1.0";

    fn create(_kind: &str, config_json: &str, _host: &Host<'_>) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(config_json).map_err(|e| format!("config is not JSON: {e}"))?;
        let url = v["url"].as_str().ok_or("`url` is required")?;
        let (host, port, path) = parse_url(url)?;
        let pointer = v["pointer"]
            .as_str()
            .ok_or("`pointer` is required")?
            .to_string();
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!("`pointer` must start with `/` (got `{pointer}`)"));
        }
        let num = |k: &str| -> Result<Option<f64>, String> {
            match &v[k] {
                Value::Null => Ok(None),
                x => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("`{k}` must be a number")),
            }
        };
        Ok(Self {
            host,
            port,
            path,
            pointer,
            equals: v.get("equals").cloned(),
            warn_above: num("warn_above")?,
            crit_above: num("crit_above")?,
        })
    }

    fn check(&mut self, _state_json: &str, host: &Host<'_>) -> Result<Status, String> {
        let start = Instant::now();
        let (code, body) = match self.fetch(host) {
            Ok(r) => r,
            Err(e) => {
                host.set_message(&e);
                return Ok(Status::Critical);
            }
        };
        host.set_latency(start.elapsed());
        if !(200..300).contains(&code) {
            host.set_message(&format!("HTTP status {code}"));
            return Ok(Status::Critical);
        }
        let doc: Value = match serde_json::from_slice(&body) {
            Ok(d) => d,
            Err(e) => {
                host.set_message(&format!("body is not JSON: {e}"));
                return Ok(Status::Critical);
            }
        };
        let Some(field) = doc.pointer(&self.pointer) else {
            host.set_message(&format!("no field at `{}`", self.pointer));
            return Ok(Status::Critical);
        };
        if let Some(n) = field.as_f64() {
            host.perfdata(&self.pointer, n);
            if self.crit_above.is_some_and(|c| n > c) {
                host.set_message(&format!(
                    "{} = {n} is above {}",
                    self.pointer,
                    self.crit_above.unwrap_or(n)
                ));
                return Ok(Status::Critical);
            }
            if self.warn_above.is_some_and(|w| n > w) {
                host.set_message(&format!(
                    "{} = {n} is above {}",
                    self.pointer,
                    self.warn_above.unwrap_or(n)
                ));
                return Ok(Status::Warning);
            }
        }
        if let Some(want) = &self.equals
            && field != want
        {
            host.set_message(&format!("{} = {field}, expected {want}", self.pointer));
            return Ok(Status::Critical);
        }
        host.set_message(&format!("{} = {field}", self.pointer));
        Ok(Status::Ok)
    }
}

lifeline_plugin_sdk::export_plugin!(HttpJson, kinds: ["http_json"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://a:81/x?y").unwrap(),
            ("a".into(), 81, "/x?y".into())
        );
        assert_eq!(parse_url("http://a").unwrap(), ("a".into(), 80, "/".into()));
        assert!(parse_url("https://a").is_err());
    }
}
