//! Secrets: values that must never be printed. `Secret<T>` shows `***` in `Debug` and
//! `Display`; every resolved secret is also registered with [`redact`], which scrubs it
//! from any text (peer error messages, URLs) before that text is logged or served.

use std::fmt;
use std::sync::{Arc, RwLock, Weak};

/// A value that prints as `***`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The real value, for the one place that needs it (a login, a header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl Secret<String> {
    /// Wraps `value` and registers it so that [`redact`] removes it from any text.
    pub fn registered(value: String) -> Self {
        register(&value);
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Values registered for the life of the process (config secrets: their number is bounded
/// by the config) and values leased while something holds them (fetched tokens).
struct Registry {
    /// Permanent values, longest first.
    fixed: Vec<String>,
    /// Leased values: redacted while any `Arc` to them is alive, forgotten afterwards.
    leased: Vec<Weak<Secret<String>>>,
}

static SECRETS: RwLock<Registry> = RwLock::new(Registry {
    fixed: Vec::new(),
    leased: Vec::new(),
});

/// Shortest registered value that is scrubbed from free text.
pub const MIN_REDACTED_LEN: usize = 6;

/// Adds `value` to the set of strings [`redact`] removes, for the life of the process.
/// Values shorter than [`MIN_REDACTED_LEN`] characters are not text-redacted (replacing
/// every `admin` or `x` in every message would shred ordinary text); they still print as
/// `***` wherever they are held as a [`Secret`], and URL passwords are redacted
/// structurally by [`redact_url`]. For values that change at run time (tokens) use
/// [`lease`], which does not grow the set with each new value.
pub fn register(value: &str) {
    if value.chars().count() < MIN_REDACTED_LEN {
        return;
    }
    let mut set = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !set.fixed.iter().any(|s| s == value) {
        set.fixed.push(value.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        set.fixed.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Wraps a value that is redacted from text for exactly as long as the returned `Arc` (or
/// a clone of it) is alive: a refreshed token replaces its predecessor in the set once the
/// last session using the old one lets it go, so the set is bounded by the tokens in use,
/// never by how many were ever fetched — and a token still held is never forgotten.
pub fn lease(value: String) -> Arc<Secret<String>> {
    let shared = Arc::new(Secret(value));
    let mut set = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    // Dead leases are dropped here, so the list never outgrows the live ones (+ this one).
    set.leased.retain(|w| w.strong_count() > 0);
    if shared.0.chars().count() >= MIN_REDACTED_LEN {
        set.leased.push(Arc::downgrade(&shared));
    }
    shared
}

/// How many values are currently registered (permanent + live leases), for tests and
/// diagnostics.
pub fn registered_count() -> usize {
    let set = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    set.fixed.len() + set.leased.iter().filter(|w| w.strong_count() > 0).count()
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let set = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let live: Vec<Arc<Secret<String>>> = set.leased.iter().filter_map(Weak::upgrade).collect();
    let mut all: Vec<&str> = set.fixed.iter().map(String::as_str).collect();
    all.extend(live.iter().map(|s| s.0.as_str()));
    if !live.is_empty() {
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
    let mut out = text.to_string();
    for s in all {
        if out.contains(s) {
            out = out.replace(s, "***");
        }
    }
    out
}

static ENV_NAMES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Prefix of the agent's own environment variables (`LIFELINE_API_TOKEN`, …): never passed
/// to a child process.
pub const AGENT_ENV_PREFIX: &str = "LIFELINE_";

/// Remembers the names of environment variables the config read with `${env:NAME}`: they
/// hold the agent's secrets and are stripped from every child's environment. Names are
/// added, never removed (a reload may still run checks built from the previous config);
/// the list is bounded by the config texts read.
pub fn protect_env_names<I: IntoIterator<Item = String>>(names: I) {
    let mut set = ENV_NAMES.write().unwrap_or_else(|e| e.into_inner());
    for n in names {
        if !set.contains(&n) {
            set.push(n);
        }
    }
}

/// The `${env:NAME}` names in a config text (each once, in order of appearance; `$${` is a
/// literal and not a reference).
pub fn env_refs(src: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = src;
    while let Some(pos) = rest.find("${env:") {
        let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
        let after = &rest[pos + 6..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !escaped && !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &after[end..];
    }
    out
}

/// True if environment variable `name` = `value` belongs to the agent and must not reach a
/// child process: an `LIFELINE_…` variable, one the config references with `${env:…}`, or
/// one whose value is a registered secret.
pub fn is_agent_env(name: &str, value: &str) -> bool {
    if name.starts_with(AGENT_ENV_PREFIX) {
        return true;
    }
    if ENV_NAMES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|n| n == name)
    {
        return true;
    }
    value.chars().count() >= MIN_REDACTED_LEN && redact(value) != value
}

/// A URL with its password (if any) replaced by `***`, for display.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    redact(u.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }

    #[test]
    fn registered_secret_is_redacted_from_text() {
        let _ = Secret::registered("s3cr3t-value-xyz".to_string());
        assert_eq!(
            redact("auth with s3cr3t-value-xyz failed"),
            "auth with *** failed"
        );
    }

    #[test]
    fn env_references_are_found_and_stripped() {
        let refs =
            env_refs("a = \"${env:ONE}\"\nb = \"x${env:TWO}y${env:ONE}\"\nc = \"$${env:LIT}\"");
        assert_eq!(refs, vec!["ONE".to_string(), "TWO".to_string()]);
        protect_env_names(refs);
        assert!(is_agent_env("ONE", "v"));
        assert!(is_agent_env("LIFELINE_API_TOKEN", "v"));
        assert!(!is_agent_env("LIT", "v"));
        register("value-of-a-secret-xyz");
        assert!(is_agent_env("ELSEWHERE", "value-of-a-secret-xyz"));
        assert!(!is_agent_env("PATH", "/usr/bin:/bin"));
    }

    #[test]
    fn leased_secrets_do_not_accumulate_and_stay_redacted_while_held() {
        let before = registered_count();
        // A session still holds the first token while 1,000 refreshes happen.
        let held = lease("tok-held-0000000000".to_string());
        for i in 0..1000 {
            let t = lease(format!("tok-refresh-{i:08}"));
            assert!(redact(&format!("x tok-refresh-{i:08} y")).contains("***"));
            drop(t);
        }
        // Bounded: the set holds the live lease, not a thousand dead ones (other tests in
        // this process may register values concurrently: allow a little slack).
        assert!(
            registered_count() <= before + 1 + 8,
            "{}",
            registered_count()
        );
        {
            let set = SECRETS.read().unwrap_or_else(|e| e.into_inner());
            assert!(set.leased.len() <= 10, "{} leases kept", set.leased.len());
        }
        // Still in use → still redacted.
        assert_eq!(redact("got tok-held-0000000000"), "got ***");
        drop(held);
        let _next = lease("tok-next-000000000".to_string());
        // Released → gone from the set (it is not printed anywhere any more).
        assert_eq!(redact("got tok-held-0000000000"), "got tok-held-0000000000");
    }
}
