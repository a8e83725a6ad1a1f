//! An etcd v3 client over etcd's JSON gRPC gateway (HTTP/1.1 + JSON on the client port),
//! built on the crate's reqwest and rustls: key-values, leases, transactions and prefix
//! watches — what clustering needs, nothing more.
//!
//! - **Time.** `request_timeout` bounds one *call*, across every endpoint it tries: each
//!   attempt gets an equal share of what is left (3 endpoints, 3 s: 1 s each while they
//!   hang; a refused connect hands its share on). So a call never takes much longer than
//!   `request_timeout`, and a hung member (stopped process, partition) is failed over
//!   like a dead one. A watch uses its share for connect, headers and the `created`
//!   message only; then it streams (see [`Watch`] for how a silent stream ends: a
//!   `GET /version` probe after 10 s of silence, dead after 3 failed probes).
//! - **Failover.** Calls go to the endpoint that answered last; on a connect error, a
//!   timeout, an HTTP 5xx or an "etcdserver: leader changed" / "no leader" answer they try
//!   the next, each endpoint at most once per call. When all fail: [`EtcdError::Unreachable`]
//!   naming each. A timed-out write may still have been applied (as with any etcd client);
//!   callers use txn compares where that matters.
//! - **Auth.** With a username, the client authenticates once (`/v3/auth/authenticate`),
//!   sends the token as `Authorization` on every call and authenticates again once per
//!   call when the server calls the token invalid (a restarted member forgets simple
//!   tokens). The password and tokens never appear in errors or logs.
//! - **TLS.** `https` endpoints trust `ca_file` (else the OS roots) and present
//!   `cert_file`/`key_file` when given.
//! - **Bounded.** Range and txn answers are read up to 16 MiB, others up to 64 KiB, watch
//!   messages up to 4 MiB each (etcd fragments larger watch responses for us).

mod watch;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::net::capped::{AtCap, CappedBuf};
use crate::secret::Secret;

pub use watch::Watch;

/// Largest range or txn response read.
const RANGE_CAP: usize = 16 << 20;
/// Largest response to any other unary call.
const SMALL_CAP: usize = 64 << 10;

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs (`http://host:2379`, `https://…`), tried in order.
    pub endpoints: Vec<String>,
    /// The etcd user, when the cluster has auth enabled.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Secret<String>>,
    /// PEM CA bundle that `https` endpoints are verified against (else the OS roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), with `key_file`, for client-certificate auth.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Budget of one call across all the endpoints it tries.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Every endpoint failed (connect error, timeout, HTTP 5xx, no leader); the message
    /// names each endpoint and its failure.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with a gRPC error.
    #[error("etcd error (code {code}): {message}")]
    Status {
        /// The gRPC status code (3 invalid argument, 5 not found, 16 unauthenticated…).
        code: i64,
        /// The server's message.
        message: String,
    },
    /// A watch's start revision was compacted away; the payload is the compaction
    /// revision. Re-list and watch from the list's revision + 1.
    #[error("etcd watch start revision compacted (compact revision {0})")]
    Compacted(i64),
    /// The server's answer did not make sense (bad JSON, too large, missing fields).
    #[error("etcd protocol error: {0}")]
    Protocol(String),
    /// The options are unusable.
    #[error("etcd config: {0}")]
    Config(String),
}

impl EtcdError {
    /// True for [`EtcdError::Unreachable`]: nothing answered; try again later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }

    /// True if the server refused the auth token (expired, forgotten by a restarted
    /// member, or missing): authenticating again may help.
    fn is_token_error(&self) -> bool {
        match self {
            Self::Status { message, .. } => {
                message.contains("invalid auth token")
                    || message.contains("user name is empty")
                    || message.contains("revision of auth store is old")
            }
            _ => false,
        }
    }

    /// True for the answers of a member that cannot serve right now (another may).
    fn is_leader_error(&self) -> bool {
        match self {
            Self::Status { message, .. } => {
                message.contains("leader changed") || message.contains("no leader")
            }
            _ => false,
        }
    }
}

/// One key-value as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key (UTF-8; other bytes are replaced).
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// Changes since creation (1 for a new key).
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// One change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(Kv),
    /// A key was deleted (by a delete or its lease's expiry).
    Delete {
        /// The key.
        key: String,
        /// Revision of the deletion.
        mod_revision: i64,
    },
}

/// A transaction: if every compare holds, `success` runs, else `failure`.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Operations run when they do.
    pub success: Vec<Op>,
    /// Operations run when they do not.
    pub failure: Vec<Op>,
}

/// A condition on one key (a missing key has version, revisions and lease 0).
#[derive(Debug, Clone)]
pub enum Compare {
    /// Its version (0: absent).
    Version {
        /// The key.
        key: String,
        /// How it compares.
        op: Cmp,
        /// With what.
        value: i64,
    },
    /// Its last modification revision.
    ModRevision {
        /// The key.
        key: String,
        /// How it compares.
        op: Cmp,
        /// With what.
        value: i64,
    },
    /// Its creation revision.
    CreateRevision {
        /// The key.
        key: String,
        /// How it compares.
        op: Cmp,
        /// With what.
        value: i64,
    },
    /// Its lease id.
    Lease {
        /// The key.
        key: String,
        /// How it compares.
        op: Cmp,
        /// With what.
        value: i64,
    },
    /// Its value.
    Value {
        /// The key.
        key: String,
        /// How it compares.
        op: Cmp,
        /// With what.
        value: Vec<u8>,
    },
}

/// A comparison (the key's field on the left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Sets a key (attached to a lease, when given).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease.
        lease: Option<i64>,
    },
    /// Deletes a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Reads a key (its result lands in [`TxnResult::gets`]).
    Get {
        /// The key.
        key: String,
    },
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// True if the compares held (the success branch ran).
    pub succeeded: bool,
    /// The store revision after it.
    pub revision: i64,
    /// The key-values of each [`Op::Get`] of the branch that ran, in order.
    pub gets: Vec<Vec<Kv>>,
}

/// An etcd client: cheap to clone, shared by tasks.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    /// Normalised origins (`scheme://host:port`).
    endpoints: Vec<String>,
    client: reqwest::Client,
    /// Index of the endpoint that answered last.
    current: AtomicUsize,
    auth: Option<Auth>,
    timeout: Duration,
}

struct Auth {
    user: String,
    password: Secret<String>,
    /// The current token (redacted from any text while held).
    token: Mutex<Option<Arc<Secret<String>>>>,
}

/// What [`Etcd::failover`] runs.
enum Request<'a> {
    /// A POST answered by one JSON object, read up to `cap` bytes.
    Unary {
        path: &'a str,
        body: Bytes,
        cap: usize,
    },
    /// A watch with this create request.
    Watch { create: &'a str },
}

/// What it yields.
enum Reply {
    Json(Value),
    Watch(Box<Watch>),
}

/// Why one attempt on one endpoint failed.
enum Failure {
    /// The endpoint could not serve: try the next (the text says why).
    Next(String),
    /// An answer that another endpoint would give too.
    Stop(EtcdError),
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Self {
        if e.is_leader_error() {
            Failure::Next(e.to_string())
        } else {
            Failure::Stop(e)
        }
    }
}

impl Etcd {
    /// Validates the endpoints (`http`/`https` origins, no credentials in them) and TLS
    /// files, and builds the client. Nothing is sent yet.
    pub fn new(o: &EtcdOptions) -> Result<Self, EtcdError> {
        if o.endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoints".into()));
        }
        let endpoints = o
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if o.request_timeout.is_zero() {
            return Err(EtcdError::Config("request_timeout must be above 0".into()));
        }
        let auth = match (&o.username, &o.password) {
            (Some(u), p) if !u.is_empty() => Some(Auth {
                user: u.clone(),
                password: p.clone().unwrap_or_default(),
                token: Mutex::new(None),
            }),
            (_, Some(_)) => {
                return Err(EtcdError::Config("a password needs a username".into()));
            }
            _ => None,
        };
        let tls = client_tls(o)?;
        // Keepalive finds connections that died under a long watch.
        let client = crate::net::http_client::builder(&tls)
            .tcp_keepalive(Duration::from_secs(10))
            .tcp_keepalive_interval(Duration::from_secs(5))
            .tcp_keepalive_retries(3)
            .build()
            .map_err(|e| EtcdError::Config(crate::net::http_client::describe(&e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                client,
                current: AtomicUsize::new(0),
                auth,
                timeout: o.request_timeout,
            }),
        })
    }

    /// The endpoint in use now (the one that answered last).
    pub fn endpoint(&self) -> String {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.inner.endpoints[i].clone()
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up; etcd may raise it to its
    /// minimum); returns its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
        let v = self
            .call("/v3/lease/grant", &wire::grant_request(secs), SMALL_CAP)
            .await?;
        Ok(wire::parse_grant(v)?.0)
    }

    /// Refreshes a lease once; returns its TTL, or `None` if the lease is gone (expired,
    /// revoked or unknown).
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<Duration>, EtcdError> {
        let r = self
            .call(
                "/v3/lease/keepalive",
                &wire::lease_id_request(lease),
                SMALL_CAP,
            )
            .await;
        match r {
            Ok(v) => {
                let ttl = wire::parse_keepalive(v)?;
                Ok(u64::try_from(ttl)
                    .ok()
                    .filter(|t| *t > 0)
                    .map(Duration::from_secs))
            }
            Err(EtcdError::Status { code: 5, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Revokes a lease (deleting its keys). A lease that is already gone is not an error.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        match self
            .call(
                "/v3/lease/revoke",
                &wire::lease_id_request(lease),
                SMALL_CAP,
            )
            .await
        {
            Ok(_) | Err(EtcdError::Status { code: 5, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets `key` (attached to `lease`, when given); returns the revision of the write.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let v = self
            .call(
                "/v3/kv/put",
                &wire::put_request(key, value, lease),
                SMALL_CAP,
            )
            .await?;
        wire::parse_revision(v)
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self
            .call("/v3/kv/range", &wire::get_request(key), RANGE_CAP)
            .await?;
        Ok(wire::parse_range(v)?.0.into_iter().next())
    }

    /// Reads every key under `prefix` (in key order) and the revision they were read at
    /// (watch from revision + 1 to miss nothing).
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let v = self
            .call(
                "/v3/kv/range",
                &wire::range_prefix_request(prefix),
                RANGE_CAP,
            )
            .await?;
        wire::parse_range(v)
    }

    /// Deletes one key; returns how many keys went (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64, EtcdError> {
        let v = self
            .call("/v3/kv/deleterange", &wire::delete_request(key), SMALL_CAP)
            .await?;
        wire::parse_deleted(v)
    }

    /// Runs a transaction.
    pub async fn txn(&self, t: &Txn) -> Result<TxnResult, EtcdError> {
        let v = self
            .call("/v3/kv/txn", &wire::txn_request(t), RANGE_CAP)
            .await?;
        wire::parse_txn(v)
    }

    /// Watches every key under `prefix` from `start_revision` (0: from now). Returns once
    /// the server has created the watch.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let create = wire::watch_create_request(prefix, start_revision).to_string();
        match self.failover(&Request::Watch { create: &create }).await? {
            Reply::Watch(w) => Ok(*w),
            Reply::Json(_) => Err(EtcdError::Protocol("watch answered like a call".into())),
        }
    }

    /// One unary call with failover, auth and the response cap.
    async fn call(&self, path: &str, body: &Value, cap: usize) -> Result<Value, EtcdError> {
        let req = Request::Unary {
            path,
            body: Bytes::from(body.to_string()),
            cap,
        };
        match self.failover(&req).await? {
            Reply::Json(v) => Ok(v),
            Reply::Watch(_) => Err(EtcdError::Protocol("call answered like a watch".into())),
        }
    }

    /// One attempt of `req` on `ep` within `budget`.
    async fn attempt(
        &self,
        req: &Request<'_>,
        ep: &str,
        token: Option<&str>,
        budget: Duration,
    ) -> Result<Reply, Failure> {
        match req {
            Request::Unary { path, body, cap } => self
                .unary(ep, path, body.clone(), token, budget, *cap)
                .await
                .map(Reply::Json),
            Request::Watch { create } => Watch::open(&self.inner.client, ep, token, create, budget)
                .await
                .map(|w| Reply::Watch(Box::new(w))),
        }
    }

    /// Runs `req` on the endpoints in turn, from the one that answered last, each at most
    /// once, sharing `request_timeout` among them; authenticates first when needed and
    /// once again if the token is refused.
    async fn failover(&self, req: &Request<'_>) -> Result<Reply, EtcdError> {
        let eps = &self.inner.endpoints;
        let n = eps.len();
        let start = self.inner.current.load(Ordering::Relaxed) % n;
        let deadline = Instant::now() + self.inner.timeout;
        let mut failures = Vec::new();
        let mut reauthed = false;
        let mut i = 0;
        while i < n {
            let idx = (start + i) % n;
            let ep = eps[idx].as_str();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push(format!("{ep}: not tried (request_timeout spent)"));
                i += 1;
                continue;
            }
            let share_end = Instant::now() + left / u32::try_from(n - i).unwrap_or(1);
            let token = match self.token(ep, share_end).await {
                Ok(t) => t,
                Err(Failure::Next(why)) => {
                    failures.push(format!("{ep}: {why}"));
                    i += 1;
                    continue;
                }
                Err(Failure::Stop(e)) => return Err(e),
            };
            let budget = share_end.saturating_duration_since(Instant::now());
            let tok = token.as_ref().map(|t| t.expose().as_str());
            match self.attempt(req, ep, tok, budget).await {
                Ok(v) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Failure::Next(why)) => {
                    failures.push(format!("{ep}: {why}"));
                    i += 1;
                }
                Err(Failure::Stop(e))
                    if e.is_token_error() && !reauthed && self.inner.auth.is_some() =>
                {
                    // Same endpoint again, with a fresh token.
                    reauthed = true;
                    self.forget_token(token.as_ref());
                }
                Err(Failure::Stop(e)) => return Err(e),
            }
        }
        Err(EtcdError::Unreachable(crate::secret::redact(
            &failures.join("; "),
        )))
    }

    /// The auth token to send (authenticating on `ep` first if there is none yet), or
    /// `None` without a username.
    async fn token(
        &self,
        ep: &str,
        until: Instant,
    ) -> Result<Option<Arc<Secret<String>>>, Failure> {
        let Some(auth) = &self.inner.auth else {
            return Ok(None);
        };
        if let Some(t) = auth.token.lock().clone() {
            return Ok(Some(t));
        }
        let body = wire::authenticate_request(&auth.user, auth.password.expose()).to_string();
        let budget = until.saturating_duration_since(Instant::now());
        let v = self
            .unary(
                ep,
                "/v3/auth/authenticate",
                Bytes::from(body),
                None,
                budget,
                SMALL_CAP,
            )
            .await?;
        let token = crate::secret::lease(wire::parse_token(v).map_err(Failure::Stop)?);
        *auth.token.lock() = Some(token.clone());
        Ok(Some(token))
    }

    /// Drops `used` as the current token (unless another task has replaced it already).
    fn forget_token(&self, used: Option<&Arc<Secret<String>>>) {
        if let Some(auth) = &self.inner.auth {
            let mut t = auth.token.lock();
            let same = match (t.as_ref(), used) {
                (Some(cur), Some(used)) => Arc::ptr_eq(cur, used),
                _ => true,
            };
            if same {
                *t = None;
            }
        }
    }

    /// One POST of `body` to `ep` + `path`, answered within `budget`, read up to `cap`.
    async fn unary(
        &self,
        ep: &str,
        path: &str,
        body: Bytes,
        token: Option<&str>,
        budget: Duration,
        cap: usize,
    ) -> Result<Value, Failure> {
        let mut req = self
            .inner
            .client
            .post(format!("{ep}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, t);
        }
        let exchange = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| Failure::Next(crate::net::http_client::describe(&e)))?;
            let status = resp.status();
            let mut buf = CappedBuf::new(cap);
            buf.fill(&mut resp, AtCap::Stop)
                .await
                .map_err(|e| Failure::Next(crate::net::http_client::describe(&e)))?;
            Ok::<_, Failure>((status, buf))
        };
        let (status, buf) = tokio::time::timeout(budget, exchange)
            .await
            .map_err(|_| Failure::Next(format!("no answer within {budget:?}")))??;
        if buf.truncated() {
            return Err(Failure::Stop(EtcdError::Protocol(format!(
                "{path}: response larger than {cap} bytes"
            ))));
        }
        answer(path, status, buf.bytes())
    }
}

/// What a unary response means: its JSON, a gRPC error, or a reason to try elsewhere.
fn answer(path: &str, status: http::StatusCode, body: &[u8]) -> Result<Value, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            if let Some(e) = wire::error_of(&v) {
                return Err(if status.is_server_error() {
                    Failure::Next(format!("HTTP {}: {e}", status.as_u16()))
                } else {
                    Failure::from(e)
                });
            }
            if status.is_server_error() {
                Err(Failure::Next(format!("HTTP {}", status.as_u16())))
            } else if !status.is_success() {
                Err(Failure::Stop(EtcdError::Status {
                    code: 2,
                    message: format!("{path}: HTTP {}", status.as_u16()),
                }))
            } else {
                Ok(v)
            }
        }
        Err(_) if status.is_server_error() => {
            Err(Failure::Next(format!("HTTP {}", status.as_u16())))
        }
        Err(e) => Err(Failure::Stop(EtcdError::Protocol(format!(
            "{path}: HTTP {} with a body that is not JSON: {e}",
            status.as_u16()
        )))),
    }
}

/// `scheme://host:port` of an endpoint URL, or why it is unusable.
fn normalize_endpoint(ep: &str) -> Result<String, EtcdError> {
    let shown = || crate::secret::redact(ep);
    let u = url::Url::parse(ep)
        .map_err(|e| EtcdError::Config(format!("endpoint {:?}: {e}", shown())))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(EtcdError::Config(format!(
            "endpoint {:?}: scheme must be http or https",
            shown()
        )));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(EtcdError::Config(format!(
            "endpoint {}: credentials go in username/password, not the URL",
            crate::secret::redact_url(&u)
        )));
    }
    if u.host_str().is_none_or(str::is_empty)
        || !matches!(u.path(), "" | "/")
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(EtcdError::Config(format!(
            "endpoint {:?}: want scheme://host[:port] only",
            shown()
        )));
    }
    Ok(u.origin().ascii_serialization())
}

/// The rustls config for `https` endpoints: `ca_file` or the OS roots, and the client
/// certificate when given.
fn client_tls(o: &EtcdOptions) -> Result<rustls::ClientConfig, EtcdError> {
    use crate::net::tls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cfg = |e: crate::check::CheckError| EtcdError::Config(e.message);
    let mut roots = rustls::RootCertStore::empty();
    match &o.ca_file {
        Some(p) => {
            if tls::add_pem_file(&mut roots, p, "ca_file").map_err(cfg)? == 0 {
                return Err(EtcdError::Config(format!(
                    "ca_file {} holds no certificate",
                    p.display()
                )));
            }
        }
        None => tls::add_native_roots(&mut roots),
    }
    match (&o.cert_file, &o.key_file) {
        (None, None) => tls::config(tls::Verify::Full(roots)).map_err(cfg),
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| EtcdError::Config(format!("cert_file {}: {e}", cert.display())))?;
            if certs.is_empty() {
                return Err(EtcdError::Config(format!(
                    "cert_file {} holds no certificate",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| EtcdError::Config(format!("key_file {}: {e}", key.display())))?;
            tls::install_provider();
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| EtcdError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| EtcdError::Config(format!("client certificate: {e}")))
        }
        _ => Err(EtcdError::Config(
            "cert_file and key_file go together".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
