//! `mysql` (probe and session): log in to a MySQL or MariaDB server and run `query`
//! (default `SELECT 1`); with `expect`, the first column of the first row must equal it.
//!
//! A lean client written against the documented protocol ([`codec`]): the v10 handshake,
//! TLS through `SSLRequest` when `tls = true`, `mysql_native_password`, the
//! `caching_sha2_password` fast path (and its full path over TLS), auth switches, then
//! `COM_QUERY` with the text result set walked to its end. ERR 1045/1044/1698 (access
//! denied) → `auth_failed`; an unknown database (1049) and other server errors →
//! `rejected`. In session mode the query is the heartbeat and the socket is watched
//! between heartbeats, so a killed connection or a stopped server ends the session at
//! once. See `docs/mysql.md`.

pub mod codec;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Framed, FramedParts};

use self::codec::{AuthReply, CodecError, Greeting, Packet, PacketCodec, ServerError};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::addr::join_host_port;
use crate::net::capped::{DEFAULT_BUDGET, ReadBudget};
use crate::net::stream::{self, BoxIo};
use crate::net::tls::TlsOptions;
use crate::secret::Secret;

/// The server's port when `address` has none.
pub const DEFAULT_PORT: u16 = 3306;
/// Default `query`.
pub const DEFAULT_QUERY: &str = "SELECT 1";
/// How long `COM_QUIT` may take on shutdown or after a probe.
const GOODBYE: Duration = Duration::from_millis(200);
/// Most auth round trips (switches, more-data) accepted before giving up.
const MAX_AUTH_STEPS: usize = 4;
/// Most result sets one query may return.
const MAX_RESULTS: usize = 64;

/// `mysql` settings.
#[derive(Debug, Clone)]
pub struct MysqlSpec {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Option<Secret<String>>,
    /// Default schema (`database`).
    pub database: Option<String>,
    /// SQL run each interval.
    pub query: String,
    /// Required text of the first column of the first row.
    pub expect: Option<String>,
    /// TLS via `SSLRequest`.
    pub tls: bool,
    /// Certificate handling with `tls`.
    pub tls_options: TlsOptions,
}

/// Reads `address`, `username`, `password`, `database`, `query`, `expect`, `tls`,
/// `ca_file`, `tls_skip_verify`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let address = t.req_str("address").and_then(|a| {
        let hp = stream::host_port(&a.value, DEFAULT_PORT);
        if hp.is_none() {
            t.error(
                a.span,
                format!("`address` must be HOST[:PORT], got `{}`", a.value),
            );
        }
        hp
    });
    let username = t.req_str("username").and_then(|u| {
        if u.value.is_empty() || u.value.contains('\0') {
            t.error(u.span, "`username` must be non-empty, without NUL");
            None
        } else {
            Some(u.value)
        }
    });
    let password = t.secret("password");
    let database = t.str("database").and_then(|d| {
        if d.value.is_empty() || d.value.contains('\0') {
            t.error(d.span, "`database` must be non-empty, without NUL");
            None
        } else {
            Some(d.value)
        }
    });
    let query = t.str("query");
    let expect = t.str("expect").map(|s| s.value);
    let tls = t.bool("tls").unwrap_or(false);
    let tls_options = t.tls_options();
    let query = match query {
        None => Some(DEFAULT_QUERY.to_string()),
        Some(q) if q.value.trim().is_empty() => {
            t.error(q.span, "`query` must not be empty");
            None
        }
        Some(q) => Some(q.value),
    };
    let (host, port) = address?;
    Some(Arc::new(MysqlSpec {
        host,
        port,
        username: username?,
        password,
        database,
        query: query?,
        expect,
        tls,
        tls_options,
    }))
}

impl MysqlSpec {
    fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl KindSpec for MysqlSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = stream::connector_if(self.tls, &self.tls_options, &[])?;
        Ok(Arc::new(MysqlCheck {
            spec: self.clone(),
            tls,
        }))
    }

    fn session_key(&self) -> Option<String> {
        Some(format!(
            "{}|{}|{:?}|{:?}|{}|{:?}|{}|{:?}",
            self.address(),
            self.username,
            self.password.as_ref().map(|p| p.expose()),
            self.database,
            self.query,
            self.expect,
            self.tls,
            self.tls_options,
        ))
    }
}

struct MysqlCheck {
    spec: MysqlSpec,
    tls: Option<TlsConnector>,
}

fn codec_error(e: CodecError) -> CheckError {
    match e {
        CodecError::Io(io) => CheckError::io("mysql", &io),
        other => CheckError::new(ErrorKind::Protocol, other.to_string()),
    }
}

/// Classifies an ERR packet by its error number.
pub fn server_error(e: &ServerError) -> CheckError {
    let kind = match e.code {
        // Access denied (user/password, database grants, no password), account locked,
        // password expired.
        1044 | 1045 | 1698 | 1820 | 1862 | 3118 | 4151 => ErrorKind::AuthFailed,
        // Server shutdown, connection killed, idle timeout.
        1053 | 1927 | 4031 => ErrorKind::Closed,
        _ => ErrorKind::Rejected,
    };
    let state = e
        .state
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    CheckError::new(
        kind,
        format!("server error {}{state}: {}", e.code, e.message),
    )
}

fn closed() -> CheckError {
    CheckError::new(ErrorKind::Closed, "server closed the connection")
}

/// A connection after login.
struct Conn {
    framed: Framed<BoxIo, PacketCodec>,
    budget: Arc<ReadBudget>,
}

/// The facts of a login.
struct Login {
    server_version: String,
    connection_id: u32,
}

async fn recv(framed: &mut Framed<BoxIo, PacketCodec>) -> Result<Packet, CheckError> {
    match framed.next().await {
        None => Err(closed()),
        Some(Err(e)) => Err(codec_error(e)),
        Some(Ok(p)) => Ok(p),
    }
}

async fn send(
    framed: &mut Framed<BoxIo, PacketCodec>,
    seq: u8,
    payload: Bytes,
) -> Result<(), CheckError> {
    framed
        .send(Packet { seq, payload })
        .await
        .map_err(codec_error)
}

impl Conn {
    /// Runs `sql`, reads every result set to its end; the first column of the first row.
    async fn query(&mut self, sql: &str) -> Result<Option<String>, CheckError> {
        send(&mut self.framed, 0, codec::com_query(sql)).await?;
        let mut first: Option<Option<String>> = None;
        for _ in 0..MAX_RESULTS {
            let p = recv(&mut self.framed).await?;
            let more = match p.payload.first() {
                Some(0x00) => {
                    codec::ok_status(&p.payload).map_err(codec_error)? & codec::MORE_RESULTS
                }
                Some(0xff) => {
                    let e = codec::parse_err(&p.payload).map_err(codec_error)?;
                    return Err(server_error(&e));
                }
                Some(0xfb) => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        "server asked for a LOCAL INFILE (refused)",
                    ));
                }
                Some(_) => {
                    let cols = codec::Reader(&p.payload)
                        .lenenc()
                        .map_err(codec_error)?
                        .unwrap_or(0);
                    if cols == 0 || cols > 4096 {
                        return Err(CheckError::new(
                            ErrorKind::Protocol,
                            format!("result set with {cols} columns"),
                        ));
                    }
                    for _ in 0..cols {
                        recv(&mut self.framed).await?;
                    }
                    let eof = recv(&mut self.framed).await?;
                    if !codec::is_eof(&eof.payload) {
                        return Err(CheckError::new(
                            ErrorKind::Protocol,
                            "no EOF after the column definitions",
                        ));
                    }
                    loop {
                        let row = recv(&mut self.framed).await?;
                        if codec::is_eof(&row.payload) {
                            break codec::eof_status(&row.payload) & codec::MORE_RESULTS;
                        }
                        if row.payload.first() == Some(&0xff) {
                            let e = codec::parse_err(&row.payload).map_err(codec_error)?;
                            return Err(server_error(&e));
                        }
                        if first.is_none() {
                            first = Some(codec::first_column(&row.payload).map_err(codec_error)?);
                        }
                    }
                }
                None => return Err(CheckError::new(ErrorKind::Protocol, "empty packet")),
            };
            if more == 0 {
                return Ok(first.flatten());
            }
        }
        Err(CheckError::new(
            ErrorKind::Protocol,
            format!("more than {MAX_RESULTS} result sets"),
        ))
    }

    /// Sends `COM_QUIT`, bounded.
    async fn goodbye(mut self) {
        let _ = tokio::time::timeout(GOODBYE, async {
            let _ = send(&mut self.framed, 0, codec::com_quit()).await;
            let _ = self.framed.close().await;
        })
        .await;
    }
}

impl MysqlCheck {
    /// The scrambled password for `plugin` with `nonce`.
    fn auth_data(&self, plugin: &str, nonce: &[u8], tls: bool) -> Result<Vec<u8>, CheckError> {
        let pw = self
            .spec
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .unwrap_or_default();
        match plugin {
            "mysql_native_password" => Ok(codec::native_password(pw, nonce)),
            "caching_sha2_password" => Ok(codec::caching_sha2(pw, nonce)),
            "mysql_clear_password" if tls => {
                let mut v = pw.to_vec();
                v.push(0);
                Ok(v)
            }
            "mysql_clear_password" => Err(CheckError::new(
                ErrorKind::Rejected,
                "server asks for the password in clear text; set `tls = true`",
            )),
            other => Err(CheckError::new(
                ErrorKind::Rejected,
                format!("unsupported authentication plugin `{other}`"),
            )),
        }
    }

    /// TCP, greeting, TLS, login; timed into `phases`.
    async fn open(&self, phases: &mut Phases) -> Result<(Conn, Login), CheckError> {
        let s = &self.spec;
        let budget = ReadBudget::new(DEFAULT_BUDGET);
        let io = stream::open(&s.address(), &s.host, None, budget.clone(), phases).await?;
        let mut framed = Framed::new(io, PacketCodec);
        let greet = recv(&mut framed).await?;
        let hs = match codec::parse_greeting(&greet.payload).map_err(codec_error)? {
            Greeting::Error(e) => return Err(server_error(&e)),
            Greeting::Handshake(h) => h,
        };
        if hs.capabilities & codec::PROTOCOL_41 == 0 {
            return Err(CheckError::new(
                ErrorKind::Protocol,
                "server does not speak protocol 4.1",
            ));
        }
        let wanted = codec::LONG_PASSWORD
            | codec::LONG_FLAG
            | codec::PROTOCOL_41
            | codec::TRANSACTIONS
            | codec::SECURE_CONNECTION
            | codec::MULTI_RESULTS
            | codec::PLUGIN_AUTH
            | codec::PLUGIN_AUTH_LENENC;
        let mut caps = wanted & hs.capabilities;
        if s.database.is_some() {
            caps |= codec::CONNECT_WITH_DB;
        }
        let mut seq = greet.seq.wrapping_add(1);
        let mut on_tls = false;
        if let Some(connector) = &self.tls {
            if hs.capabilities & codec::SSL == 0 {
                return Err(CheckError::new(
                    ErrorKind::Tls,
                    "server does not offer TLS (CLIENT_SSL)",
                ));
            }
            caps |= codec::SSL;
            send(&mut framed, seq, codec::ssl_request(caps)).await?;
            seq = seq.wrapping_add(1);
            let FramedParts { io, read_buf, .. } = framed.into_parts();
            if !read_buf.is_empty() {
                return Err(CheckError::new(
                    ErrorKind::Protocol,
                    "server sent data before the TLS handshake",
                ));
            }
            let io = stream::upgrade(io, &s.host, connector, phases).await?;
            framed = Framed::new(io, PacketCodec);
            on_tls = true;
        }
        let t_auth = Instant::now();
        let mut plugin = if hs.capabilities & codec::PLUGIN_AUTH != 0 {
            hs.auth_plugin.clone()
        } else {
            "mysql_native_password".to_string()
        };
        let auth = self.auth_data(&plugin, &hs.scramble, on_tls)?;
        let resp = codec::handshake_response(&codec::Response {
            capabilities: caps,
            username: &s.username,
            auth: &auth,
            database: s.database.as_deref(),
            plugin: &plugin,
        });
        send(&mut framed, seq, resp).await?;
        let mut steps = 0;
        loop {
            let p = recv(&mut framed).await?;
            seq = p.seq.wrapping_add(1);
            match codec::parse_auth_reply(&p.payload).map_err(codec_error)? {
                AuthReply::Ok => break,
                AuthReply::Error(e) => return Err(server_error(&e)),
                AuthReply::Switch { plugin: next, data } => {
                    let auth = self.auth_data(&next, &data, on_tls)?;
                    plugin = next;
                    send(&mut framed, seq, Bytes::from(auth)).await?;
                }
                AuthReply::More(data) if plugin == "caching_sha2_password" => match data[..] {
                    [3] => {} // fast auth succeeded; OK follows
                    [4] if on_tls => {
                        let mut pw = self
                            .spec
                            .password
                            .as_ref()
                            .map(|p| p.expose().as_bytes().to_vec())
                            .unwrap_or_default();
                        pw.push(0);
                        send(&mut framed, seq, Bytes::from(pw)).await?;
                    }
                    [4] => {
                        return Err(CheckError::new(
                            ErrorKind::Rejected,
                            "caching_sha2_password needs full authentication (the server has not cached this login): set `tls = true`, or log in once with another client",
                        ));
                    }
                    _ => {
                        return Err(CheckError::new(
                            ErrorKind::Protocol,
                            "unexpected caching_sha2_password data",
                        ));
                    }
                },
                AuthReply::More(_) => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        format!("unexpected auth data for `{plugin}`"),
                    ));
                }
            }
            steps += 1;
            if steps > MAX_AUTH_STEPS {
                return Err(CheckError::new(
                    ErrorKind::Protocol,
                    "authentication did not finish",
                ));
            }
        }
        phases.auth = Some(t_auth.elapsed());
        Ok((
            Conn { framed, budget },
            Login {
                server_version: hs.server_version,
                connection_id: hs.connection_id,
            },
        ))
    }

    async fn query_outcome(&self, conn: &mut Conn) -> Result<(), CheckError> {
        run_query(conn, &self.spec.query, self.spec.expect.as_deref()).await
    }

    async fn open_outcome(&self) -> Result<(Conn, Outcome), Outcome> {
        let start = Instant::now();
        let mut phases = Phases::default();
        let (mut conn, login) = match self.open(&mut phases).await {
            Ok(c) => c,
            Err(e) => return Err(Outcome::down(e, start.elapsed()).with_phases(phases)),
        };
        let t = Instant::now();
        let r = self.query_outcome(&mut conn).await;
        phases.exchange = Some(t.elapsed());
        if let Err(e) = r {
            return Err(Outcome::down(e, start.elapsed()).with_phases(phases));
        }
        let o = Outcome::up(start.elapsed())
            .with_phases(phases)
            .with_detail("server_version", login.server_version)
            .with_detail("connection_id", login.connection_id);
        Ok((conn, o))
    }
}

/// Runs `query`; with `expect`, its first value must equal it.
async fn run_query(conn: &mut Conn, query: &str, expect: Option<&str>) -> Result<(), CheckError> {
    let first = conn.query(query).await?;
    match expect {
        Some(want) if first.as_deref() != Some(want) => Err(CheckError::new(
            ErrorKind::Protocol,
            format!("query returned {first:?}, expected {want:?}"),
        )),
        _ => Ok(()),
    }
}

impl Check for MysqlCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.open_outcome().await {
                Err(o) => o,
                Ok((conn, o)) => {
                    conn.goodbye().await;
                    o
                }
            }
        })
    }

    fn connect<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let (conn, outcome) = self.open_outcome().await?;
            Ok(Connected {
                session: Box::new(MysqlSession {
                    conn,
                    query: self.spec.query.clone(),
                    expect: self.spec.expect.clone(),
                }),
                outcome,
            })
        })
    }
}

struct MysqlSession {
    conn: Conn,
    query: String,
    expect: Option<String>,
}

/// What an unsolicited packet between heartbeats means.
fn unsolicited(p: &Packet) -> CheckError {
    match codec::parse_err(&p.payload) {
        Ok(e) => {
            let mut err = server_error(&e);
            err.kind = ErrorKind::Closed;
            err
        }
        Err(_) => CheckError::new(ErrorKind::Protocol, "server sent a packet while idle"),
    }
}

impl Session for MysqlSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let MysqlSession {
                mut conn,
                query,
                expect,
            } = *self;
            let bye = || CheckError::new(ErrorKind::Closed, "agent closed the session");
            loop {
                tokio::select! {
                    biased;
                    _ = io.shutdown.cancelled() => {
                        conn.goodbye().await;
                        return bye();
                    }
                    r = recv(&mut conn.framed) => return match r {
                        Ok(p) => unsolicited(&p),
                        Err(e) => e,
                    },
                    b = io.beats.recv() => {
                        if b.is_none() {
                            conn.goodbye().await;
                            return bye();
                        }
                        conn.budget.reset();
                        let t = Instant::now();
                        // No timeout of our own: the supervisor reports a heartbeat past
                        // `timeout` and ends the session at `stale_after`; waiting for the
                        // answer keeps the connection in step.
                        let r = tokio::select! {
                            biased;
                            _ = io.shutdown.cancelled() => {
                                conn.goodbye().await;
                                return bye();
                            }
                            r = run_query(&mut conn, &query, expect.as_deref()) => r,
                        };
                        let latency = t.elapsed();
                        let o = match r {
                            Ok(()) => Outcome::up(latency),
                            Err(e) if matches!(e.kind, ErrorKind::Closed | ErrorKind::Protocol | ErrorKind::Refused) => return e,
                            Err(e) => Outcome::down(e, latency),
                        };
                        let o = o.with_phases(Phases { exchange: Some(latency), ..Phases::default() });
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
    fn server_errors_are_classified() {
        let e = |code| ServerError {
            code,
            state: Some("28000".into()),
            message: "x".into(),
        };
        assert_eq!(server_error(&e(1045)).kind, ErrorKind::AuthFailed);
        assert_eq!(server_error(&e(1049)).kind, ErrorKind::Rejected);
        assert_eq!(server_error(&e(1040)).kind, ErrorKind::Rejected);
        assert_eq!(server_error(&e(1927)).kind, ErrorKind::Closed);
        assert_eq!(
            server_error(&e(1045)).message,
            "server error 1045 (28000): x"
        );
    }
}
