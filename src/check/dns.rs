//! `dns` (probe): one query for `query` / `record` (A, AAAA, CNAME, MX, TXT, SRV, NS) to
//! `server` (`IP` or `IP:PORT`; default the name servers of `/etc/resolv.conf`) over
//! `transport` (`udp`, the default, or `tcp`). Healthy when the server answers with at
//! least one record of that type and, if `expect` is set, the answers match it: an array
//! of values that must all be among the answers, or a regex (a string) that at least one
//! answer must match.
//!
//! The query is asked as a fully qualified name (no search list), without `/etc/hosts`
//! and without a cache: every attempt is a fresh question to the server. NXDOMAIN,
//! SERVFAIL and an empty answer are `error_kind = "dns"`, REFUSED is `rejected`, answers
//! that do not match `expect` are `protocol`, a server that does not answer in time is
//! `timeout`. Values are written as in zone files, without the final dot of names:
//! `192.0.2.1`, `mail.example.com`, `10 mail.example.com` (MX), `0 5 5060 sip.example.com`
//! (SRV: priority, weight, port, target); TXT strings are joined.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as ProtoDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Perf, Phases,
};
use crate::config::raw::Table;

/// Record types the kind queries.
pub const RECORDS: [&str; 7] = ["A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS"];

/// Most answers kept in `details.answers`.
const MAX_ANSWERS: usize = 32;

/// Longest answer value kept (a TXT record may be long).
const MAX_VALUE: usize = 512;

/// What the answers must look like.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Every value must be among the answers (compared without case and final dot).
    Values(Vec<String>),
    /// At least one answer must match.
    Regex(regex::Regex),
}

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    /// UDP (hickory falls back to TCP on a truncated answer).
    Udp,
    /// TCP only.
    Tcp,
}

impl DnsTransport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// `dns` settings.
#[derive(Debug, Clone)]
pub struct DnsSpec {
    /// The name asked for, fully qualified.
    pub query: Name,
    /// The record type.
    pub record: RecordType,
    /// The server; `None`: those of `/etc/resolv.conf`.
    pub server: Option<SocketAddr>,
    /// UDP or TCP.
    pub transport: DnsTransport,
    /// What the answers must contain.
    pub expect: Option<Expect>,
}

/// Reads `query`, `record`, `server`, `transport`, `expect`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let query = t.req_str("query").and_then(|q| {
        let text = q.value.trim().trim_end_matches('.');
        match Name::from_utf8(format!("{text}.")) {
            Ok(n) if !text.is_empty() => Some(n),
            _ => {
                t.error(q.span, format!("`query`: `{}` is not a DNS name", q.value));
                None
            }
        }
    });
    let record = match t.str("record") {
        None => Some(RecordType::A),
        Some(r) => {
            let up = r.value.to_ascii_uppercase();
            match RECORDS
                .contains(&up.as_str())
                .then(|| RecordType::from_str(&up))
            {
                Some(Ok(rt)) => Some(rt),
                _ => {
                    t.error(
                        r.span,
                        format!(
                            "`record` must be one of {}, got `{}`",
                            RECORDS.join(", "),
                            r.value
                        ),
                    );
                    None
                }
            }
        }
    };
    let server = match t.str("server") {
        None => Some(None),
        Some(s) => match crate::net::dns::parse_server(&s.value) {
            Some(a) => Some(Some(a)),
            None => {
                t.error(
                    s.span,
                    format!(
                        "`server` must be an IP address or IP:PORT, got `{}`",
                        s.value
                    ),
                );
                None
            }
        },
    };
    let transport = match t.str("transport") {
        None => Some(DnsTransport::Udp),
        Some(s) => match s.value.as_str() {
            "udp" => Some(DnsTransport::Udp),
            "tcp" => Some(DnsTransport::Tcp),
            other => {
                t.error(
                    s.span,
                    format!("`transport` must be \"udp\" or \"tcp\", got `{other}`"),
                );
                None
            }
        },
    };
    let expect = read_expect(t);
    Some(Arc::new(DnsSpec {
        query: query?,
        record: record?,
        server: server?,
        transport: transport?,
        expect: expect?,
    }))
}

/// `expect`: an array of values or a regex string.
fn read_expect(t: &Table<'_, '_>) -> Option<Option<Expect>> {
    let Some(v) = t.raw("expect") else {
        return Some(None);
    };
    if matches!(v.get_ref(), toml::de::DeValue::Array(_)) {
        let list = t.str_list("expect")?;
        if list.is_empty() {
            t.error(v.span(), "`expect` must not be an empty array");
            return None;
        }
        return Some(Some(Expect::Values(
            list.into_iter().map(|s| normalize(&s.value)).collect(),
        )));
    }
    match t.regex("expect")? {
        Some(re) => Some(Some(Expect::Regex(re))),
        None => Some(None),
    }
}

/// A value as compared: trimmed, lower case, no final dot.
fn normalize(v: &str) -> String {
    v.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl KindSpec for DnsSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(DnsCheck { spec: self.clone() }))
    }
}

struct DnsCheck {
    spec: DnsSpec,
}

/// `name` as zone files write it, without the final dot.
fn name_text(n: &Name) -> String {
    let s = n.to_string();
    s.strip_suffix('.').unwrap_or(&s).to_string()
}

/// The text of one answer (see the module docs), `None` for other record types.
fn value(data: &RData) -> Option<String> {
    let v = match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(c) => name_text(&c.0),
        RData::NS(n) => name_text(&n.0),
        RData::MX(mx) => format!("{} {}", mx.preference, name_text(&mx.exchange)),
        RData::SRV(s) => format!(
            "{} {} {} {}",
            s.priority,
            s.weight,
            s.port,
            name_text(&s.target)
        ),
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|b| String::from_utf8_lossy(b))
            .collect::<String>(),
        _ => return None,
    };
    Some(crate::check::clip(&v, MAX_VALUE).into_owned())
}

/// A resolver for this check: the configured server (or resolv.conf's), one transport,
/// no cache, no hosts file, no search list, one try inside `budget`.
async fn resolver(spec: &DnsSpec, budget: Duration) -> Result<TokioResolver, CheckError> {
    let servers: Vec<SocketAddr> = match spec.server {
        Some(s) => vec![s],
        None => system_servers().await?,
    };
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut ns = match spec.transport {
                DnsTransport::Udp => NameServerConfig::udp(s.ip()),
                DnsTransport::Tcp => NameServerConfig::tcp(s.ip()),
            };
            for c in &mut ns.connections {
                c.port = s.port();
            }
            ns
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.attempts = 1;
    opts.timeout = budget;
    opts.try_tcp_on_error = false;
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| CheckError::new(ErrorKind::Internal, format!("resolver: {e}")))
}

/// The name servers of `/etc/resolv.conf` (read on the blocking pool), port 53.
async fn system_servers() -> Result<Vec<SocketAddr>, CheckError> {
    let read = tokio::task::spawn_blocking(|| {
        let bytes =
            std::fs::read("/etc/resolv.conf").map_err(|e| format!("/etc/resolv.conf: {e}"))?;
        hickory_resolver::system_conf::parse_resolv_conf(bytes)
            .map_err(|e| format!("/etc/resolv.conf: {e}"))
    })
    .await
    .map_err(|e| CheckError::new(ErrorKind::Internal, e.to_string()))?;
    let (config, _) = read.map_err(|e| CheckError::new(ErrorKind::Dns, e))?;
    let mut ips: Vec<std::net::IpAddr> = config.name_servers().iter().map(|n| n.ip).collect();
    ips.dedup();
    if ips.is_empty() {
        return Err(CheckError::new(
            ErrorKind::Dns,
            "/etc/resolv.conf lists no nameserver (set `server`)",
        ));
    }
    Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect())
}

/// Classifies a failed query.
fn classify(spec: &DnsSpec, budget: Duration, e: &NetError) -> CheckError {
    let q = format!("{} {}", name_text(&spec.query), spec.record);
    match e {
        NetError::Dns(ProtoDnsError::NoRecordsFound(n)) => {
            if n.response_code == ResponseCode::NXDomain {
                CheckError::new(ErrorKind::Dns, format!("{q}: NXDOMAIN (no such name)"))
            } else {
                CheckError::new(ErrorKind::Dns, format!("{q}: no {} records", spec.record))
            }
        }
        NetError::Dns(ProtoDnsError::ResponseCode(ResponseCode::Refused)) => {
            CheckError::new(ErrorKind::Rejected, format!("{q}: REFUSED"))
        }
        NetError::Dns(ProtoDnsError::ResponseCode(c)) => {
            CheckError::new(ErrorKind::Dns, format!("{q}: {}", c.to_str()))
        }
        NetError::Timeout => CheckError::new(
            ErrorKind::Timeout,
            format!(
                "{q}: no answer within {}",
                crate::time::fmt_duration(budget)
            ),
        ),
        NetError::Io(io) => CheckError::io(&q, io),
        other => CheckError::new(ErrorKind::Dns, format!("{q}: {other}")),
    }
}

/// Checks `answers` against `expect`.
fn judge(expect: Option<&Expect>, answers: &[String]) -> Result<(), CheckError> {
    match expect {
        None => Ok(()),
        Some(Expect::Values(want)) => {
            let got: Vec<String> = answers.iter().map(|a| normalize(a)).collect();
            let missing: Vec<&str> = want
                .iter()
                .filter(|w| !got.contains(w))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(CheckError::new(
                    ErrorKind::Protocol,
                    format!("answer {} lacks {}", answers.join(", "), missing.join(", ")),
                ))
            }
        }
        Some(Expect::Regex(re)) => {
            if answers.iter().any(|a| re.is_match(a)) {
                Ok(())
            } else {
                Err(CheckError::new(
                    ErrorKind::Protocol,
                    format!(
                        "no answer matches `{}` (got {})",
                        re.as_str(),
                        answers.join(", ")
                    ),
                ))
            }
        }
    }
}

impl Check for DnsCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let spec = &self.spec;
            // Leave the supervisor room to see the check's own answer.
            let budget = crate::net::deadline::remaining()
                .unwrap_or(at.timeout)
                .mul_f64(0.9);
            let resolver = match resolver(spec, budget).await {
                Ok(r) => r,
                Err(e) => return Outcome::down(e, start.elapsed()),
            };
            let t = Instant::now();
            let r = tokio::time::timeout(budget, resolver.lookup(spec.query.clone(), spec.record))
                .await;
            let took = t.elapsed();
            let phases = Phases {
                exchange: Some(took),
                ..Phases::default()
            };
            let base = |o: Outcome| {
                o.with_phases(phases.clone())
                    .with_detail("record", spec.record.to_string())
                    .with_detail("transport", spec.transport.as_str())
            };
            let lookup = match r {
                Err(_) => {
                    return base(Outcome::down(
                        classify(spec, budget, &NetError::Timeout),
                        start.elapsed(),
                    ));
                }
                Ok(Err(e)) => {
                    return base(Outcome::down(classify(spec, budget, &e), start.elapsed()));
                }
                Ok(Ok(l)) => l,
            };
            let records: Vec<_> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == spec.record)
                .collect();
            let answers: Vec<String> = records.iter().filter_map(|r| value(&r.data)).collect();
            let latency = start.elapsed();
            if answers.is_empty() {
                let e = CheckError::new(
                    ErrorKind::Dns,
                    format!(
                        "{} {}: no {} records",
                        name_text(&spec.query),
                        spec.record,
                        spec.record
                    ),
                );
                return base(Outcome::down(e, latency));
            }
            let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
            let shown: Vec<&String> = answers.iter().take(MAX_ANSWERS).collect();
            let mut o = match judge(spec.expect.as_ref(), &answers) {
                Ok(()) => Outcome::up(latency).with_message(format!(
                    "{} {}: {}",
                    name_text(&spec.query),
                    spec.record,
                    crate::check::clip(&answers.join(", "), 200)
                )),
                Err(e) => Outcome::down(e, latency),
            };
            o = base(o)
                .with_detail("answers", serde_json::json!(shown))
                .with_detail("ttl", ttl);
            o.perfdata.push(Perf {
                label: "answers".into(),
                value: answers.len() as f64,
            });
            o
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_without_case_or_final_dot() {
        let want = Expect::Values(vec![normalize("Mail.Example.COM.")]);
        assert!(judge(Some(&want), &["mail.example.com".into()]).is_ok());
        let e = judge(Some(&want), &["other.example.com".into()]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(
            e.message.contains("lacks mail.example.com"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_regex_needs_one_matching_answer() {
        let re = Expect::Regex(regex::Regex::new(r"^10\.0\.").unwrap());
        assert!(judge(Some(&re), &["192.0.2.1".into(), "10.0.0.7".into()]).is_ok());
        assert!(judge(Some(&re), &["192.0.2.1".into()]).is_err());
    }
}
