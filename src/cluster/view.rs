//! What a member knows of the cluster: the live members, the statuses runners publish,
//! and the assignment computed from them (pure data; [`super::Cluster`] keeps it current).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::config::Placement;
use super::rendezvous::{self, Candidate};

/// A member's registration (`<prefix>members/<name>`, under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Member name.
    pub name: String,
    /// Where it probes from.
    pub location: String,
    /// When it (re)joined, Unix ms.
    pub since_ms: i64,
    /// Its lease (hex, as etcdctl prints it).
    pub lease: String,
    /// Its HTTP listen address (informational).
    #[serde(default)]
    pub listen: String,
}

/// What one runner says about one check (`<prefix>runners/<check>/<member>`, under the
/// runner's lease, so it disappears with the runner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerStatus {
    /// Status (SPEC §4 name).
    pub status: String,
    /// The runner's location.
    pub location: String,
    /// Since when, Unix ms.
    pub since_ms: Option<i64>,
    /// When it was published, Unix ms.
    pub at_ms: i64,
    /// Failures in a row.
    pub failures: u32,
    /// Last failure kind.
    #[serde(default)]
    pub error_kind: Option<String>,
}

impl RunnerStatus {
    /// Whether the runner sees the check failing.
    pub fn failing(&self) -> bool {
        crate::health::Status::parse(&self.status).is_some_and(|s| s.is_failing())
    }
}

/// A check's last state as its notifier of record published it (`<prefix>state/<check>`,
/// no lease: the next runner starts from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedState {
    /// Status.
    pub status: String,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Last status change, Unix ms.
    pub since_ms: Option<i64>,
    /// Last success, Unix ms.
    pub last_success_ms: Option<i64>,
    /// Last failure kind.
    pub error_kind: Option<String>,
    /// Message of the last result.
    pub message: String,
    /// Who published it.
    pub member: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// The live members and the runner statuses, as the watches last saw them.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// Live members by name.
    pub members: BTreeMap<String, MemberInfo>,
    /// Runner statuses: check → member → status.
    pub runners: HashMap<String, BTreeMap<String, RunnerStatus>>,
}

impl View {
    /// The members as rendezvous candidates.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.members
            .values()
            .map(|m| Candidate {
                name: m.name.clone(),
                location: m.location.clone(),
            })
            .collect()
    }
}

/// Who runs what, computed from a [`View`] and the checks' placements.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Assignment {
    /// Check → its runners, notifier of record first.
    pub runners: BTreeMap<String, Vec<String>>,
    /// Checks this member runs.
    pub owned: HashSet<String>,
    /// Checks this member is the notifier of record of.
    pub notifier: HashSet<String>,
}

impl Assignment {
    /// Assigns every check of `checks` (name, placement) over `view`'s members for `me`.
    pub fn compute<'a>(
        view: &View,
        checks: impl IntoIterator<Item = (&'a str, &'a Placement)>,
        default_replicas: u32,
        me: &str,
    ) -> Self {
        let cands = view.candidates();
        let mut a = Self::default();
        for (name, p) in checks {
            let rs: Vec<String> = rendezvous::runners(name, p, default_replicas, &cands)
                .into_iter()
                .map(|c| c.name.clone())
                .collect();
            if rs.iter().any(|r| r == me) {
                a.owned.insert(name.to_string());
            }
            if rs.first().is_some_and(|r| r == me) {
                a.notifier.insert(name.to_string());
            }
            a.runners.insert(name.to_string(), rs);
        }
        a
    }
}
