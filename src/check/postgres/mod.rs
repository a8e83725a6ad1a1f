//! `postgres` (probe and session): log in with a libpq URL (`dsn`) and run `query`
//! (default `SELECT 1`); with `expect`, the first column of the first row must equal it.
//!
//! Each stage is timed and classified on its own: TCP connect (ours, so `refused`/`dns`
//! are exact), TLS (rustls + ring through tokio-postgres-rustls, wrapped so the handshake
//! is timed and its failures are `tls`), login (SQLSTATE 28P01/28000 → `auth_failed`) and
//! the query (`exchange`). In session mode the driver's connection task is watched: when it
//! ends (server killed, `pg_terminate_backend`), the session ends at once.
//!
//! This file is the kind (config, probe and session); [`dsn`] reads the URL, `ssl` turns
//! `sslmode` into a rustls connector and `error` classifies driver errors.

pub mod dsn;
mod error;
mod ssl;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::tls::{NoTls, TlsConnect};
use tokio_postgres::{Client, SimpleQueryMessage};

use self::error::{classify, ended};
pub use self::ssl::tls_config;
use self::ssl::{TlsRecord, tls_connector};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::addr;
use crate::net::capped::{Capped, DEFAULT_BUDGET, ReadBudget};
use crate::net::tls::CertOutcome;
use crate::net::tls::PeerCert;
use dsn::{Dsn, SslMode};

/// Default `query`.
pub const DEFAULT_QUERY: &str = "SELECT 1";

/// How long a closing connection may take to say goodbye (Terminate message).
const GOODBYE: Duration = Duration::from_millis(200);

/// `postgres` settings.
#[derive(Debug, Clone)]
pub struct PostgresSpec {
    /// The parsed `dsn`.
    pub dsn: Dsn,
    /// SQL run each interval (simple-query protocol).
    pub query: String,
    /// Required text of the first column of the first row.
    pub expect: Option<String>,
    /// `tls_expiry_warning` when the connection uses TLS (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

/// Reads `dsn`, `query`, `expect`, `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let raw = t.req_str("dsn");
    let query = t.str("query").map(|s| s.value);
    let expect = t.str("expect").map(|s| s.value);
    let tls_expiry_warning = t.tls_expiry_warning();
    let raw = raw?;
    let dsn = match Dsn::parse(&raw.value, &t.loader().base) {
        Ok(d) => d,
        Err(e) => {
            t.error(raw.span, format!("`dsn`: {e}"));
            return None;
        }
    };
    let query = query.unwrap_or_else(|| DEFAULT_QUERY.to_string());
    if query.trim().is_empty() {
        t.error(t.span(), "`query` must not be empty");
        return None;
    }
    Some(Arc::new(PostgresSpec {
        dsn,
        query,
        expect,
        tls_expiry_warning,
    }))
}

impl KindSpec for PostgresSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(PgCheck {
            spec: self.clone(),
            tls: tls_config(&self.dsn)?,
        }))
    }

    fn session_key(&self) -> Option<String> {
        let d = &self.dsn;
        Some(format!(
            "{}|{}|{:?}|{}|{}|{:?}|{}|{}|{:?}",
            d.address(),
            d.user,
            d.password.as_ref().map(|p| p.expose()),
            d.dbname,
            d.sslmode.as_str(),
            d.sslrootcert,
            d.application_name,
            self.query,
            self.expect,
        ))
    }
}

struct PgCheck {
    spec: PostgresSpec,
    tls: Option<(rustls::ClientConfig, crate::net::tls::CertCapture)>,
}

/// The spawned connection task; aborted if dropped before it finished.
struct Driver(JoinHandle<Result<(), tokio_postgres::Error>>);

impl Driver {
    /// Lets the task send its goodbye after the client was dropped, then stops it.
    async fn finish(mut self, grace: Duration) {
        let _ = tokio::time::timeout(grace, &mut self.0).await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Open {
    client: Client,
    driver: Driver,
    budget: Arc<ReadBudget>,
    server_version: Option<String>,
    /// The server certificate (TLS connections).
    cert: Option<PeerCert>,
}

async fn handshake<T>(
    cfg: &tokio_postgres::Config,
    stream: Capped<TcpStream>,
    tls: T,
) -> Result<(Client, Driver, Option<String>), tokio_postgres::Error>
where
    T: TlsConnect<Capped<TcpStream>> + Send,
    T::Stream: Send + 'static,
    T::Future: Send,
{
    let (client, conn) = cfg.connect_raw(stream, tls).await?;
    let version = conn.parameter("server_version").map(str::to_owned);
    Ok((client, Driver(tokio::spawn(conn)), version))
}

impl PgCheck {
    /// TCP, TLS and login, timing each phase into `phases`.
    async fn open(&self, phases: &mut Phases) -> Result<Open, CheckError> {
        let d = &self.spec.dsn;
        let stream = addr::connect(&d.address(), phases).await?;
        let budget = ReadBudget::new(DEFAULT_BUDGET);
        let stream = Capped::new(stream, budget.clone());
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&d.host)
            .port(d.port)
            .user(&d.user)
            .dbname(&d.dbname)
            .application_name(&d.application_name)
            .ssl_mode(match d.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = &d.password {
            cfg.password(p.expose());
        }
        let t = Instant::now();
        let mut cert = None;
        let (client, driver, server_version) = match &self.tls {
            None => handshake(&cfg, stream, NoTls)
                .await
                .map_err(|e| classify(&e, None, false))?,
            Some((tc, capture)) => {
                let record = Arc::new(TlsRecord::default());
                capture.clear();
                let r = handshake(&cfg, stream, tls_connector(tc, &d.host, record.clone())).await;
                cert = capture.get();
                let tls_took = *record.took.lock();
                phases.tls = tls_took;
                let r = r.map_err(|e| classify(&e, Some(&record), d.sslmode != SslMode::Prefer))?;
                phases.auth = Some(t.elapsed().saturating_sub(tls_took.unwrap_or_default()));
                r
            }
        };
        if self.tls.is_none() {
            phases.auth = Some(t.elapsed());
        }
        Ok(Open {
            client,
            driver,
            budget,
            server_version,
            cert,
        })
    }

    fn heart(&self) -> Heart {
        Heart {
            query: self.spec.query.clone(),
            expect: self.spec.expect.clone(),
        }
    }

    /// Opens and runs the query once; on failure the outcome with the phases so far.
    async fn open_and_query(&self) -> Result<(Open, Outcome), Outcome> {
        let start = Instant::now();
        let mut phases = Phases::default();
        let open = match self.open(&mut phases).await {
            Ok(o) => o,
            Err(e) => {
                // A refused certificate (expired, wrong host) is still reported.
                let cert = self.tls.as_ref().and_then(|(_, c)| c.get());
                return Err(Outcome::down(e, start.elapsed())
                    .with_phases(phases)
                    .with_peer_cert(cert, self.spec.tls_expiry_warning));
            }
        };
        let warn = self.spec.tls_expiry_warning;
        let t = Instant::now();
        let r = self.heart().exchange(&open.client).await;
        phases.exchange = Some(t.elapsed());
        let latency = start.elapsed();
        let mut o = match r {
            Ok(_) => Outcome::up(latency),
            Err(e) => {
                let o = Outcome::down(e, latency)
                    .with_phases(phases)
                    .with_peer_cert(open.cert.clone(), warn);
                // Let the driver log off politely.
                let Open { client, driver, .. } = open;
                drop(client);
                driver.finish(GOODBYE).await;
                return Err(o);
            }
        }
        .with_phases(phases);
        if let Some(v) = &open.server_version {
            o = o.with_detail("server_version", v.as_str());
        }
        let o = o.with_peer_cert(open.cert.clone(), warn);
        Ok((open, o))
    }
}

/// The query and its expectation.
struct Heart {
    query: String,
    expect: Option<String>,
}

impl Heart {
    /// Runs the query; returns the first value.
    async fn exchange(&self, client: &Client) -> Result<Option<String>, CheckError> {
        let msgs = client
            .simple_query(&self.query)
            .await
            .map_err(|e| classify(&e, None, false))?;
        let value = msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .and_then(|r| r.try_get(0).ok().flatten())
            .map(str::to_owned);
        if let Some(want) = &self.expect {
            match &value {
                Some(v) if v == want => {}
                Some(v) => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        format!("query returned `{}`, expected `{want}`", clip(v)),
                    ));
                }
                None => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        format!("query returned no value, expected `{want}`"),
                    ));
                }
            }
        }
        Ok(value)
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(80).collect();
        c.push('…');
        c
    }
}

impl Check for PgCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.open_and_query().await {
                Err(o) => o,
                Ok((open, o)) => {
                    let Open { client, driver, .. } = open;
                    drop(client);
                    driver.finish(GOODBYE).await;
                    o
                }
            }
        })
    }

    fn connect<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let (open, outcome) = self.open_and_query().await?;
            Ok(Connected {
                session: Box::new(PgSession {
                    open,
                    heart: self.heart(),
                    warn: self.spec.tls_expiry_warning,
                }),
                outcome,
            })
        })
    }
}

struct PgSession {
    open: Open,
    heart: Heart,
    warn: Option<Duration>,
}

impl Session for PgSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let PgSession { open, heart, warn } = *self;
            let Open {
                client,
                mut driver,
                budget,
                cert,
                ..
            } = open;
            let bye = |client: Client, driver: Driver| async move {
                drop(client);
                driver.finish(Duration::from_millis(500)).await;
                CheckError::new(ErrorKind::Closed, "agent closed the session")
            };
            loop {
                tokio::select! {
                    biased;
                    _ = io.shutdown.cancelled() => return bye(client, driver).await,
                    r = &mut driver.0 => return ended(r),
                    b = io.beats.recv() => {
                        if b.is_none() {
                            return bye(client, driver).await;
                        }
                        budget.reset();
                        let t = Instant::now();
                        let r = tokio::select! {
                            biased;
                            _ = io.shutdown.cancelled() => return bye(client, driver).await,
                            r = &mut driver.0 => return ended(r),
                            r = tokio::time::timeout(io.timeout, heart.exchange(&client)) => r,
                        };
                        // A heartbeat past the timeout is reported by the supervisor.
                        let Ok(r) = r else { continue };
                        let latency = t.elapsed();
                        let o = match r {
                            Ok(_) => Outcome::up(latency),
                            Err(e) if client.is_closed() => {
                                // The driver is finishing; report why it ended.
                                return match tokio::time::timeout(GOODBYE, &mut driver.0).await {
                                    Ok(r) => ended(r),
                                    Err(_) => CheckError::new(ErrorKind::Closed, e.message),
                                };
                            }
                            Err(e) => Outcome::down(e, latency),
                        };
                        let o = o
                            .with_phases(Phases { exchange: Some(latency), ..Phases::default() })
                            .with_peer_cert(cert.clone(), warn);
                        if io.report.send(o).await.is_err() {
                            return bye(client, driver).await;
                        }
                    }
                }
            }
        })
    }
}
