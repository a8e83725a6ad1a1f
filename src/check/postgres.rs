//! `postgres` (probe and session): log in with a libpq URL (`dsn`) and run `query`
//! (default `SELECT 1`); with `expect`, the first column of the first row must equal it.
//!
//! Each stage is timed and classified on its own: TCP connect (ours, so `refused`/`dns`
//! are exact), TLS (rustls + ring through tokio-postgres-rustls, wrapped so the handshake
//! is timed and its failures are `tls`), login (SQLSTATE 28P01/28000 → `auth_failed`) and
//! the query (`exchange`). In session mode the driver's connection task is watched: when it
//! ends (server killed, `pg_terminate_backend`), the session ends at once.

pub mod dsn;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, NoTls, TlsConnect};
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::ParseCx;
use super::capped::{Capped, DEFAULT_BUDGET, ReadBudget};
use super::tls;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use dsn::{Dsn, RootCert, SslMode};

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
}

/// Reads `dsn`, `query`, `expect`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let raw = t.req_str("dsn");
    let query = t.str("query").map(|s| s.value);
    let expect = t.str("expect").map(|s| s.value);
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
    Some(Arc::new(PostgresSpec { dsn, query, expect }))
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

// ---------------------------------------------------------------------------------------
// TLS: the sslmode mapping and the one place that knows tokio-postgres-rustls.

/// The rustls config for `dsn`'s sslmode, or `None` for `disable`.
///
/// | sslmode | TLS | verification |
/// |---|---|---|
/// | disable | never | – |
/// | prefer | if offered | none (libpq) |
/// | require | required | none; chain only (as verify-ca) when `sslrootcert` is set (libpq) |
/// | verify-ca | required | chain to `sslrootcert` (or OS roots), host name not checked |
/// | verify-full | required | chain and host name |
pub fn tls_config(dsn: &Dsn) -> Result<Option<rustls::ClientConfig>, CheckError> {
    super::tls::install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckError::new(ErrorKind::Tls, e.to_string()))?;
    let verify = match (dsn.sslmode, &dsn.sslrootcert) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer, _) | (SslMode::Require, None) => Verify::Nothing,
        (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => Verify::Chain,
        (SslMode::VerifyFull, _) => Verify::Full,
    };
    let mut cfg = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(super::tls::NoVerify(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(roots(dsn.sslrootcert.as_ref())?);
            if verify == Verify::Full {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| CheckError::new(ErrorKind::Tls, format!("sslrootcert: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                    .with_no_client_auth()
            }
        }
    };
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(cfg))
}

#[derive(PartialEq)]
enum Verify {
    Nothing,
    Chain,
    Full,
}

fn roots(src: Option<&RootCert>) -> Result<rustls::RootCertStore, CheckError> {
    let mut roots = rustls::RootCertStore::empty();
    match src {
        None | Some(RootCert::System) => tls::add_native_roots(&mut roots),
        Some(RootCert::File(path)) => {
            if tls::add_pem_file(&mut roots, path, "sslrootcert")? == 0 {
                return Err(CheckError::new(
                    ErrorKind::Tls,
                    format!("sslrootcert {} holds no certificate", path.display()),
                ));
            }
        }
    }
    Ok(roots)
}

/// `verify-ca`: the full WebPKI check except the host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What the TLS wrapper saw: how long the handshake took and whether it failed.
#[derive(Default)]
struct TlsRecord {
    took: Mutex<Option<Duration>>,
    started: Mutex<bool>,
    failed: Mutex<bool>,
}

/// The TLS connector handed to tokio-postgres: tokio-postgres-rustls, timed.
struct TimedTls {
    make: MakeRustlsConnect,
    host: String,
    record: Arc<TlsRecord>,
}

/// The one function that builds the tokio-postgres-rustls glue.
fn tls_connector(cfg: &rustls::ClientConfig, host: &str, record: Arc<TlsRecord>) -> TimedTls {
    TimedTls {
        make: MakeRustlsConnect::new(cfg.clone()),
        host: host.to_string(),
        record,
    }
}

impl<S> TlsConnect<S> for TimedTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Stream, Self::Error>>;

    fn connect(mut self, stream: S) -> Self::Future {
        *self.record.started.lock() = true;
        let connector = MakeTlsConnect::<S>::make_tls_connect(&mut self.make, &self.host);
        let record = self.record;
        Box::pin(async move {
            let connector = match connector {
                Ok(c) => c,
                Err(never) => match never {},
            };
            let t = Instant::now();
            let r = connector.connect(stream).await;
            *record.took.lock() = Some(t.elapsed());
            *record.failed.lock() = r.is_err();
            r.map_err(Into::into)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Errors.

/// Classifies a driver error. `tls_expected`: the sslmode requires TLS.
fn classify(e: &tokio_postgres::Error, tls: Option<&TlsRecord>, tls_expected: bool) -> CheckError {
    let text = describe(e);
    if tls.is_some_and(|rec| *rec.failed.lock()) {
        return CheckError::new(ErrorKind::Tls, text);
    }
    if let Some(db) = e.as_db_error() {
        return CheckError::new(
            sqlstate_kind(db.code()),
            format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        );
    }
    if e.is_closed() {
        return CheckError::new(ErrorKind::Closed, "server closed the connection");
    }
    if let Some(io) = io_source(e) {
        let k = ErrorKind::from_io(io);
        let k = if k == ErrorKind::Internal {
            ErrorKind::Protocol
        } else {
            k
        };
        return CheckError::new(k, text);
    }
    // tokio-postgres refuses to go on in plain text when TLS is required before it ever
    // calls the connector: the only non-I/O, non-server error possible at that point.
    if tls_expected && tls.is_some_and(|r| !*r.started.lock()) {
        return CheckError::new(ErrorKind::Tls, text);
    }
    // Client-side authentication failures (the server asks for a password and none is
    // configured, a SCRAM exchange that does not verify) carry no public type; the
    // driver's error kind is only visible in its text.
    if text.starts_with("authentication error") || text.contains("password missing") {
        return CheckError::new(ErrorKind::AuthFailed, text);
    }
    CheckError::new(ErrorKind::Protocol, text)
}

/// The error kind for a server error.
fn sqlstate_kind(code: &SqlState) -> ErrorKind {
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        ErrorKind::AuthFailed
    } else if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || code.code().starts_with("08")
    {
        ErrorKind::Closed
    } else {
        // Unknown database (3D000), too many connections (53300), starting up (57P03), a
        // query the server refuses (syntax, missing table, permission): the server is up
        // and answered, but said no.
        ErrorKind::Rejected
    }
}

fn io_source(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        src = s.source();
    }
    None
}

/// The error and its causes on one line.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

/// A session that ended: the driver task's result as a `CheckError`.
fn ended(r: Result<Result<(), tokio_postgres::Error>, tokio::task::JoinError>) -> CheckError {
    match r {
        Ok(Ok(())) => CheckError::new(ErrorKind::Closed, "server closed the connection"),
        Ok(Err(e)) => {
            let c = classify(&e, None, false);
            match c.kind {
                ErrorKind::AuthFailed | ErrorKind::Closed => c,
                // Reset, EOF, protocol trouble: for a live session all mean "it is gone".
                _ => CheckError::new(ErrorKind::Closed, format!("connection lost: {}", c.message)),
            }
        }
        Err(e) => CheckError::new(ErrorKind::Internal, format!("connection task failed: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// The check.

struct PgCheck {
    spec: PostgresSpec,
    tls: Option<rustls::ClientConfig>,
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
        let stream = super::tcp::connect(&d.address(), phases).await?;
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
        let (client, driver, server_version) = match &self.tls {
            None => handshake(&cfg, stream, NoTls)
                .await
                .map_err(|e| classify(&e, None, false))?,
            Some(tc) => {
                let record = Arc::new(TlsRecord::default());
                let r = handshake(&cfg, stream, tls_connector(tc, &d.host, record.clone())).await;
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
            Err(e) => return Err(Outcome::down(e, start.elapsed()).with_phases(phases)),
        };
        let t = Instant::now();
        let r = self.heart().exchange(&open.client).await;
        phases.exchange = Some(t.elapsed());
        let latency = start.elapsed();
        let mut o = match r {
            Ok(_) => Outcome::up(latency),
            Err(e) => {
                let o = Outcome::down(e, latency).with_phases(phases);
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
                }),
                outcome,
            })
        })
    }
}

struct PgSession {
    open: Open,
    heart: Heart,
}

impl Session for PgSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let PgSession { open, heart } = *self;
            let Open {
                client,
                mut driver,
                budget,
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
                        let o = o.with_phases(Phases { exchange: Some(latency), ..Phases::default() });
                        if io.report.send(o).await.is_err() {
                            return bye(client, driver).await;
                        }
                    }
                }
            }
        })
    }
}
