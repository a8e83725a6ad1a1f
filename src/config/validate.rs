//! Pass 2: the spanned TOML document → [`Config`], collecting every error.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::DeTable;

use super::blocks;
use super::names::{self, Name, Names};
use super::raw::{Loader, Table};
use super::{
    AgentConfig, BackoffConfig, CheckConfig, Config, ConfigError, ConfigErrors, HeartbeatConfig,
    HistoryConfig, HttpLimits, LoadOptions, MetricsConfig, Shard, Sources, Timing,
};
use crate::check::Mode;
use crate::check::registry::{self, ParseCx};

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &LoadOptions::default())
}

/// As [`load`], with command-line options (kept in the result for reloads).
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Config, ConfigErrors> {
    let src = read_source(path)?;
    parse_with(path, &src, options)
}

/// The text of the config file at `path`.
fn read_source(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read config: {e}"),
        }])
    })
}

/// As [`load_with`], taking over the parsed checks of `prev` (the running config) whose
/// text did not change, so a reload that edits one check of 100,000 does not parse the
/// other 99,999 again. The result is the same as [`load_with`]'s.
pub fn load_reusing(
    path: &Path,
    options: &LoadOptions,
    prev: &Config,
) -> Result<Config, ConfigErrors> {
    let src = read_source(path)?;
    parse_reusing(path, &src, options, prev)
}

/// Validates `src`, the text of the file at `path`.
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, src, &LoadOptions::default())
}

/// As [`parse`], with command-line options. The web config file (`[agent] web_config`
/// or `--web.config.file`) is read too; its errors carry its own path.
pub fn parse_with(path: &Path, src: &str, options: &LoadOptions) -> Result<Config, ConfigErrors> {
    let layout = blocks::scan(src);
    let mut config = parse_doc(path, src, src, options, None)?;
    // Remember each check's block, when the file's blocks and its checks line up.
    match layout {
        Some(layout) if layout.check_count() == config.checks.len() => {
            remember_blocks(&mut config, &layout.check_hashes(src));
        }
        _ => config.sources = None,
    }
    Ok(config)
}

/// Records the hash of each check's block text in `config`'s sources (one per check).
fn remember_blocks(config: &mut Config, hashes: &[u128]) {
    if let Some(sources) = config.sources.as_mut() {
        for (b, h) in Arc::make_mut(sources).blocks.iter_mut().zip(hashes) {
            b.text = *h;
        }
    }
}

/// As [`parse_with`], taking over `prev`'s parsed checks whose `[[checks]]` block is
/// byte-for-byte unchanged (and whose parse reads nothing else that changed).
///
/// Only what changed goes through the TOML parser: the file's head (every table that is
/// not a check) and the changed blocks. A check is re-parsed whenever its parse could
/// come out differently: it uses `${…}` (a secret may have been rotated), it is a
/// `plugin` (validated by the library) or `exec` (the program must exist) check,
/// `[defaults]`/the plugin directory/`[cluster] replicas` changed, or it names other
/// checks (`depends_on`, `rule`) and the set of names changed. Any error, or anything
/// the block scan does not follow, falls back to [`parse_with`], so error messages and
/// results are exactly those of a full parse.
pub fn parse_reusing(
    path: &Path,
    src: &str,
    options: &LoadOptions,
    prev: &Config,
) -> Result<Config, ConfigErrors> {
    match parse_incremental(path, src, options, prev) {
        Some(c) => Ok(c),
        None => parse_with(path, src, options),
    }
}

/// The previous checks a load takes over: for each `[[checks]]` block of the new file,
/// in order, the index in `prev.checks` of its unchanged twin, or `None` to parse it.
struct Reuse<'p> {
    prev: &'p Config,
    /// `prev`'s sources.
    blocks: &'p [super::Block],
    slots: Vec<Option<usize>>,
    /// Set when the load failed only because the check names changed and some reused
    /// check reads them.
    names_changed: std::cell::Cell<bool>,
}

fn parse_incremental(
    path: &Path,
    src: &str,
    options: &LoadOptions,
    prev: &Config,
) -> Option<Config> {
    let sources = prev.sources.as_ref()?;
    let layout = blocks::scan(src)?;
    let hashes = layout.check_hashes(src);
    let by_hash: blocks::ByHash<usize> = sources
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (b.text, i))
        .collect();
    let mut reread_names = false;
    loop {
        let mut text = String::new();
        let mut slots = Vec::with_capacity(hashes.len());
        let mut k = 0;
        for (piece, r) in &layout.pieces {
            let block = &src[r.clone()];
            match piece {
                blocks::Piece::Head => text.push_str(block),
                blocks::Piece::Check => {
                    // Decided from `Sources` alone: the previous check is not read here.
                    let slot = by_hash.get(&hashes[k]).copied().filter(|&i| {
                        let b = &sources.blocks[i];
                        b.reusable && !(reread_names && b.names_others) && !block.contains("${")
                    });
                    k += 1;
                    if slot.is_none() {
                        text.push_str(block);
                    }
                    slots.push(slot);
                }
            }
        }
        if slots.iter().all(Option::is_none) {
            return None;
        }
        let reuse = Reuse {
            prev,
            blocks: &sources.blocks,
            slots,
            names_changed: std::cell::Cell::new(false),
        };
        match parse_doc(path, src, &text, options, Some(&reuse)) {
            Ok(mut config) => {
                remember_blocks(&mut config, &hashes);
                return Some(config);
            }
            // Checks were added, removed or renamed: parse the ones that read names too.
            Err(_) if reuse.names_changed.get() && !reread_names => reread_names = true,
            Err(_) => return None,
        }
    }
}

/// Whether a check's parse depends only on its own text and the [`Sources`] context.
fn reusable(c: &CheckConfig) -> bool {
    !matches!(c.kind, "plugin" | "exec")
}

/// Whether a check's parse reads the other checks' names.
fn names_others(c: &CheckConfig) -> bool {
    !c.depends_on.is_empty() || c.kind == "rule"
}

/// Parses `doc` (the whole file `src`, or its changed part when `reuse` is given).
fn parse_doc(
    path: &Path,
    src: &str,
    doc: &str,
    options: &LoadOptions,
    reuse: Option<&Reuse<'_>>,
) -> Result<Config, ConfigErrors> {
    // Variables the config reads hold the agent's secrets: child processes never get them.
    crate::secret::protect_env_names(crate::secret::env_refs(src));
    let cx = Loader::new(path, doc);
    let doc = match DeTable::parse(doc) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.error(span, format!("TOML syntax: {}", e.message().trim()));
            return Err(cx.diag.finish());
        }
    };
    let root = Table::new(&cx, doc.get_ref(), 0..0);
    let mut config = read_config(&root, path, reuse);
    root.finish();
    let mut errors = if cx.diag.is_clean() && config.is_some() {
        Vec::new()
    } else {
        cx.diag.finish().0
    };
    let web_path = options.web_config.clone().or_else(|| {
        config
            .as_ref()
            .and_then(|c| c.agent.web_config_path.clone())
    });
    if let Some(wp) = web_path {
        match crate::http::web_config::load(&wp) {
            Ok(w) => {
                if let Some(c) = config.as_mut() {
                    c.agent.web = Some(std::sync::Arc::new(w));
                }
            }
            Err(e) => errors.extend(e.0),
        }
    }
    match config {
        Some(mut c) if errors.is_empty() => {
            c.options = options.clone();
            Ok(c)
        }
        _ => Err(ConfigErrors(errors)),
    }
}

/// A `[[checks]]` entry: a table to read, or a previous check taken over as it is.
enum Entry<'t, 'a, 's> {
    Parsed(&'t Table<'a, 's>),
    Reused(&'t Arc<CheckConfig>, super::Block),
}

fn read_config(root: &Table<'_, '_>, path: &Path, reuse: Option<&Reuse<'_>>) -> Option<Config> {
    let agent = read_agent(root);
    let history = read_history(root);
    let status_page = super::status_page::read(root);
    let metrics = read_metrics(root);
    let defaults = match root.table("defaults") {
        Some(t) => {
            let timing = read_timing(&t, &Timing::default());
            t.finish();
            timing
        }
        None => Timing::default(),
    };
    let plugin_dir = agent
        .as_ref()
        .map(|a| a.plugin_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./plugins/lib"));

    let cluster = crate::cluster::config::read(root);
    let replicas = cluster.as_ref().map(|c| c.replicas);
    let tables = root.tables("checks");
    let entries: Vec<Entry<'_, '_, '_>> = match reuse {
        None => tables.iter().map(Entry::Parsed).collect(),
        Some(r) => {
            let mut parsed = tables.iter();
            let entries: Option<Vec<_>> = r
                .slots
                .iter()
                .map(|s| match s {
                    Some(i) => Some(Entry::Reused(&r.prev.checks[*i], r.blocks[*i])),
                    None => parsed.next().map(Entry::Parsed),
                })
                .collect();
            match entries {
                Some(e) if parsed.next().is_none() => e,
                // The document does not line up with the scan: the caller parses it all.
                _ => {
                    root.error(0..0, "the checks do not line up with the file's blocks");
                    return None;
                }
            }
        }
    };
    // Names first, so rules and depends_on can refer to checks defined later. A taken-over
    // check lends its name and its name's hash: its config is not read (at 100,000
    // checks, reading each is a cache miss).
    let parsed_names: Vec<Option<super::raw::Str>> = entries
        .iter()
        .map(|e| match e {
            Entry::Parsed(t) => t.str("name"),
            Entry::Reused(..) => None,
        })
        .collect();
    let (list, hashes): (Vec<Name<'_>>, Vec<u64>) = entries
        .iter()
        .zip(&parsed_names)
        .map(|(e, n)| match (e, n) {
            (Entry::Reused(c, b), _) => (Name::Reused(c), b.name),
            (Entry::Parsed(_), Some(n)) => (Name::Parsed(&n.value), names::hash(&n.value)),
            (Entry::Parsed(_), None) => (Name::Missing, 0),
        })
        .unzip();
    let known = Names::new(list, hashes.clone());
    let mut checks = Vec::with_capacity(entries.len());
    let mut blocks = Vec::with_capacity(entries.len());
    let mut names_read = false;
    for (i, (e, name)) in entries.iter().zip(&parsed_names).enumerate() {
        let t = match e {
            Entry::Parsed(t) => *t,
            Entry::Reused(c, b) => {
                if known.is_duplicate(i) {
                    root.error(0..0, format!("duplicate check name `{}`", c.name));
                }
                names_read |= b.names_others;
                checks.push(Arc::clone(c));
                blocks.push(*b);
                continue;
            }
        };
        let name = match name {
            Some(n) => {
                if !valid_name(&n.value) {
                    t.error(
                        n.span.clone(),
                        format!(
                            "check name `{}` must match ^[a-z0-9][a-z0-9_.-]{{0,62}}$",
                            n.value
                        ),
                    );
                }
                if known.is_duplicate(i) {
                    t.error(
                        n.span.clone(),
                        format!("duplicate check name `{}`", n.value),
                    );
                }
                n.value.clone()
            }
            None => {
                if !t.has("name") {
                    t.missing("name");
                }
                String::new()
            }
        };
        if let Some(c) = read_check(t, &name, &defaults, &plugin_dir, &known, replicas) {
            blocks.push(super::Block {
                text: 0,
                name: hashes[i],
                reusable: reusable(&c),
                names_others: names_others(&c),
            });
            checks.push(Arc::new(c));
        }
    }
    let sources = Sources {
        blocks,
        context: {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            hash_timing(&defaults, &mut h);
            plugin_dir.hash(&mut h);
            replicas.hash(&mut h);
            h.finish()
        },
        // Of the set, not the order: moving checks around changes nothing they read.
        names: known.set_hash(),
    };
    if let Some(r) = reuse {
        let (context, names) = r
            .prev
            .sources
            .as_deref()
            .map_or((0, 0), |s| (s.context, s.names));
        if context != sources.context {
            root.error(0..0, "reused checks read settings that changed");
            return None;
        }
        if names_read && names != sources.names {
            r.names_changed.set(true);
            root.error(0..0, "reused checks read check names that changed");
            return None;
        }
    }

    if let Some(a) = &agent {
        for c in &a.connectivity {
            if !known.contains(c) {
                root.error(
                    0..0,
                    format!("[agent.connectivity] names unknown check `{c}`"),
                );
            }
        }
    }
    drop(known);
    drop(parsed_names);
    drop(entries);
    for t in tables {
        t.finish();
    }
    let alerting = crate::alert::AlertConfig::parse(root, &checks);
    Some(Config {
        path: path.to_path_buf(),
        agent: agent?,
        history: history?,
        status_page: status_page?,
        metrics: metrics?,
        checks,
        alerting: alerting?,
        cluster,
        options: LoadOptions::default(),
        sources: Some(Arc::new(sources)),
    })
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn read_agent(root: &Table<'_, '_>) -> Option<AgentConfig> {
    let mut agent = AgentConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
        data_dir: PathBuf::from("./lifeline-data"),
        plugin_dir: PathBuf::from("./plugins/lib"),
        api_token: None,
        shard: None,
        connectivity: Vec::new(),
        web_config_path: None,
        web: None,
        public_paths: Vec::new(),
        allowed_origins: Vec::new(),
        allowed_hosts: Vec::new(),
        http: HttpLimits::default(),
        dns_servers: Vec::new(),
    };
    let Some(t) = root.table("agent") else {
        return Some(agent);
    };
    let mut ok = true;
    if let Some(l) = t.str("listen") {
        match l.value.parse::<SocketAddr>() {
            Ok(a) => agent.listen = a,
            Err(_) => {
                ok = false;
                t.error(
                    l.span,
                    format!(
                        "`listen` must be HOST:PORT with an IP address, got `{}`",
                        l.value
                    ),
                );
            }
        }
    }
    if let Some(d) = t.str("data_dir") {
        agent.data_dir = t.loader().base.join(d.value);
    }
    if let Some(d) = t.str("plugin_dir") {
        agent.plugin_dir = t.loader().base.join(d.value);
    }
    agent.api_token = t.secret("api_token");
    if let Some(s) = t.str("shard") {
        let parsed = s.value.split_once('/').and_then(|(i, n)| {
            let (i, n) = (i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?);
            (n >= 1 && (1..=n).contains(&i)).then_some(Shard { index: i, count: n })
        });
        match parsed {
            Some(sh) => agent.shard = Some(sh),
            None => {
                ok = false;
                t.error(s.span, "`shard` must be \"i/n\" with 1 ≤ i ≤ n");
            }
        }
    }
    if let Some(c) = t.table("connectivity") {
        if let Some(list) = c.str_list("checks") {
            agent.connectivity = list.into_iter().map(|s| s.value).collect();
        }
        c.finish();
    }
    for s in t.str_list("dns_servers").unwrap_or_default() {
        match parse_dns_server(&s.value) {
            Some(a) => agent.dns_servers.push(a),
            None => {
                ok = false;
                t.error(
                    s.span,
                    format!(
                        "`dns_servers`: `{}` must be an IP address or IP:PORT",
                        s.value
                    ),
                );
            }
        }
    }
    read_web_keys(&t, &mut agent);
    t.finish();
    ok.then_some(agent)
}

/// A `dns_servers` entry: `IP`, `IP:PORT` or `[v6]:PORT` (port 53 by default).
fn parse_dns_server(s: &str) -> Option<SocketAddr> {
    crate::net::dns::parse_server(s)
}

/// The `[agent]` keys of the agent's own HTTP surface (see `docs/security.md`).
fn read_web_keys(t: &Table<'_, '_>, agent: &mut AgentConfig) {
    if let Some(p) = t.str("web_config") {
        agent.web_config_path = Some(t.loader().base.join(p.value));
    }
    let list = |key: &'static str| t.str_list(key).unwrap_or_default();
    let values = |l: Vec<super::raw::Str>| l.into_iter().map(|s| s.value).collect();
    let public = list("public_paths");
    for p in public.iter().filter(|p| !p.value.starts_with('/')) {
        t.error(
            p.span.clone(),
            format!("`public_paths`: `{}` must start with `/`", p.value),
        );
    }
    agent.public_paths = values(public);
    let origins = list("allowed_origins");
    for o in &origins {
        let ok = o.value == "*"
            || url::Url::parse(&o.value)
                .is_ok_and(|u| u.has_host() && u.path() == "/" && !o.value.ends_with('/'));
        if !ok {
            t.error(
                o.span.clone(),
                format!(
                    "`allowed_origins`: `{}` must be \"*\" or SCHEME://HOST[:PORT] without a path",
                    o.value
                ),
            );
        }
    }
    agent.allowed_origins = values(origins);
    agent.allowed_hosts = values(list("allowed_hosts"));
    let h = &mut agent.http;
    let positive = |key: &'static str, slot: &mut Duration| {
        if let Some(d) = t.duration(key) {
            if d.is_zero() {
                if let Some(v) = t.raw(key) {
                    t.error(v.span(), format!("`{key}` must be greater than 0"));
                }
            } else {
                *slot = d;
            }
        }
    };
    positive("header_timeout", &mut h.header_timeout);
    positive("idle_timeout", &mut h.idle_timeout);
    positive("request_timeout", &mut h.request_timeout);
    positive("write_timeout", &mut h.write_timeout);
    if let Some(n) = t.int("max_connections", 1..=1_000_000) {
        h.max_connections = n as usize;
    }
    if let Some(n) = t.int("max_streams", 0..=1_000_000) {
        h.max_streams = n as usize;
    }
    if let Some(n) = t.int("max_body_bytes", 1..=1 << 30) {
        h.max_body_bytes = n as usize;
    }
}

fn read_history(root: &Table<'_, '_>) -> Option<HistoryConfig> {
    let mut h = HistoryConfig::default();
    let Some(t) = root.table("history") else {
        return Some(h);
    };
    if let Some(d) = t.duration("retention") {
        if d < Duration::from_secs(3600) {
            t.error(t.span(), "`retention` must be at least 1h");
        }
        h.retention = d;
    }
    if let Some(d) = t.duration("sample_every") {
        h.sample_every = d;
    }
    t.finish();
    Some(h)
}

fn read_metrics(root: &Table<'_, '_>) -> Option<MetricsConfig> {
    let mut m = MetricsConfig::default();
    let Some(t) = root.table("metrics") else {
        return Some(m);
    };
    let mut ok = true;
    let mut histogram = |t: &Table<'_, '_>| -> Option<bool> {
        let s = t.str("latency_histogram")?;
        match s.value.as_str() {
            "classic" => Some(true),
            "none" => Some(false),
            other => {
                ok = false;
                t.error(
                    s.span,
                    format!("`latency_histogram` must be \"classic\" or \"none\", not `{other}`"),
                );
                None
            }
        }
    };
    if let Some(v) = histogram(&t) {
        m.latency_histogram = v;
    }
    if let Some(kinds) = t.table("kinds") {
        for k in registry::KINDS {
            if let Some(kt) = kinds.table(k.name) {
                if let Some(v) = histogram(&kt) {
                    m.kinds.insert(k.name, v);
                }
                kt.finish();
            }
        }
        kinds.finish();
    }
    t.finish();
    ok.then_some(m)
}

/// Reads the timing keys of `t` over `base` (defaults, or a check over the defaults).
fn read_timing(t: &Table<'_, '_>, base: &Timing) -> Timing {
    let mut tm = base.clone();
    let positive = |key: &'static str, d: Option<Duration>, slot: &mut Duration| {
        if let Some(d) = d {
            if d.is_zero() {
                if let Some(v) = t.raw(key) {
                    t.error(v.span(), format!("`{key}` must be greater than 0"));
                }
            } else {
                *slot = d;
            }
        }
    };
    positive("interval", t.duration("interval"), &mut tm.interval);
    positive("timeout", t.duration("timeout"), &mut tm.timeout);
    if let Some(n) = t.int("unhealthy_threshold", 1..=1000) {
        tm.unhealthy_threshold = n as u32;
    }
    if let Some(n) = t.int("healthy_threshold", 1..=1000) {
        tm.healthy_threshold = n as u32;
    }
    if let Some(d) = t.duration("degraded_latency") {
        tm.degraded_latency = d;
    }
    if let Some(b) = t.table("backoff") {
        tm.backoff = read_backoff(&b, &tm.backoff);
        b.finish();
    }
    if let Some(h) = t.table("heartbeat") {
        tm.heartbeat = read_heartbeat(&h, &tm.heartbeat);
        h.finish();
    }
    tm
}

fn read_backoff(t: &Table<'_, '_>, base: &BackoffConfig) -> BackoffConfig {
    let mut b = base.clone();
    if let Some(d) = t.duration("base") {
        b.base = d;
    }
    if let Some(d) = t.duration("max") {
        b.max = d;
    }
    if let Some(m) = t.float("multiplier", 1.0..=100.0) {
        b.multiplier = m;
    }
    if let Some(d) = t.duration("jitter") {
        b.jitter = d;
    }
    if let Some(n) = t.int("max_attempts", 0..=1_000_000) {
        b.max_attempts = n as u32;
    }
    if b.base.is_zero() || b.base > b.max {
        t.error(
            t.span(),
            "backoff `base` must be greater than 0 and not greater than `max`",
        );
    }
    b
}

fn read_heartbeat(t: &Table<'_, '_>, base: &HeartbeatConfig) -> HeartbeatConfig {
    let mut h = base.clone();
    if let Some(d) = t.duration("poor_after") {
        h.poor_after = d;
    }
    if let Some(d) = t.duration("stale_after") {
        h.stale_after = d;
    }
    if h.stale_after <= h.poor_after {
        t.error(
            t.span(),
            "heartbeat `stale_after` must be greater than `poor_after`",
        );
    }
    h
}

fn read_check(
    t: &Table<'_, '_>,
    name: &str,
    defaults: &Timing,
    plugin_dir: &Path,
    known: &Names<'_>,
    cluster_replicas: Option<u32>,
) -> Option<CheckConfig> {
    let kind_s = t.req_str("kind");
    let info = match &kind_s {
        Some(k) => match registry::find(&k.value) {
            Some(info) => Some(info),
            None => {
                let names: Vec<&str> = registry::KINDS.iter().map(|k| k.name).collect();
                t.error(
                    k.span.clone(),
                    format!(
                        "unknown check kind `{}`; known kinds: {}",
                        k.value,
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => None,
    };
    let mode = match t.str("mode") {
        None => Mode::Probe,
        Some(m) => match m.value.as_str() {
            "probe" => Mode::Probe,
            "session" => {
                if let Some(info) = info
                    && !info.session
                {
                    t.error(
                        m.span.clone(),
                        format!(
                            "kind `{}` has no session mode; use mode = \"probe\"",
                            info.name
                        ),
                    );
                }
                Mode::Session
            }
            other => {
                t.error(
                    m.span.clone(),
                    format!("`mode` must be \"probe\" or \"session\", got `{other}`"),
                );
                Mode::Probe
            }
        },
    };
    let mut labels = BTreeMap::new();
    if let Some(map) = t.str_map("labels") {
        for (k, v) in map {
            if !valid_label_name(&k) || ["check", "kind", "mode"].contains(&k.as_str()) {
                t.error(
                    v.span.clone(),
                    format!(
                        "label name `{k}` is not a valid Prometheus label name (or is reserved: check, kind, mode)"
                    ),
                );
            }
            labels.insert(k, v.value);
        }
    }
    let weight = t.float("weight", 0.0..=1000.0).unwrap_or(1.0);
    let critical = t.bool("critical").unwrap_or(true);
    let mut depends_on = Vec::new();
    if let Some(list) = t.str_list("depends_on") {
        for d in list {
            if !known.contains(&d.value) {
                t.error(
                    d.span.clone(),
                    format!("`depends_on` names unknown check `{}`", d.value),
                );
            } else if d.value == name {
                t.error(d.span.clone(), "a check cannot depend on itself");
            }
            depends_on.push(d.value);
        }
    }
    let timing = read_timing(t, defaults);
    let placement = crate::cluster::config::placement(t);
    if let Some(default) = cluster_replicas {
        let runners = placement.runners(default);
        if placement.quorum > runners
            && let Some(v) = t.raw("quorum")
        {
            t.error(
                v.span(),
                format!(
                    "`quorum = {}` needs that many runners, but the check has {runners} (replicas × locations)",
                    placement.quorum
                ),
            );
        }
    }
    if timing.timeout > timing.interval.max(Duration::from_secs(3600)) {
        // Only an absurd timeout is an error; timeout > interval is allowed and simply
        // delays the next attempt (at most one attempt is ever in flight).
        t.error(t.span(), "`timeout` must not exceed 1h");
    }

    let info = info?;
    let cx = ParseCx {
        check: name,
        mode,
        plugin_dir,
        names: known,
        interval: timing.interval,
    };
    let spec = (info.parse)(t, &cx)?;

    // Hashed field by field: formatting these with `{:?}` (and the table as JSON) was
    // the largest part of loading 100,000 checks.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash_contents(&mut h);
    mode.hash(&mut h);
    hash_timing(&timing, &mut h);
    labels.hash(&mut h);
    weight.to_bits().hash(&mut h);
    critical.hash(&mut h);
    depends_on.hash(&mut h);
    placement.hash(&mut h);
    Some(CheckConfig {
        name: name.to_string(),
        kind: info.name,
        mode,
        labels,
        weight,
        critical,
        depends_on,
        placement,
        timing,
        spec,
        fingerprint: h.finish(),
    })
}

/// Feeds every field of `t` to `h` (destructured, so a new field cannot be forgotten).
fn hash_timing(t: &Timing, h: &mut impl Hasher) {
    let Timing {
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        degraded_latency,
        backoff,
        heartbeat,
    } = t;
    let BackoffConfig {
        base,
        max,
        multiplier,
        jitter,
        max_attempts,
    } = backoff;
    let HeartbeatConfig {
        poor_after,
        stale_after,
    } = heartbeat;
    (interval, timeout, unhealthy_threshold, healthy_threshold).hash(h);
    (
        degraded_latency,
        base,
        max,
        multiplier.to_bits(),
        jitter,
        max_attempts,
    )
        .hash(h);
    (poor_after, stale_after).hash(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with a check of each sort the reuse treats differently.
    const MIXED: &str = "[agent]\nlisten = \"127.0.0.1:0\"\n\
        [defaults]\ninterval = \"10s\"\n\
        [[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
        [checks.labels]\nteam = \"x\"\n\
        [[checks]]\nname = \"b\"\nkind = \"http\"\nurl = \"http://127.0.0.1:2/\"\ndepends_on = [\"a\"]\n\
        [[checks]]\nname = \"r\"\nkind = \"rule\"\nexpr = \"up('a') and up('b')\"\n\
        [[checks]]\nname = \"e\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n\
        [[checks]]\nname = \"s\"\nkind = \"tcp\"\naddress = \"${file:ADDR}\"\n\
        [history]\nretention = \"2h\"\n\
        [[checks]]\nname = \"z\"\nkind = \"tcp\"\naddress = \"127.0.0.1:3\"\n";

    /// The names of `new`'s checks that are `prev`'s parsed checks taken over as they were.
    fn taken_over(prev: &Config, new: &Config) -> Vec<String> {
        new.checks
            .iter()
            .filter(|c| prev.checks.iter().any(|p| Arc::ptr_eq(p, c)))
            .map(|c| c.name.clone())
            .collect()
    }

    /// What a load came to, for comparing a reusing load with a full one.
    fn summary(c: &Config) -> Vec<(String, &'static str, u64)> {
        c.checks
            .iter()
            .map(|c| (c.name.clone(), c.kind, c.fingerprint))
            .collect()
    }

    /// `MIXED` with `${file:…}` naming `addr` (a file holding an address).
    fn mixed(addr: &Path) -> String {
        MIXED.replace("ADDR", &addr.display().to_string())
    }

    fn reload(
        prev: &Config,
        src: &str,
    ) -> (Result<Config, ConfigErrors>, Result<Config, ConfigErrors>) {
        let p = Path::new("t.toml");
        (
            parse_reusing(p, src, &LoadOptions::default(), prev),
            parse_with(p, src, &LoadOptions::default()),
        )
    }

    #[test]
    fn a_reload_takes_over_only_the_unchanged_checks() {
        let dir = tempfile::tempdir().unwrap();
        let addr = dir.path().join("addr");
        std::fs::write(&addr, "127.0.0.1:4").unwrap();
        let base = mixed(&addr);
        let prev = parse(Path::new("t.toml"), &base).expect("valid");
        assert_eq!(prev.sources.as_ref().map(|s| s.blocks.len()), Some(6));

        // One check edited: the others are taken over, except what must be parsed again.
        let edited = base.replace("127.0.0.1:3", "127.0.0.1:5");
        let (reused, full) = reload(&prev, &edited);
        let (reused, full) = (reused.expect("valid"), full.expect("valid"));
        assert_eq!(summary(&reused), summary(&full));
        assert_eq!(taken_over(&prev, &reused), ["a", "b", "r"]);
        assert_ne!(reused.checks[5].fingerprint, prev.checks[5].fingerprint);
        assert_eq!(reused.checks[0].labels, full.checks[0].labels);
        // The next reload reuses from this one in turn.
        let (again, _) = reload(&reused, &edited);
        assert_eq!(
            taken_over(&reused, &again.expect("valid")),
            ["a", "b", "r", "z"]
        );

        // Nothing changed in a check, but `[defaults]` did: every check is parsed again.
        let defaults = base.replace("interval = \"10s\"", "interval = \"20s\"");
        let (reused, full) = reload(&prev, &defaults);
        let (reused, full) = (reused.expect("valid"), full.expect("valid"));
        assert_eq!(summary(&reused), summary(&full));
        assert!(taken_over(&prev, &reused).is_empty());

        // A new check changes the names: the ones that read names are parsed again.
        let added =
            format!("{base}[[checks]]\nname = \"y\"\nkind = \"tcp\"\naddress = \"127.0.0.1:6\"\n");
        let (reused, full) = reload(&prev, &added);
        let (reused, full) = (reused.expect("valid"), full.expect("valid"));
        assert_eq!(summary(&reused), summary(&full));
        assert_eq!(taken_over(&prev, &reused), ["a", "z"]);
        assert_eq!(reused.checks.len(), 7);

        // Checks moved around: taken over all the same, in the new order.
        let z = "[[checks]]\nname = \"z\"\nkind = \"tcp\"\naddress = \"127.0.0.1:3\"\n";
        let moved = base.replace(z, "").replace(
            "[[checks]]\nname = \"b\"",
            &format!("{z}[[checks]]\nname = \"b\""),
        );
        let (reused, full) = reload(&prev, &moved);
        let (reused, full) = (reused.expect("valid"), full.expect("valid"));
        assert_eq!(summary(&reused), summary(&full));
        assert_eq!(reused.checks[1].name, "z");
        assert_eq!(taken_over(&prev, &reused), ["a", "z", "b", "r"]);

        // A `${file:…}` that now reads something else: the same text, a new check.
        std::fs::write(&addr, "127.0.0.1:7").unwrap();
        let (reused, full) = reload(&prev, &base);
        let (reused, full) = (reused.expect("valid"), full.expect("valid"));
        assert_eq!(summary(&reused), summary(&full));
        assert_ne!(reused.checks[4].fingerprint, prev.checks[4].fingerprint);
        assert_eq!(taken_over(&prev, &reused), ["a", "b", "r", "z"]);
    }

    #[test]
    fn a_reusing_load_reports_errors_as_a_full_load_does() {
        let src = MIXED.replace("${file:ADDR}", "127.0.0.1:4");
        let prev = parse(Path::new("t.toml"), &src).expect("valid");
        for bad in [
            // A new check with a taken-over check's name.
            format!("{src}[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"127.0.0.1:6\"\n"),
            // The rule's and depends_on's check renamed away.
            src.replace("name = \"a\"", "name = \"a2\""),
            // A syntax error in the head, and in a changed block.
            src.replace("[agent]", "[agent"),
            src.replace("127.0.0.1:3\"", "127.0.0.1:3"),
            // An unknown key in a changed block.
            src.replace(
                "address = \"127.0.0.1:3\"",
                "address = \"127.0.0.1:3\"\nadress = 1",
            ),
        ] {
            let (reused, full) = reload(&prev, &bad);
            let (reused, full) = (reused.expect_err("invalid"), full.expect_err("invalid"));
            assert_eq!(reused.to_string(), full.to_string(), "{bad}");
        }
    }

    #[test]
    fn names_follow_the_rule() {
        assert!(valid_name("pbx-ws.eu_1"));
        assert!(!valid_name("Pbx"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn fingerprint_follows_every_value_and_not_key_order() {
        // Reload keeps a check's supervisor exactly when its fingerprint is unchanged.
        let fp = |src: &str| parse(Path::new("t.toml"), src).expect("valid").checks[0].fingerprint;
        let base = "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\ninterval = \"10s\"\n";
        let reordered = "[[checks]]\nkind = \"tcp\"\ninterval = \"10s\"\naddress = \"127.0.0.1:1\"\nname = \"a\"\n";
        assert_eq!(fp(base), fp(base));
        assert_eq!(fp(base), fp(reordered));
        assert_ne!(fp(base), fp(&base.replace("10s", "7s")));
        assert_ne!(fp(base), fp(&base.replace(":1\"", ":2\"")));
        assert_ne!(
            fp(base),
            fp(&format!("{base}labels = {{ team = \"x\" }}\n"))
        );
        assert_ne!(fp(base), fp(&format!("{base}weight = 2.5\n")));
        assert_ne!(fp(base), fp(&format!("{base}critical = false\n")));
        assert_ne!(
            fp(&format!("{base}unhealthy_threshold = 2\n")),
            fp(&format!("{base}unhealthy_threshold = 3\n"))
        );
        // Inherited timing counts too.
        assert_ne!(
            fp(base),
            fp(&format!("[defaults]\ntimeout = \"1s\"\n{base}"))
        );
        assert_ne!(
            fp(&format!("[defaults.backoff]\nmultiplier = 2.0\n{base}")),
            fp(&format!("[defaults.backoff]\nmultiplier = 3.0\n{base}"))
        );
    }

    #[test]
    fn names_are_checked_by_lookup_with_every_error_kept() {
        // Many checks: duplicates and unknown `depends_on` names still each get an error.
        let mut src = String::new();
        for i in 0..2000 {
            src.push_str(&format!(
                "[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n"
            ));
        }
        src.push_str("[[checks]]\nname = \"c5\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n");
        src.push_str("depends_on = [\"c1999\", \"nope\"]\n");
        let e = parse(Path::new("t.toml"), &src)
            .expect_err("invalid")
            .to_string();
        assert!(
            e.contains("t.toml:8002:8: duplicate check name `c5`"),
            "{e}"
        );
        assert!(e.contains("`depends_on` names unknown check `nope`"), "{e}");
        assert!(!e.contains("c1999"), "{e}");
    }

    #[test]
    fn shard_split_is_total_and_disjoint() {
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        for n in 0..200 {
            let name = format!("check-{n}");
            assert_eq!(shards.iter().filter(|s| s.owns(&name)).count(), 1);
        }
    }
}
