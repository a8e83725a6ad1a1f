//! `redis` (probe and session): connect to a `redis://` / `rediss://` URL, log in (password
//! or ACL user + password), select the db, and require `PING` → `PONG`; with `role`, the
//! server's `INFO replication` role must match.
//!
//! lifeline opens the TCP (and TLS) stream itself, so connect and TLS are timed and
//! classified exactly, then hands the stream to redis-rs' `MultiplexedConnection`, whose
//! driver future we spawn and watch: in session mode the driver ending (EOF, reset) ends
//! the session at once. No connection manager: the supervisor owns reconnection.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisError, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::addr::{self, join_host_port, unbracket};
use crate::net::capped::{Capped, DEFAULT_BUDGET, ReadBudget};
use crate::net::tls::CertOutcome;
use crate::net::tls::{self, TlsOptions};
use crate::secret::Secret;

/// The replication role a server must report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `role:master`.
    Master,
    /// `role:slave` (a replica).
    Replica,
}

impl Role {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Replica => "replica",
        }
    }

    /// Reads `role:` from `INFO replication` text.
    fn from_info(info: &str) -> Option<Self> {
        match info_field(info, "role")? {
            "master" => Some(Self::Master),
            "slave" | "replica" => Some(Self::Replica),
            _ => None,
        }
    }
}

/// `redis` settings.
#[derive(Debug, Clone)]
pub struct RedisSpec {
    /// Host name or IP.
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// `rediss://`.
    pub tls: bool,
    /// ACL user (`redis://user:pass@…`).
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret<String>>,
    /// Database number (`/N`).
    pub db: i64,
    /// Required replication role.
    pub role: Option<Role>,
    /// Certificate handling for `rediss://`.
    pub tls_options: TlsOptions,
    /// `tls_expiry_warning` for `rediss://` (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

/// Reads `url`, `role`, `ca_file`, `tls_skip_verify`, `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let url = t.req_str("url");
    let role = t.str("role");
    let tls_options = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    let role = match role {
        None => Some(None),
        Some(r) => match r.value.as_str() {
            "master" | "primary" => Some(Some(Role::Master)),
            "replica" | "slave" => Some(Some(Role::Replica)),
            other => {
                t.error(
                    r.span,
                    format!("`role` must be `master` or `replica`, got `{other}`"),
                );
                None
            }
        },
    };
    let url = url?;
    let spec = match parse_url(&url.value) {
        Ok(s) => s,
        Err(e) => {
            t.error(url.span, format!("`url`: {e}"));
            return None;
        }
    };
    Some(Arc::new(RedisSpec {
        role: role?,
        tls_options,
        tls_expiry_warning,
        ..spec
    }))
}

/// Why a `redis://` URL is refused (the messages never contain the password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
    /// Another scheme.
    #[error("must start with redis:// or rediss://, got `{0}:`")]
    Scheme(String),
    /// No host.
    #[error("the URL must name a host")]
    NoHost,
    /// A percent-escape in user or password does not decode to UTF-8.
    #[error(transparent)]
    Decode(#[from] addr::NotUtf8),
    /// The path is not `/N`.
    #[error("the path must be a database number, got `/{0}`")]
    Db(String),
    /// `?…` (TLS is configured with check keys).
    #[error("query parameters are not supported (use `ca_file` / `tls_skip_verify` for TLS)")]
    Query,
}

/// Parses `redis://[user[:password]@]host[:port][/db]` (or `rediss://`).
pub fn parse_url(s: &str) -> Result<RedisSpec, UrlError> {
    let u = url::Url::parse(s)?;
    let tls = match u.scheme() {
        "redis" => false,
        "rediss" => true,
        other => return Err(UrlError::Scheme(other.to_string())),
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(UrlError::NoHost)?;
    let host = unbracket(host).to_string();
    let decode = addr::percent_decode;
    let username = Some(decode(u.username())?).filter(|s| !s.is_empty());
    let password = match u.password() {
        Some(p) => Some(decode(p)?),
        None => None,
    };
    if let Some(p) = &password {
        crate::secret::register(p);
    }
    let path = u.path().trim_start_matches('/');
    let db = if path.is_empty() {
        0
    } else {
        path.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| UrlError::Db(path.to_string()))?
    };
    if u.query().is_some() {
        return Err(UrlError::Query);
    }
    Ok(RedisSpec {
        host,
        port: u.port().unwrap_or(6379),
        tls,
        username,
        password: password.map(Secret::new),
        db,
        role: None,
        tls_options: TlsOptions::default(),
        tls_expiry_warning: Some(tls::DEFAULT_EXPIRY_WARNING),
    })
}

impl RedisSpec {
    fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl KindSpec for RedisSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = if self.tls {
            Some(tls::client_config(&self.tls_options)?)
        } else {
            None
        };
        Ok(Arc::new(RedisCheck {
            spec: self.clone(),
            tls,
        }))
    }

    fn session_key(&self) -> Option<String> {
        Some(format!(
            "{}|{}|{:?}|{:?}|{}|{:?}|{:?}",
            self.address(),
            self.tls,
            self.username,
            self.password.as_ref().map(|p| p.expose()),
            self.db,
            self.role,
            self.tls_options,
        ))
    }
}

/// A byte stream redis-rs can drive (plain or TLS).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct RedisCheck {
    spec: RedisSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The spawned multiplexer task; aborted if dropped.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Open {
    conn: MultiplexedConnection,
    driver: Driver,
    budget: Arc<ReadBudget>,
    /// The server certificate (`rediss://`).
    cert: Option<tls::PeerCert>,
}

/// Classifies a redis-rs error.
fn classify(e: &RedisError) -> CheckError {
    use redis::ErrorKind as K;
    let text = e.to_string();
    if e.kind() == K::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        return CheckError::new(ErrorKind::AuthFailed, text);
    }
    if e.is_timeout() {
        return CheckError::new(ErrorKind::Timeout, text);
    }
    if e.is_connection_refusal() {
        return CheckError::new(ErrorKind::Refused, text);
    }
    if e.is_connection_dropped() {
        return CheckError::new(ErrorKind::Closed, format!("connection lost: {text}"));
    }
    match e.kind() {
        K::Server(_) | K::Extension => CheckError::new(ErrorKind::Rejected, text),
        _ => CheckError::new(ErrorKind::Protocol, text),
    }
}

/// What one exchange learned.
#[derive(Default)]
struct Facts {
    version: Option<String>,
    role: Option<Role>,
}

fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then_some(v.trim())
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// One request: `PING`, plus `INFO` sections when facts are wanted or `role` is required.
async fn exchange(
    conn: &mut MultiplexedConnection,
    want_version: bool,
    want_role: bool,
    expect: Option<Role>,
) -> Result<Facts, CheckError> {
    let mut p = redis::pipe();
    p.ignore_errors();
    p.cmd("PING");
    if want_version {
        p.cmd("INFO").arg("server");
    }
    if want_role || expect.is_some() {
        p.cmd("INFO").arg("replication");
    }
    let mut replies: Vec<Value> = p
        .query_async::<Vec<Value>>(conn)
        .await
        .map_err(|e| classify(&e))?;
    replies.reverse();
    let pong = replies.pop();
    match pong {
        Some(Value::SimpleString(s)) if s == "PONG" => {}
        Some(Value::ServerError(e)) => return Err(classify(&RedisError::from(e))),
        Some(other) => {
            return Err(CheckError::new(
                ErrorKind::Protocol,
                format!("PING answered {other:?}, expected PONG"),
            ));
        }
        None => return Err(CheckError::new(ErrorKind::Protocol, "PING got no answer")),
    }
    let mut facts = Facts::default();
    if want_version {
        // An ACL user may not be allowed INFO: facts are optional.
        facts.version = replies
            .pop()
            .as_ref()
            .and_then(text)
            .and_then(|i: String| info_field(&i, "redis_version").map(str::to_owned));
    }
    if want_role || expect.is_some() {
        let reply = replies.pop();
        facts.role = reply
            .as_ref()
            .and_then(text)
            .and_then(|i: String| Role::from_info(&i));
        if let Some(want) = expect {
            match (facts.role, reply) {
                (Some(r), _) if r == want => {}
                (Some(r), _) => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        format!("server role is {}, expected {}", r.as_str(), want.as_str()),
                    ));
                }
                (None, Some(Value::ServerError(e))) => return Err(classify(&RedisError::from(e))),
                (None, _) => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        "INFO replication did not report a role",
                    ));
                }
            }
        }
    }
    Ok(facts)
}

impl RedisCheck {
    /// TCP, TLS, login and db selection, each phase timed into `phases`.
    async fn open(&self, phases: &mut Phases) -> Result<Open, CheckError> {
        let s = &self.spec;
        let tcp = addr::connect(&s.address(), phases).await?;
        let budget = ReadBudget::new(DEFAULT_BUDGET);
        let capped = Capped::new(tcp, budget.clone());
        let mut cert = None;
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(capped),
            Some(cfg) => {
                let tls = tls::handshake(capped, &s.host, cfg, phases).await?;
                cert = tls::stream_cert(&tls);
                Box::new(tls)
            }
        };
        let mut info = RedisConnectionInfo::default().set_db(s.db);
        if let Some(u) = &s.username {
            info = info.set_username(u);
        }
        if let Some(p) = &s.password {
            info = info.set_password(p.expose());
        }
        // The supervisor bounds every attempt and heartbeat; no driver-side timeouts.
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(None);
        let t = Instant::now();
        let (conn, driver) = MultiplexedConnection::new_with_config(&info, stream, cfg)
            .await
            .map_err(|e| classify(&e))?;
        phases.auth = Some(t.elapsed());
        Ok(Open {
            conn,
            driver: Driver(tokio::spawn(driver)),
            budget,
            cert,
        })
    }

    async fn open_and_ping(&self) -> Result<(Open, Outcome), Outcome> {
        let start = Instant::now();
        let mut phases = Phases::default();
        let mut open = match self.open(&mut phases).await {
            Ok(o) => o,
            Err(e) => return Err(Outcome::down(e, start.elapsed()).with_phases(phases)),
        };
        let t = Instant::now();
        let r = exchange(&mut open.conn, true, true, self.spec.role).await;
        phases.exchange = Some(t.elapsed());
        let latency = start.elapsed();
        let (cert, warn) = (open.cert.clone(), self.spec.tls_expiry_warning);
        match r {
            Err(e) => Err(Outcome::down(e, latency)
                .with_phases(phases)
                .with_peer_cert(cert, warn)),
            Ok(f) => {
                let mut o = Outcome::up(latency).with_phases(phases);
                if let Some(v) = f.version {
                    o = o.with_detail("redis_version", v);
                }
                if let Some(r) = f.role {
                    o = o.with_detail("role", r.as_str());
                }
                Ok((open, o.with_peer_cert(cert, warn)))
            }
        }
    }
}

impl Check for RedisCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.open_and_ping().await {
                Err(o) => o,
                Ok((open, o)) => {
                    drop(open);
                    o
                }
            }
        })
    }

    fn connect<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let (open, outcome) = self.open_and_ping().await?;
            Ok(Connected {
                session: Box::new(RedisSession {
                    open,
                    role: self.spec.role,
                    warn: self.spec.tls_expiry_warning,
                }),
                outcome,
            })
        })
    }
}

struct RedisSession {
    open: Open,
    role: Option<Role>,
    warn: Option<Duration>,
}

fn driver_ended(r: Result<(), tokio::task::JoinError>) -> CheckError {
    match r {
        Ok(()) => CheckError::new(ErrorKind::Closed, "server closed the connection"),
        Err(e) => CheckError::new(ErrorKind::Internal, format!("connection task failed: {e}")),
    }
}

impl Session for RedisSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let RedisSession { open, role, warn } = *self;
            let Open {
                mut conn,
                mut driver,
                budget,
                cert,
            } = open;
            let bye = || CheckError::new(ErrorKind::Closed, "agent closed the session");
            loop {
                tokio::select! {
                    biased;
                    _ = io.shutdown.cancelled() => return bye(),
                    r = &mut driver.0 => return driver_ended(r),
                    b = io.beats.recv() => {
                        if b.is_none() {
                            return bye();
                        }
                        budget.reset();
                        let t = Instant::now();
                        let r = tokio::select! {
                            biased;
                            _ = io.shutdown.cancelled() => return bye(),
                            r = &mut driver.0 => return driver_ended(r),
                            r = tokio::time::timeout(io.timeout, exchange(&mut conn, false, false, role)) => r,
                        };
                        // A heartbeat past the timeout is reported by the supervisor.
                        let Ok(r) = r else { continue };
                        let latency = t.elapsed();
                        let o = match r {
                            Ok(_) => Outcome::up(latency),
                            Err(e) if e.kind == ErrorKind::Closed => {
                                return match tokio::time::timeout(Duration::from_millis(200), &mut driver.0).await {
                                    Ok(r) => driver_ended(r),
                                    Err(_) => e,
                                };
                            }
                            Err(e) => Outcome::down(e, latency),
                        };
                        let o = o
                            .with_phases(Phases { exchange: Some(latency), ..Phases::default() })
                            .with_peer_cert(cert.clone(), warn);
                        if io.report.send(o).await.is_err() {
                            return bye();
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = parse_url("rediss://app:p%40ss@cache.example:6380/3").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.db),
            ("cache.example", 6380, true, 3)
        );
        assert_eq!(s.username.as_deref(), Some("app"));
        assert_eq!(s.password.as_ref().unwrap().expose(), "p@ss");
        let s = parse_url("redis://:secretpw@127.0.0.1").unwrap();
        assert_eq!((s.port, s.db, s.username.is_none()), (6379, 0, true));
        let err = |s: &str| parse_url(s).unwrap_err().to_string();
        assert_eq!(
            err("http://h"),
            "must start with redis:// or rediss://, got `http:`"
        );
        assert_eq!(
            err("redis://h/x"),
            "the path must be a database number, got `/x`"
        );
        assert_eq!(
            err("redis://h/0?protocol=resp3"),
            "query parameters are not supported (use `ca_file` / `tls_skip_verify` for TLS)"
        );
        assert_eq!(
            parse_url("redis://:%ff@h").unwrap_err(),
            UrlError::Decode(addr::NotUtf8)
        );
        assert!(err("redis://h:99999").starts_with("invalid URL: "));
    }

    #[test]
    fn info_role() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\n";
        assert_eq!(Role::from_info(info), Some(Role::Replica));
        assert_eq!(Role::from_info("role:master\r\n"), Some(Role::Master));
        assert_eq!(
            info_field("redis_version:7.0.15\r\n", "redis_version"),
            Some("7.0.15")
        );
    }
}
