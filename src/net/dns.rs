//! Name resolution: one asynchronous resolver for the whole agent.
//!
//! Every connection the agent opens resolves through here (TCP kinds via
//! [`super::addr::connect`], SIP over UDP, every reqwest client via [`ReqwestResolver`]).
//! Lookups are DNS queries made on the tokio workers (hickory), never `getaddrinfo` on
//! the blocking pool, so a resolver that never answers costs a timer per lookup and
//! nothing else: notifications, reloads and history reads keep their threads.
//!
//! - Servers, search list and options (`ndots`, `timeout`, `attempts`, `edns0`) come from
//!   `/etc/resolv.conf`; `[agent] dns_servers` replaces the servers (not the search list).
//!   `/etc/hosts` is honoured. Answers are cached for their TTL.
//! - IP literals never reach the resolver; `localhost` and `*.localhost` are loopback
//!   without a query (RFC 6761).
//! - Inside an attempt ([`super::deadline::scope`]) a lookup gets 90 % of the time left,
//!   so a silent resolver fails the attempt as `dns` before the supervisor's `timeout`;
//!   outside one it gets [`DEFAULT_BUDGET`].
//!
//! The resolver is process-wide like the TLS crypto provider: [`configure`] installs it
//! at start and on reload (rebuilt only when `dns_servers` changed); a lookup before that
//! builds one from the system configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::check::{CheckError, ErrorKind};

/// Budget of a lookup made outside an attempt (notifiers, token fetches); below the
/// shared HTTP client's 5 s connect timeout, so a silent resolver reads as `dns`.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(4);

/// Where the system configuration is read from.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why a name did not resolve. Always `error_kind = "dns"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    #[error("resolve {name}: no such host")]
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// The name exists but has no A or AAAA record.
    #[error("resolve {name}: no addresses")]
    NoAddresses {
        /// The name looked up.
        name: String,
    },
    /// No answer within the lookup's budget.
    #[error("resolve {name}: no answer within {}", crate::time::fmt_duration(*budget))]
    Timeout {
        /// The name looked up.
        name: String,
        /// How long the lookup was given.
        budget: Duration,
    },
    /// The resolver failed otherwise (SERVFAIL, refused, no servers, I/O).
    #[error("resolve {name}: {reason}")]
    Failed {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

impl From<DnsError> for CheckError {
    fn from(e: DnsError) -> Self {
        CheckError::new(ErrorKind::Dns, e.to_string())
    }
}

/// The installed resolver and what it was built from.
struct Installed {
    /// `dns_servers` it was built for (empty: the system's).
    servers: Vec<SocketAddr>,
    /// `None` when there is no server to ask.
    resolver: Option<TokioResolver>,
    /// Why there is no resolver.
    problem: String,
}

static CURRENT: ArcSwapOption<Installed> = ArcSwapOption::const_empty();
static CONFIGURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Installs the agent's resolver for `dns_servers` (empty: the system's servers). A
/// no-op when the installed one was built for the same servers; otherwise the new one
/// (with an empty cache) serves every later lookup. Reading `/etc/resolv.conf` and
/// `/etc/hosts` happens on the blocking pool.
pub async fn configure(dns_servers: &[SocketAddr]) {
    install(dns_servers, false).await;
}

async fn install(servers: &[SocketAddr], only_if_missing: bool) {
    let _one_at_a_time = CONFIGURING.lock().await;
    if let Some(cur) = CURRENT.load_full()
        && (only_if_missing || cur.servers == servers)
    {
        return;
    }
    let owned = servers.to_vec();
    match tokio::task::spawn_blocking(move || Installed::build(owned)).await {
        Ok(i) => {
            match &i.resolver {
                Some(_) if servers.is_empty() => tracing::debug!("resolver: system configuration"),
                Some(_) => tracing::info!(servers = ?servers, "resolver: dns_servers"),
                None => {
                    tracing::error!(problem = %i.problem, "no DNS resolver: names will not resolve")
                }
            }
            CURRENT.store(Some(Arc::new(i)));
        }
        Err(e) => tracing::error!(error = %e, "building the DNS resolver failed"),
    }
}

async fn installed() -> Option<Arc<Installed>> {
    if let Some(i) = CURRENT.load_full() {
        return Some(i);
    }
    install(&[], true).await;
    CURRENT.load_full()
}

impl Installed {
    /// Reads the system configuration and builds (blocking: file reads).
    fn build(servers: Vec<SocketAddr>) -> Self {
        let system = std::fs::read(RESOLV_CONF)
            .map_err(|e| format!("{RESOLV_CONF}: {e}"))
            .and_then(|b| {
                hickory_resolver::system_conf::parse_resolv_conf(b)
                    .map_err(|e| format!("{RESOLV_CONF}: {e}"))
            });
        let (config, mut opts, mut problem) = match system {
            Ok((c, o)) => (c, o, String::new()),
            Err(e) => (
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
                e,
            ),
        };
        let (domain, search, mut name_servers) = config.into_parts();
        if !servers.is_empty() {
            name_servers = servers.iter().map(|s| name_server(*s)).collect();
            problem.clear();
        }
        if name_servers.is_empty() {
            if problem.is_empty() {
                problem = format!("{RESOLV_CONF} lists no nameserver and dns_servers is empty");
            }
            return Self {
                servers,
                resolver: None,
                problem,
            };
        }
        opts.use_hosts_file = ResolveHosts::Always;
        let config = ResolverConfig::from_parts(domain, search, name_servers);
        let built = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build();
        match built {
            Ok(r) => Self {
                servers,
                resolver: Some(r),
                problem: String::new(),
            },
            Err(e) => Self {
                servers,
                resolver: None,
                problem: e.to_string(),
            },
        }
    }
}

/// A name server at `addr`, over UDP with TCP for truncated answers.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    ns
}

/// A name server as config writes it: `IP`, `IP:PORT` or `[v6]:PORT` (port 53 by
/// default); `None` for anything else (`dns_servers`, the `dns` kind's `server`).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(s);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// Addresses `host` needs no query for: an IP literal (brackets allowed) or a
/// `localhost` name.
pub fn without_query(host: &str) -> Option<Vec<IpAddr>> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    })
}

/// The budget of a lookup starting now: 90 % of the attempt's time left, or
/// [`DEFAULT_BUDGET`] outside an attempt.
fn budget() -> Duration {
    match super::deadline::remaining() {
        Some(left) => left.mul_f64(0.9),
        None => DEFAULT_BUDGET,
    }
}

/// The addresses of `host`, IPv6 and IPv4 interleaved (RFC 8305 §4, IPv6 first), under
/// the current budget.
pub async fn lookup(host: &str) -> Result<Vec<IpAddr>, DnsError> {
    lookup_within(host, budget()).await
}

/// [`lookup`] with an explicit budget.
pub async fn lookup_within(host: &str, budget: Duration) -> Result<Vec<IpAddr>, DnsError> {
    if let Some(ips) = without_query(host) {
        return Ok(ips);
    }
    let name = host.to_owned();
    let Some(inst) = installed().await else {
        return Err(DnsError::Failed {
            name,
            reason: "no resolver".into(),
        });
    };
    let Some(r) = &inst.resolver else {
        return Err(DnsError::Failed {
            name,
            reason: inst.problem.clone(),
        });
    };
    match tokio::time::timeout(budget, r.lookup_ip(host)).await {
        Err(_) => Err(DnsError::Timeout { name, budget }),
        Ok(Err(e)) => Err(from_net(name, budget, &e)),
        Ok(Ok(found)) => {
            let ips = interleave(found.iter().collect());
            if ips.is_empty() {
                Err(DnsError::NoAddresses { name })
            } else {
                Ok(ips)
            }
        }
    }
}

/// `host`'s addresses with `port`, in the order to try them.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
    Ok(lookup(host)
        .await?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

fn from_net(name: String, budget: Duration, e: &NetError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NotFound { name }
    } else if e.is_no_records_found() {
        DnsError::NoAddresses { name }
    } else if matches!(e, NetError::Timeout) {
        DnsError::Timeout { name, budget }
    } else {
        DnsError::Failed {
            name,
            reason: e.to_string(),
        }
    }
}

/// Alternates families, IPv6 first, keeping each family's order (RFC 8305 §4).
fn interleave(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(IpAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// The agent's resolver as a reqwest resolver: set on every client by
/// [`super::http_client::builder`]. (reqwest skips it for IP literals.)
#[derive(Debug, Clone, Copy, Default)]
pub struct ReqwestResolver;

impl reqwest::dns::Resolve for ReqwestResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        // Taken now: the connect future may be polled outside the attempt's scope.
        let budget = budget();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = lookup_within(&host, budget).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_need_no_query() {
        assert_eq!(
            without_query("10.0.0.1"),
            Some(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))])
        );
        assert_eq!(
            without_query("[::1]"),
            Some(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
        );
        let lo = Some(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
        assert_eq!(without_query("localhost"), lo);
        assert_eq!(without_query("LocalHost."), lo);
        assert_eq!(without_query("app.localhost"), lo);
        assert_eq!(without_query("localhost.example"), None);
        assert_eq!(without_query("db"), None);
    }

    #[test]
    fn families_alternate_v6_first() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let got = interleave(vec![
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("::1"),
            ip("10.0.0.3"),
        ]);
        assert_eq!(
            got,
            vec![ip("::1"), ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
        );
    }

    #[test]
    fn errors_are_dns() {
        let e: CheckError = DnsError::Timeout {
            name: "db".into(),
            budget: Duration::from_millis(900),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Dns);
        assert!(e.message.contains("900ms"), "{}", e.message);
    }

    #[tokio::test]
    async fn literal_lookups_skip_the_resolver() {
        let got = resolve("127.0.0.1", 80).await.unwrap();
        assert_eq!(got, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
    }
}
