//! `basic_auth_users`: bcrypt-hashed passwords, checked off the async workers, with a
//! bounded cache of verified credentials so a scrape every few seconds does not pay a
//! bcrypt round each time.
//!
//! The cache key is a SHA-256 of the user, the presented password and the stored hash,
//! so a changed hash (reload) or a different password never hits an old entry, and no
//! password is kept in memory in the clear. Only successes are cached; wrong passwords
//! pay the full bcrypt cost every time, and at most [`MAX_VERIFYING`] run at once.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Verified credentials remembered at most (the set is emptied when full).
pub const CACHE_SIZE: usize = 1024;
/// bcrypt verifications running at once; more wait.
pub const MAX_VERIFYING: usize = 2;

/// The users of one web config.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// A hash of the same cost, compared against for unknown users (same timing).
    dummy: String,
    verified: Mutex<HashSet<[u8; 32]>>,
    gate: Semaphore,
}

impl BasicAuth {
    /// Users and their bcrypt hashes (already checked to parse).
    pub fn new(users: Vec<(String, String)>) -> Self {
        let cost = users
            .first()
            .and_then(|(_, h)| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .unwrap_or(bcrypt::DEFAULT_COST);
        Self {
            dummy: bcrypt::hash("lifeline-unknown-user", cost).unwrap_or_default(),
            users: users.into_iter().collect(),
            verified: Mutex::new(HashSet::new()),
            gate: Semaphore::new(MAX_VERIFYING),
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True without users (never built that way; for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True if `authorization` (the header value) is `Basic` with a known user and the
    /// right password.
    pub async fn check(&self, authorization: Option<&str>) -> bool {
        let Some((user, password)) = authorization.and_then(decode) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if known && self.verified.lock().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.gate.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            let mut v = self.verified.lock();
            if v.len() >= CACHE_SIZE {
                v.clear();
            }
            v.insert(key);
        }
        ok && known
    }

    /// Entries in the verified cache (tests).
    pub fn cached(&self) -> usize {
        self.verified.lock().len()
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[tokio::test]
    async fn right_password_is_cached_wrong_and_unknown_are_refused() {
        let hash = bcrypt::hash("s3cret", 4).unwrap_or_default();
        let a = BasicAuth::new(vec![("alice".into(), hash)]);
        assert!(a.check(Some(&basic("alice", "s3cret"))).await);
        assert_eq!(a.cached(), 1);
        assert!(a.check(Some(&basic("alice", "s3cret"))).await);
        assert_eq!(a.cached(), 1);
        assert!(!a.check(Some(&basic("alice", "wrong"))).await);
        assert!(!a.check(Some(&basic("mallory", "s3cret"))).await);
        assert!(!a.check(Some("Bearer x")).await);
        assert!(!a.check(None).await);
        assert_eq!(a.cached(), 1);
    }
}
