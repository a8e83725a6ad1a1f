//! What `GET /api/v1/cluster` and `lifeline cluster status` print: the members, this
//! member's role, and per check its runners, notifier of record and each runner's status.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Keys;
use super::config::ClusterConfig;
use super::etcd::{Etcd, EtcdError};
use super::view::{Assignment, MemberInfo, RunnerStatus, View};
use crate::config::Config;

/// This member's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds its lease and is in the member list: runs its share and notifies.
    Member,
    /// Holds a lease, but the member list does not show it yet.
    Joining,
    /// etcd has not confirmed its lease within `lease_ttl`: checks run, nobody is notified.
    Fenced,
    /// Read from etcd by the command line, not a running member.
    Observer,
}

/// One member in the report.
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Joined (RFC 3339).
    pub since: String,
    /// Lease (hex).
    pub lease: String,
    /// Its HTTP listen address.
    pub listen: String,
}

/// One check in the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Check name.
    pub name: String,
    /// Runners, notifier of record first.
    pub runners: Vec<String>,
    /// The notifier of record (the first live runner).
    pub notifier: Option<String>,
    /// `quorum` (1 when not set).
    pub quorum: u32,
    /// Each runner's published status.
    pub statuses: BTreeMap<String, RunnerStatus>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// This member.
    pub member: String,
    /// Its location.
    pub location: String,
    /// Its role.
    pub role: Role,
    /// Whether it may notify.
    pub connected: bool,
    /// Its lease (hex), if it holds one.
    pub lease: Option<String>,
    /// When it last registered (RFC 3339).
    pub since: Option<String>,
    /// `lease_ttl` in seconds.
    pub lease_ttl_seconds: f64,
    /// `replicas`.
    pub replicas: u32,
    /// The etcd endpoints.
    pub etcd: Vec<String>,
    /// Live members.
    pub members: Vec<MemberReport>,
    /// Checks this member runs.
    pub owned_checks: usize,
    /// Checks it is the notifier of record of.
    pub notifier_of: usize,
    /// Every check.
    pub checks: Vec<CheckReport>,
}

impl Report {
    /// The report of `view` and `a` for the member `cfg` describes (`quorum`: each
    /// check's).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        cfg: &ClusterConfig,
        view: &View,
        a: &Assignment,
        role: Role,
        lease: i64,
        joined_ms: i64,
        quorum: &dyn Fn(&str) -> u32,
    ) -> Self {
        let rfc = |ms: i64| crate::time::rfc3339(crate::time::from_unix_ms(ms));
        let members = view
            .members
            .values()
            .map(|m: &MemberInfo| MemberReport {
                name: m.name.clone(),
                location: m.location.clone(),
                since: rfc(m.since_ms),
                lease: m.lease.clone(),
                listen: m.listen.clone(),
            })
            .collect();
        let checks = a
            .runners
            .iter()
            .map(|(name, rs)| CheckReport {
                name: name.clone(),
                runners: rs.clone(),
                notifier: rs.first().cloned(),
                quorum: quorum(name),
                statuses: view.runners.get(name).cloned().unwrap_or_default(),
            })
            .collect();
        Self {
            member: cfg.member.clone(),
            location: cfg.location.clone(),
            role,
            connected: role == Role::Member || role == Role::Joining,
            lease: (lease != 0).then(|| format!("{lease:x}")),
            since: (joined_ms != 0).then(|| rfc(joined_ms)),
            lease_ttl_seconds: cfg.lease_ttl.as_secs_f64(),
            replicas: cfg.replicas,
            etcd: cfg.etcd.clone(),
            members,
            owned_checks: a.owned.len(),
            notifier_of: a.notifier.len(),
            checks,
        }
    }
}

/// Reads the cluster as etcd has it now (no lease, nothing written): the command line's
/// `lifeline cluster status`.
pub async fn from_etcd(config: &Config) -> Result<Report, EtcdError> {
    let cfg = config
        .cluster
        .as_ref()
        .ok_or_else(|| EtcdError::Config("the config has no [cluster] section".into()))?;
    let etcd = Etcd::new(&super::options(cfg))?;
    let keys = Keys::new(&cfg.prefix);
    let mut view = View::default();
    let (members, _) = etcd.range_prefix(&keys.members()).await?;
    for kv in members {
        if let Ok(m) = serde_json::from_slice::<MemberInfo>(&kv.value) {
            view.members.insert(m.name.clone(), m);
        }
    }
    let (runners, _) = etcd.range_prefix(&keys.runners()).await?;
    for kv in runners {
        if let (Some((c, m)), Ok(s)) = (
            keys.parse_runner(&kv.key),
            serde_json::from_slice::<RunnerStatus>(&kv.value),
        ) {
            view.runners.entry(c).or_default().insert(m, s);
        }
    }
    let a = Assignment::compute(
        &view,
        config
            .checks
            .iter()
            .map(|k| (k.name.as_str(), &k.placement)),
        cfg.replicas,
        &cfg.member,
    );
    let quorum = |c: &str| {
        config
            .checks
            .iter()
            .find(|k| k.name == c)
            .map_or(1, |k| k.placement.quorum)
    };
    Ok(Report::build(cfg, &view, &a, Role::Observer, 0, 0, &quorum))
}
