//! Headless Chromium (Debian `chromium`) driven over the Chrome DevTools Protocol on a
//! WebSocket: just enough to load a page, evaluate JavaScript and take screenshots.
//! The browser runs in its own process group, killed (by that group id) on drop.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::require_bin;

/// A running headless Chromium.
pub struct Chromium {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Chromium {
    /// Starts Chromium with a fresh profile and a DevTools port of its choosing.
    pub async fn launch() -> Self {
        let bin = require_bin("chromium", "chromium", &["/usr/bin"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("log");
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn chromium");
        let mut c = Self {
            child,
            port: 0,
            dir,
        };
        // Chromium writes the port it bound to into the profile directory.
        let file = c.dir.path().join("profile").join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                c.port = port;
                return c;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("chromium did not open its DevTools port; log:\n{}", c.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default()
    }

    /// The first tab, attached over its DevTools WebSocket.
    pub async fn tab(&self) -> Tab {
        let list: Value = reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port))
            .await
            .expect("devtools /json/list")
            .json()
            .await
            .expect("devtools JSON");
        let ws_url = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target in {list}"))
            .to_string();
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(ws_url),
        )
        .await
        .expect("devtools connect timed out")
        .expect("devtools connect");
        Tab { ws, next_id: 0 }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser and its zygote/renderer children share the group we gave it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Tab {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Tab {
    /// Sends a command and waits (at most 20 s) for its answer; events are skipped.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .await
            .expect("devtools send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("devtools: no answer to {method}"))
                .unwrap_or_else(|| panic!("devtools closed during {method}"))
                .expect("devtools read");
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text).expect("devtools JSON");
            if v["id"] == id {
                if !v["error"].is_null() {
                    panic!("devtools {method} failed: {}", v["error"]);
                }
                return v["result"].clone();
            }
        }
    }

    /// Opens `url`.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.enable", json!({})).await;
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r["errorText"].is_null(), "navigation to {url} failed: {r}");
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its JSON value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if !r["exceptionDetails"].is_null() {
            panic!("`{expr}` threw: {}", r["exceptionDetails"]);
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it evaluates to `true`, or panics after `within` showing `show`.
    /// An expression that throws (say, while the page is still loading) counts as false.
    pub async fn wait_true(&mut self, expr: &str, within: Duration, show: &str) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
                )
                .await;
            if r["exceptionDetails"].is_null() && r["result"]["value"] == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = self.eval(show).await;
                panic!("timed out after {within:?} waiting for `{expr}`; page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Emulates `prefers-color-scheme: dark` (or light).
    pub async fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Resizes the viewport to `width` × `height` CSS pixels (a phone when narrow).
    pub async fn viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
    }

    /// Moves the mouse pointer to (`x`, `y`) in CSS pixels, as a real pointer would.
    pub async fn mouse_move(&mut self, x: f64, y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )
        .await;
    }

    /// Presses and releases a key such as `ArrowLeft`, `Home`, `Tab` or `Enter`.
    pub async fn key(&mut self, key: &str) {
        let code = match key {
            "ArrowLeft" => 37,
            "ArrowRight" => 39,
            "Home" => 36,
            "End" => 35,
            "Enter" => 13,
            "Escape" => 27,
            "Tab" => 9,
            _ => 0,
        };
        let text = if key == "Enter" { "\r" } else { "" };
        for t in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": t, "key": key, "code": key, "windowsVirtualKeyCode": code,
                       "nativeVirtualKeyCode": code}),
            )
            .await;
            if t == "rawKeyDown" && !text.is_empty() {
                self.call(
                    "Input.dispatchKeyEvent",
                    json!({"type": "char", "text": text}),
                )
                .await;
            }
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("artifact dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// Standard base64 (with padding), as DevTools sends binary data.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&b| b != b'=').collect();
        let mut n = 0u32;
        for (i, &b) in data.iter().enumerate() {
            n |= val(b) << (18 - 6 * i);
        }
        let take = data.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

#[test]
fn base64_decodes_padded_input() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("aGV5"), b"hey");
    assert_eq!(base64_decode("aA=="), b"h");
}
