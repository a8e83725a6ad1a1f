//! The alerting gate of a cluster member ([`crate::alert::gate::Gate`]).
//!
//! Pages for a check go out only from its notifier of record. Before a page is sent the
//! member reads the delivery record (`ledger/<route>/<check>/<notifier>`) and the claim
//! beside it, drops what receivers were already told (a firing they know of and whose
//! repeat is not due, a resolved of a firing they never got), and claims the rest in one
//! transaction that also requires its own lease to be live. A member whose lease expired
//! (paused, partitioned) fails that transaction and sends nothing. The claim is under
//! the sender's lease, so a sender that dies mid-send frees it with its lease; the record
//! is written after delivery, without a lease, so the next notifier of record knows what
//! was sent, under which `dedupe_key` (its resolved reuses the key receivers know).
//! Alertmanager is posted to by every runner (it dedupes by itself); only fencing
//! applies to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::etcd::{Cmp, Compare, Etcd, EtcdError, Kv, Op, Txn};
use super::{Cluster, Keys};
use crate::alert::gate::{Gate, GateVerdict};
use crate::alert::outbox::SavedAlert;
use crate::alert::{AlertItem, NoteStatus, Notification};

/// How long to wait before asking again while fenced or while another member sends.
const FENCED_WAIT: Duration = Duration::from_millis(500);
const BUSY_WAIT: Duration = Duration::from_millis(250);

/// What receivers of one notifier were last told about one (route, check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `firing` or `resolved`.
    pub status: String,
    /// The key receivers know the alert by.
    pub dedupe_key: String,
    /// When the check started failing, Unix ms.
    pub started_ms: i64,
    /// When it was sent, Unix ms.
    pub last_sent_ms: i64,
    /// Who sent it.
    pub member: String,
}

impl LedgerEntry {
    fn firing(&self) -> bool {
        self.status == NoteStatus::Firing.as_str()
    }
}

/// A claim: `member` is sending `status` now.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    member: String,
    status: String,
}

/// The firing alerts receivers were told about, per check `want` picks: what a member
/// that takes a check over adopts (one per route; the latest send wins).
pub(super) async fn told(
    etcd: &Etcd,
    keys: &Keys,
    want: &HashSet<String>,
) -> Result<HashMap<String, Vec<SavedAlert>>, EtcdError> {
    let (kvs, _) = etcd.range_prefix(&keys.ledgers()).await?;
    let mut best: BTreeMap<(String, String), LedgerEntry> = BTreeMap::new();
    for kv in kvs {
        let Some((route, check, _notifier)) = keys.parse_ledger(&kv.key) else {
            continue;
        };
        if !want.contains(&check) {
            continue;
        }
        let Ok(e) = serde_json::from_slice::<LedgerEntry>(&kv.value) else {
            continue;
        };
        if !e.firing() {
            continue;
        }
        let slot = best.entry((route, check));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if e.last_sent_ms > o.get().last_sent_ms {
                    o.insert(e);
                }
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(e);
            }
        }
    }
    let mut out: HashMap<String, Vec<SavedAlert>> = HashMap::new();
    for ((route, check), e) in best {
        out.entry(check.clone()).or_default().push(SavedAlert {
            route,
            check,
            dedupe_key: e.dedupe_key,
            started_ms: e.started_ms,
            last_sent_ms: e.last_sent_ms,
        });
    }
    Ok(out)
}

fn entry_of(kv: Option<&Kv>) -> (Option<LedgerEntry>, i64) {
    match kv {
        Some(kv) => (serde_json::from_slice(&kv.value).ok(), kv.mod_revision),
        None => (None, 0),
    }
}

impl Cluster {
    async fn decide(&self, notifier: &str, note: &Notification) -> GateVerdict {
        let mine: Vec<&AlertItem> = note
            .alerts
            .iter()
            .filter(|a| self.assignment.read().notifier.contains(&a.check))
            .collect();
        if mine.is_empty() {
            return GateVerdict::Skip("another member is the notifier of record".into());
        }
        let ledger_keys: Vec<String> = mine
            .iter()
            .map(|a| self.keys.ledger(&note.route, &a.check, notifier))
            .collect();
        let claim_keys: Vec<String> = mine
            .iter()
            .map(|a| self.keys.claim(&note.route, &a.check, notifier))
            .collect();
        let mut success = Vec::new();
        for (l, c) in ledger_keys.iter().zip(&claim_keys) {
            success.push(Op::Get { key: l.clone() });
            success.push(Op::Get { key: c.clone() });
        }
        let reads = Txn {
            compare: Vec::new(),
            success,
            failure: Vec::new(),
        };
        let got = match self.etcd.txn(&reads).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the delivery record; waiting");
                return GateVerdict::Wait(FENCED_WAIT);
            }
        };
        let lease = self.lease.load(Ordering::Acquire);
        let now = super::now_ms();
        let repeat = self.config.read().repeat.get(&note.route).copied();
        let mut keep: Vec<(usize, Option<LedgerEntry>, i64)> = Vec::new();
        for i in 0..mine.len() {
            let ledger = got.gets.get(2 * i).and_then(|v| v.first());
            let claim = got.gets.get(2 * i + 1).and_then(|v| v.first());
            if let Some(c) = claim {
                let ours = c.lease == lease
                    && serde_json::from_slice::<Claim>(&c.value)
                        .is_ok_and(|c| c.member == self.cfg.member);
                if !ours {
                    return GateVerdict::Wait(BUSY_WAIT);
                }
            }
            let (entry, rev) = entry_of(ledger);
            let told_firing = entry.as_ref().is_some_and(LedgerEntry::firing);
            let needed = match note.status {
                NoteStatus::Firing => {
                    !told_firing
                        || repeat.is_some_and(|r| {
                            entry.as_ref().is_some_and(|e| {
                                e.last_sent_ms + r.as_millis() as i64 <= now + 1000
                            })
                        })
                }
                NoteStatus::Resolved => told_firing,
                NoteStatus::Flapping => true,
            };
            if needed {
                keep.push((i, entry, rev));
            }
        }
        if keep.is_empty() {
            return GateVerdict::Skip("receivers were already told".into());
        }
        if lease == 0 {
            return GateVerdict::Wait(FENCED_WAIT);
        }
        let mut compare = vec![Compare::Lease {
            key: self.keys.member(&self.cfg.member),
            op: Cmp::Equal,
            value: lease,
        }];
        let mut success = Vec::new();
        for (i, _, rev) in &keep {
            compare.push(Compare::ModRevision {
                key: ledger_keys[*i].clone(),
                op: Cmp::Equal,
                value: *rev,
            });
            compare.push(Compare::Version {
                key: claim_keys[*i].clone(),
                op: Cmp::Equal,
                value: 0,
            });
            let claim = Claim {
                member: self.cfg.member.clone(),
                status: note.status.as_str().to_string(),
            };
            success.push(Op::Put {
                key: claim_keys[*i].clone(),
                value: serde_json::to_vec(&claim).unwrap_or_default(),
                lease: Some(lease),
            });
        }
        let claim = Txn {
            compare,
            success,
            failure: Vec::new(),
        };
        match self.etcd.txn(&claim).await {
            Ok(r) if r.succeeded => {}
            Ok(_) => {
                // Our lease is gone, or someone else claimed or recorded meanwhile.
                return GateVerdict::Wait(BUSY_WAIT);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot claim the notification; waiting");
                return GateVerdict::Wait(FENCED_WAIT);
            }
        }
        // Receivers know a firing alert by the key they got: its repeat and resolved
        // carry it, whoever made them.
        let mut by_key: BTreeMap<String, Vec<AlertItem>> = BTreeMap::new();
        for (i, entry, _) in keep {
            let a = mine[i];
            let key = match (&entry, note.status) {
                (Some(e), NoteStatus::Firing | NoteStatus::Resolved) if e.firing() => {
                    e.dedupe_key.clone()
                }
                _ => note.dedupe_key.clone(),
            };
            by_key.entry(key).or_default().push(a.clone());
        }
        GateVerdict::Send(
            by_key
                .into_iter()
                .map(|(k, alerts)| {
                    let mut n = note.clone();
                    n.dedupe_key = k;
                    n.alerts = alerts;
                    n
                })
                .collect(),
        )
    }

    async fn record(&self, notifier: &str, sent: &[Notification], delivered: bool) {
        let now = super::now_ms();
        let mut ops = Vec::new();
        for n in sent {
            for a in &n.alerts {
                ops.push(Op::Delete {
                    key: self.keys.claim(&n.route, &a.check, notifier),
                });
                if !delivered || n.status == NoteStatus::Flapping {
                    continue;
                }
                let started_ms = crate::time::parse_rfc3339(&a.started_at)
                    .map(crate::time::unix_ms)
                    .unwrap_or(now);
                let e = LedgerEntry {
                    status: n.status.as_str().to_string(),
                    dedupe_key: n.dedupe_key.clone(),
                    started_ms,
                    last_sent_ms: now,
                    member: self.cfg.member.clone(),
                };
                ops.push(Op::Put {
                    key: self.keys.ledger(&n.route, &a.check, notifier),
                    value: serde_json::to_vec(&e).unwrap_or_default(),
                    lease: None,
                });
            }
        }
        for chunk in ops.chunks(100) {
            let t = Txn {
                compare: Vec::new(),
                success: chunk.to_vec(),
                failure: Vec::new(),
            };
            // A record that cannot be written leaves the claim to expire with the lease;
            // the next notifier of record then sends again (at least once, same key).
            for attempt in 0..3 {
                match self.etcd.txn(&t).await {
                    Ok(_) => break,
                    Err(e) if attempt == 2 => {
                        tracing::warn!(error = %e, notifier, "delivered, but cannot record it in the cluster; a failover may send it again")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }
}

impl Gate for Cluster {
    fn pages(&self, check: &str) -> bool {
        self.assignment.read().notifier.contains(check)
    }

    fn confirmed(&self, check: &str) -> bool {
        self.quorum_met(check)
    }

    fn before<'a>(
        &'a self,
        notifier: &'a str,
        alertmanager: bool,
        note: &'a Notification,
    ) -> BoxFuture<'a, GateVerdict> {
        Box::pin(async move {
            if !self.connected() {
                return GateVerdict::Wait(FENCED_WAIT);
            }
            if alertmanager || note.offline {
                return GateVerdict::Send(vec![note.clone()]);
            }
            self.decide(notifier, note).await
        })
    }

    fn after<'a>(
        &'a self,
        notifier: &'a str,
        alertmanager: bool,
        sent: &'a [Notification],
        delivered: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if alertmanager || sent.iter().all(|n| n.offline) {
                return;
            }
            self.record(notifier, sent, delivered).await;
        })
    }
}
