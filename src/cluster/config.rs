//! `[cluster]` and the per-check placement keys (`replicas`, `locations`, `quorum`).
//!
//! Read from the raw config like every component's section; nothing here opens a socket.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Secret;
use crate::config::raw::Table;

/// `[cluster]`: membership in an etcd-coordinated group of agents.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `etcd`: client URLs of the etcd members (`http://` or `https://`).
    pub etcd: Vec<String>,
    /// `member`: this agent's unique name (default: the host name).
    pub member: String,
    /// `location`: where this agent probes from (default `"default"`).
    pub location: String,
    /// `replicas`: live members that run each check, per location (default 1).
    pub replicas: u32,
    /// `lease_ttl`: the membership lease; failover happens within about this (default 10s).
    pub lease_ttl: Duration,
    /// `prefix`: every key lives under it (default `/lifeline/`, always ends with `/`).
    pub prefix: String,
    /// `username` for etcd authentication.
    pub username: Option<String>,
    /// `password` for etcd authentication.
    pub password: Option<Secret<String>>,
    /// `ca_file`: PEM CA bundle for `https://` endpoints (besides the OS roots).
    pub ca_file: Option<PathBuf>,
    /// `cert_file`: client certificate (PEM) for etcd's client-cert auth.
    pub cert_file: Option<PathBuf>,
    /// `key_file`: its private key (PEM).
    pub key_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// How long a lease request (grant, keep-alive, the member key) may take: a third of
    /// the lease, at most 5 s, so a keep-alive that hangs still leaves time for the next
    /// before the lease expires.
    pub fn request_timeout(&self) -> Duration {
        (self.lease_ttl / 3).clamp(Duration::from_millis(300), Duration::from_secs(5))
    }

    /// How long any other etcd request may take (listings, publishing, the paging gate):
    /// `lease_ttl` within 2–5 s. A busy etcd answers late rather than never, and a
    /// rebalance that gives up only retries the same reads.
    pub fn call_timeout(&self) -> Duration {
        self.lease_ttl
            .clamp(Duration::from_secs(2), Duration::from_secs(5))
    }
}

/// Where one check runs in a cluster (ignored without `[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Placement {
    /// `replicas`: runners per location; `None` takes `[cluster] replicas`.
    pub replicas: Option<u32>,
    /// `locations`: run from each of these; empty means any member, wherever it is.
    pub locations: Vec<String>,
    /// `quorum`: page only when at least this many runners see the check failing.
    pub quorum: u32,
}

impl Placement {
    /// The default: `[cluster] replicas`, any location, quorum 1.
    pub fn new() -> Self {
        Self {
            replicas: None,
            locations: Vec::new(),
            quorum: 1,
        }
    }

    /// How many members run the check when every location has enough of them.
    pub fn runners(&self, default_replicas: u32) -> u32 {
        let r = self.replicas.unwrap_or(default_replicas);
        r * (self.locations.len().max(1) as u32)
    }
}

/// Names of members and locations: what etcd keys and metric labels can carry.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// The host name (`/proc/sys/kernel/hostname`), the default member name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| valid_name(s))
        .unwrap_or_else(|| "lifeline".to_string())
}

/// Reads `[cluster]`; `None` when absent. Errors are reported on `root`.
pub fn read(root: &Table<'_, '_>) -> Option<ClusterConfig> {
    let t = root.table("cluster")?;
    let mut c = ClusterConfig {
        etcd: Vec::new(),
        member: hostname(),
        location: "default".to_string(),
        replicas: 1,
        lease_ttl: Duration::from_secs(10),
        prefix: "/lifeline/".to_string(),
        username: None,
        password: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
    };
    match t.str_list("etcd") {
        Some(list) if !list.is_empty() => {
            for u in list {
                let ok = url::Url::parse(&u.value)
                    .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host());
                if !ok {
                    t.error(
                        u.span.clone(),
                        format!(
                            "`etcd`: `{}` must be an http:// or https:// URL of an etcd client endpoint",
                            u.value
                        ),
                    );
                }
                c.etcd.push(u.value.trim_end_matches('/').to_string());
            }
        }
        Some(_) => t.error(t.span(), "`etcd` must list at least one endpoint"),
        None => t.missing("etcd"),
    }
    for (key, slot) in [("member", &mut c.member), ("location", &mut c.location)] {
        if let Some(s) = t.str(key) {
            if valid_name(&s.value) {
                *slot = s.value;
            } else {
                t.error(
                    s.span,
                    format!("`{key}` must be 1–63 characters of [A-Za-z0-9_.-]"),
                );
            }
        }
    }
    if let Some(n) = t.int("replicas", 1..=64) {
        c.replicas = n as u32;
    }
    if let Some(d) = t.duration("lease_ttl") {
        if d < Duration::from_secs(1) {
            if let Some(v) = t.raw("lease_ttl") {
                t.error(v.span(), "`lease_ttl` must be at least 1s (etcd's minimum)");
            }
        } else {
            c.lease_ttl = Duration::from_secs(d.as_secs_f64().ceil() as u64);
        }
    }
    if let Some(p) = t.str("prefix") {
        if p.value.is_empty() || p.value.contains('\0') {
            t.error(p.span, "`prefix` must be a non-empty etcd key prefix");
        } else {
            c.prefix = if p.value.ends_with('/') {
                p.value
            } else {
                format!("{}/", p.value)
            };
        }
    }
    c.username = t.str("username").map(|s| s.value);
    c.password = t.secret("password");
    if c.password.is_some() != c.username.is_some() {
        t.error(t.span(), "`username` and `password` go together");
    }
    let file = |key: &'static str| t.str(key).map(|s| t.loader().base.join(s.value));
    c.ca_file = file("ca_file");
    c.cert_file = file("cert_file");
    c.key_file = file("key_file");
    if c.cert_file.is_some() != c.key_file.is_some() {
        t.error(t.span(), "`cert_file` and `key_file` go together");
    }
    t.finish();
    Some(c)
}

/// Reads a check's `replicas`, `locations` and `quorum`.
pub fn placement(t: &Table<'_, '_>) -> Placement {
    let mut p = Placement::new();
    if let Some(n) = t.int("replicas", 1..=64) {
        p.replicas = Some(n as u32);
    }
    if let Some(list) = t.str_list("locations") {
        for l in list {
            if !valid_name(&l.value) {
                t.error(
                    l.span.clone(),
                    format!("`locations`: `{}` is not a location name", l.value),
                );
            } else if p.locations.contains(&l.value) {
                t.error(
                    l.span.clone(),
                    format!("`locations`: `{}` is listed twice", l.value),
                );
            } else {
                p.locations.push(l.value);
            }
        }
    }
    if let Some(n) = t.int("quorum", 1..=64) {
        p.quorum = n as u32;
    }
    p
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(src: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::parse(Path::new("c.toml"), src)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn cluster_section_defaults_and_per_check_placement() {
        let c = parse(
            "[cluster]\netcd = [\"http://10.0.0.5:2379/\"]\nmember = \"agent-eu-1\"\nlocation = \"eu-west\"\n\
             [[checks]]\nname = \"pbx\"\nkind = \"tcp\"\naddress = \"127.0.0.1:5060\"\n\
             replicas = 2\nlocations = [\"eu-west\", \"us-east\"]\nquorum = 3\n",
        )
        .expect("valid");
        let cl = c.cluster.expect("cluster");
        assert_eq!(cl.etcd, ["http://10.0.0.5:2379"]);
        assert_eq!(cl.lease_ttl, std::time::Duration::from_secs(10));
        assert_eq!(cl.prefix, "/lifeline/");
        assert_eq!(cl.replicas, 1);
        let p = &c.checks[0].placement;
        assert_eq!((p.replicas, p.quorum, p.locations.len()), (Some(2), 3, 2));
    }

    #[test]
    fn cluster_errors_point_at_the_key() {
        let errs = parse(
            "[cluster]\netcd = [\"ftp://x\"]\nmember = \"a b\"\nlease_ttl = \"200ms\"\nusername = \"u\"\n\
             [[checks]]\nname = \"pbx\"\nkind = \"tcp\"\naddress = \"127.0.0.1:5060\"\nquorum = 2\n",
        )
        .expect_err("invalid");
        let has = |prefix: &str, text: &str| {
            errs.iter()
                .any(|e| e.starts_with(prefix) && e.contains(text))
        };
        assert!(has("c.toml:2:9:", "http:// or https://"), "{errs:#?}");
        assert!(has("c.toml:3:10:", "`member`"), "{errs:#?}");
        assert!(has("c.toml:4:13:", "at least 1s"), "{errs:#?}");
        assert!(
            has("c.toml:", "`username` and `password` go together"),
            "{errs:#?}"
        );
        assert!(has("c.toml:10:10:", "needs that many runners"), "{errs:#?}");
    }
}
