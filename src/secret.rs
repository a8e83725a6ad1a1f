//! Secrets: values that must never be printed. `Secret<T>` shows `***` in `Debug` and
//! `Display`; every resolved secret is also registered with [`redact`], which scrubs it
//! from any text (peer error messages, URLs) before that text is logged or served.

use std::fmt;
use std::sync::RwLock;

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

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shortest registered value that is scrubbed from free text.
pub const MIN_REDACTED_LEN: usize = 6;

/// Adds `value` to the set of strings [`redact`] removes. Values shorter than
/// [`MIN_REDACTED_LEN`] characters are not text-redacted (replacing every `admin` or `x` in
/// every message would shred ordinary text); they still print as `***` wherever they are
/// held as a [`Secret`], and URL passwords are redacted structurally by [`redact_url`].
pub fn register(value: &str) {
    if value.chars().count() < MIN_REDACTED_LEN {
        return;
    }
    let mut set = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !set.iter().any(|s| s == value) {
        set.push(value.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        set.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let set = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in set.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
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
}
