//! A fake Asterisk Manager Interface that answers exactly like the real Asterisk 21
//! recorded in `tests/ami/data/ami-transcript.txt` (a copy of
//! `shared/peers/ami-transcript.txt`): banner, `Permission denied` before login, delayed
//! `Authentication failed` followed by a close, `Ping`, unknown actions, `CoreStatus`,
//! `Command`, MD5 challenge login, `Logoff` + close, and the idle disconnect after
//! `authtimeout`. `tests/ami/transcript.rs` proves byte for byte that it does.
//!
//! Asterisk cannot be installed from Debian 12, which is why this fake exists.
//!
//! The same server with the default [`FakeAmiConfig`] also exists as a separate process,
//! `tests/peers/ami/server.py` (Python 3, standard library only; [`process_command`]),
//! for the chaos tests, which SIGKILL their peer and start it again; `tests/ami/transcript.rs`
//! replays the transcript against both.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `python3 tests/peers/ami/server.py` listening on `host:port` (0: any free port), the
/// process form of this fake with the default configuration; it prints `listening <port>`
/// on stdout once it accepts connections. The caller sets stdout/stderr and may add the
/// script's `CHALLENGE`, `AUTHTIMEOUT_MS` and `AUTH_FAIL_DELAY_MS` variables.
pub fn process_command(host: IpAddr, port: u16) -> tokio::process::Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ami/server.py");
    // The system interpreter first: the spawned PID is then the server's own (a wrapper
    // script such as a pyenv shim on PATH would only exec into it after a delay).
    let system = PathBuf::from("/usr/bin/python3");
    let python = if system.is_file() {
        system
    } else {
        super::require_bin("python3", "python3", &[])
    };
    let mut c = tokio::process::Command::new(python);
    c.arg(script)
        .env("HOST", host.to_string())
        .env("PORT", port.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    c
}

/// A manager.conf user.
#[derive(Clone, Debug)]
pub struct AmiUser {
    pub name: String,
    pub secret: String,
    /// `read = system` (CoreStatus allowed).
    pub read_system: bool,
    /// `write = command` (Command allowed).
    pub write_command: bool,
}

impl AmiUser {
    /// A user with full rights.
    pub fn full(name: &str, secret: &str) -> Self {
        Self {
            name: name.into(),
            secret: secret.into(),
            read_system: true,
            write_command: true,
        }
    }
}

/// How the fake behaves. `Default` is the recorded server.
#[derive(Clone, Debug)]
pub struct FakeAmiConfig {
    /// Banner version.
    pub version: String,
    /// Users, as in the recording: `monitor`/`amisecret` (full) and
    /// `readonly`/`readonlysecret` (read=system, write=none).
    pub users: Vec<AmiUser>,
    /// Delay before `Authentication failed` (Asterisk: about 1000 ms).
    pub auth_fail_delay: Duration,
    /// Unauthenticated connections are closed after this (manager.conf `authtimeout`).
    pub authtimeout: Duration,
    /// Fixed `Challenge` value; random digits when `None`.
    pub challenge: Option<String>,
    /// Before every response, also send an event and a response to somebody else's
    /// ActionID, and write replies in small pieces (tests correlation and framing).
    pub chatty: bool,
    /// TLS from the first byte, as Asterisk's `tlsenable = yes` listener (port 5039).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The transcript's `authtimeout`.
pub const AUTHTIMEOUT: Duration = Duration::from_secs(10);
/// The transcript's failed-login delay.
pub const AUTH_FAIL_DELAY: Duration = Duration::from_millis(1000);

impl Default for FakeAmiConfig {
    fn default() -> Self {
        Self {
            version: "10.0.0".into(),
            users: vec![
                AmiUser::full("monitor", "amisecret"),
                AmiUser {
                    name: "readonly".into(),
                    secret: "readonlysecret".into(),
                    read_system: true,
                    write_command: false,
                },
            ],
            auth_fail_delay: AUTH_FAIL_DELAY,
            authtimeout: AUTHTIMEOUT,
            challenge: None,
            chatty: false,
            tls: None,
        }
    }
}

/// One action the fake received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Connection number (1-based, in accept order).
    pub conn: usize,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Exact bytes, including the final empty line.
    pub raw: Vec<u8>,
}

impl Received {
    /// First value of `key`, case-insensitive.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    cfg: FakeAmiConfig,
    connections: AtomicUsize,
    received: Mutex<Vec<Received>>,
    /// Replaced on every `kick_all`: cancelling it closes every open connection.
    kick: Mutex<CancellationToken>,
}

/// A running fake; stops on drop.
pub struct FakeAmi {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for FakeAmi {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

impl FakeAmi {
    /// Starts on 127.0.0.1:<free port>.
    pub async fn start(cfg: FakeAmiConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake AMI");
        Self::serve_on(cfg, listener)
    }

    fn serve_on(cfg: FakeAmiConfig, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            cfg,
            connections: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            kick: Mutex::new(CancellationToken::new()),
        });
        let stop = CancellationToken::new();
        let (st, sp) = (state.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = sp.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((sock, _)) = accepted else { continue };
                let n = st.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let kick = st.kick.lock().clone();
                let (st2, sp2) = (st.clone(), sp.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = sp2.cancelled() => {}
                        _ = kick.cancelled() => {}
                        _ = accept(st2, sock, n) => {}
                    }
                });
            }
        });
        Self {
            addr,
            state,
            stop,
            task,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every action received so far with this `Action` name.
    pub fn received(&self, action: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .iter()
            .filter(|r| {
                r.get("Action")
                    .is_some_and(|a| a.eq_ignore_ascii_case(action))
            })
            .cloned()
            .collect()
    }

    /// Closes every open connection at once (the listener keeps accepting).
    pub fn kick_all(&self) {
        let mut k = self.state.kick.lock();
        k.cancel();
        *k = CancellationToken::new();
    }
}

const MAX_REQUEST: usize = 64 * 1024;

/// Reads one action (lines up to an empty line). `None` on EOF/oversize.
async fn read_action(
    r: &mut BufReader<impl tokio::io::AsyncRead + Unpin>,
) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).await.ok()?;
        if n == 0 || raw.len() + n > MAX_REQUEST {
            return None;
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if headers.is_empty() {
                continue;
            }
            return Some((headers, raw));
        }
        let (k, v) = text.split_once(':').unwrap_or((text, ""));
        headers.push((k.trim().to_string(), v.trim_start().to_string()));
    }
}

fn get<'a>(h: &'a [(String, String)], key: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

fn md5_hex(data: &[u8]) -> String {
    lifeline::check::ami::md5_hex(data)
}

fn now_stamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// Builds a message: `Response: <r>`, the ActionID when the request had one, then `rest`.
fn response(r: &str, id: Option<&str>, rest: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("Response: {r}\r\n");
    if let Some(id) = id {
        out.push_str(&format!("ActionID: {id}\r\n"));
    }
    for (k, v) in rest {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// TLS first when configured (a failed handshake just closes), then the transcript.
async fn accept(st: Arc<State>, sock: TcpStream, conn: usize) {
    let _ = sock.set_nodelay(true);
    match st.cfg.tls.clone() {
        None => serve(st, sock, conn).await,
        Some(cfg) => {
            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(sock).await {
                serve(st, s, conn).await;
            }
        }
    }
}

async fn serve<S>(st: Arc<State>, sock: S, conn: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let (rd, mut wr) = tokio::io::split(sock);
    let mut rd = BufReader::new(rd);
    let cfg = &st.cfg;
    if wr
        .write_all(format!("Asterisk Call Manager/{}\r\n", cfg.version).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let auth_deadline = Instant::now() + cfg.authtimeout;
    let mut user: Option<AmiUser> = None;
    let mut challenge: Option<String> = None;
    let mut stray = 0u32;
    loop {
        let next = if user.is_none() {
            match tokio::time::timeout_at(auth_deadline, read_action(&mut rd)).await {
                Ok(x) => x,
                // authtimeout: close without a word.
                Err(_) => return,
            }
        } else {
            read_action(&mut rd).await
        };
        let Some((h, raw)) = next else { return };
        st.received.lock().push(Received {
            conn,
            headers: h.clone(),
            raw,
        });
        let id = get(&h, "ActionID");
        let action = get(&h, "Action").unwrap_or("");
        let mut close = false;
        let reply: Vec<u8> = if action.is_empty() {
            response("Error", id, &[("Message", "Missing action in request")])
        } else if action.eq_ignore_ascii_case("Challenge") {
            if get(&h, "AuthType").is_some_and(|a| a.eq_ignore_ascii_case("MD5")) {
                let c = cfg
                    .challenge
                    .clone()
                    .unwrap_or_else(|| (100_000_000 + fastrand::u32(..900_000_000)).to_string());
                challenge = Some(c.clone());
                response("Success", id, &[("Challenge", &c)])
            } else {
                response("Error", id, &[("Message", "Must specify AuthType")])
            }
        } else if action.eq_ignore_ascii_case("Login") {
            let name = get(&h, "Username").unwrap_or("");
            let found = cfg.users.iter().find(|u| u.name == name);
            let ok = found.is_some_and(|u| {
                if get(&h, "AuthType").is_some_and(|a| a.eq_ignore_ascii_case("MD5")) {
                    let Some(c) = &challenge else { return false };
                    let want = md5_hex(format!("{c}{}", u.secret).as_bytes());
                    get(&h, "Key").is_some_and(|k| k.eq_ignore_ascii_case(&want))
                } else {
                    get(&h, "Secret") == Some(u.secret.as_str())
                }
            });
            if ok {
                user = found.cloned();
                let mut r = response("Success", id, &[("Message", "Authentication accepted")]);
                if !get(&h, "Events").is_some_and(|e| e.eq_ignore_ascii_case("off")) {
                    r.extend_from_slice(
                        b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 61\r\nLastReload: 61\r\nStatus: Fully Booted\r\n\r\n",
                    );
                }
                r
            } else {
                tokio::time::sleep(cfg.auth_fail_delay).await;
                close = true;
                response("Error", id, &[("Message", "Authentication failed")])
            }
        } else if user.is_none() {
            response("Error", id, &[("Message", "Permission denied")])
        } else if action.eq_ignore_ascii_case("Ping") {
            let ts = now_stamp();
            response("Success", id, &[("Ping", "Pong"), ("Timestamp", &ts)])
        } else if action.eq_ignore_ascii_case("CoreStatus") {
            if user.as_ref().is_some_and(|u| u.read_system) {
                response(
                    "Success",
                    id,
                    &[
                        ("CoreStartupDate", "2026-11-21"),
                        ("CoreStartupTime", "22:05:03"),
                        ("CoreReloadDate", "2026-11-21"),
                        ("CoreReloadTime", "22:05:03"),
                        ("CoreCurrentCalls", "0"),
                        ("CoreProcessedCalls", "0"),
                    ],
                )
            } else {
                response("Error", id, &[("Message", "Permission denied")])
            }
        } else if action.eq_ignore_ascii_case("Command") {
            if !user.as_ref().is_some_and(|u| u.write_command) {
                response("Error", id, &[("Message", "Permission denied")])
            } else if get(&h, "Command") == Some("core show version") {
                response(
                    "Success",
                    id,
                    &[
                        ("Message", "Command output follows"),
                        (
                            "Output",
                            "Asterisk 21.12.3 built by root @ vm on a x86_64 running Linux on 2026-11-21 21:57:38 UTC",
                        ),
                    ],
                )
            } else {
                response(
                    "Error",
                    id,
                    &[
                        ("Message", "Command output follows"),
                        ("Output", "No such command"),
                    ],
                )
            }
        } else if action.eq_ignore_ascii_case("Logoff") {
            close = true;
            response("Goodbye", id, &[("Message", "Thanks for all the fish.")])
        } else {
            let msg = format!(
                "Invalid/unknown command: {action}. Use Action: ListCommands to show available commands."
            );
            response("Error", id, &[("Message", &msg)])
        };
        let mut out = Vec::new();
        if cfg.chatty && user.is_some() {
            stray += 1;
            out.extend_from_slice(
                b"Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: PJSIP\r\nPeer: PJSIP/100\r\nPeerStatus: Reachable\r\n\r\n",
            );
            out.extend_from_slice(&response(
                "Success",
                Some(&format!("other-client-{stray}")),
                &[("Ping", "Pong")],
            ));
            out.extend_from_slice(b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/100-00000001\r\nActionID: lifeline-1\r\n\r\n");
        }
        out.extend_from_slice(&reply);
        if cfg.chatty {
            // Small pieces with pauses: replies straddle reads.
            for piece in out.chunks(7) {
                if wr.write_all(piece).await.is_err() {
                    return;
                }
                let _ = wr.flush().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        } else if wr.write_all(&out).await.is_err() {
            return;
        }
        if close {
            let _ = wr.shutdown().await;
            return;
        }
    }
}
