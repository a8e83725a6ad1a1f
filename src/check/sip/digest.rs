//! SIP digest authentication (RFC 3261 §22, with the algorithms of RFC 7616 that RFC 8760
//! brings to SIP): reading `WWW-Authenticate` / `Proxy-Authenticate` challenges, choosing
//! the strongest one we can answer (SHA-256 before MD5), and computing the `Authorization`
//! / `Proxy-Authorization` value with `qop=auth` (cnonce, nonce count) where offered.
//! Pure functions, no I/O; bounded by the message caps of [`super::message`].

use std::fmt::Write as _;

/// A digest hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` (RFC 2617), the default when `algorithm` is absent.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// Reads an `algorithm=` token; `None` for ones we cannot compute (e.g. `SHA-512-256`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "MD5-SESS" => Some(Self::Md5Sess),
            "SHA-256" => Some(Self::Sha256),
            "SHA-256-SESS" => Some(Self::Sha256Sess),
            _ => None,
        }
    }

    /// The token as sent in `algorithm=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn strength(self) -> u8 {
        match self {
            Self::Md5 | Self::Md5Sess => 1,
            Self::Sha256 | Self::Sha256Sess => 2,
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// Lower-case hex hash of `data`.
    pub fn hex(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => {
                use md5::Digest;
                hex::encode(md5::Md5::digest(data.as_bytes()))
            }
            Self::Sha256 | Self::Sha256Sess => {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(data.as_bytes()))
            }
        }
    }
}

/// Which quality of protection a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// No `qop` offered (RFC 2069 compatibility).
    None,
    /// `qop=auth`.
    Auth,
    /// `qop=auth-int` (our requests have empty bodies).
    AuthInt,
}

/// One digest challenge from a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back when present.
    pub opaque: Option<String>,
    /// The hash function.
    pub algorithm: Algorithm,
    /// The protection we will use (auth preferred over auth-int).
    pub qop: Qop,
    /// `stale=true`: the nonce expired, the credentials were fine.
    pub stale: bool,
    /// True for `Proxy-Authenticate` (answer with `Proxy-Authorization`).
    pub proxy: bool,
}

/// Why no challenge could be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// The 401/407 carried no authenticate header at all.
    #[error("no WWW-Authenticate or Proxy-Authenticate header")]
    Missing,
    /// Only schemes or algorithms we cannot compute were offered.
    #[error("no supported digest challenge (offered: {0})")]
    Unsupported(String),
}

/// Splits `a="x, y", b=z` into (name, value) pairs, unquoting values. Commas inside
/// quoted strings do not split; `\` escapes inside quotes.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.trim().is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        _ => value.push(c),
                    }
                }
                // Skip anything up to the next comma.
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// Reads one `WWW-Authenticate` / `Proxy-Authenticate` value. `Err` holds a description
/// of what was offered when it is not a digest challenge we can answer.
pub fn parse_challenge(value: &str, proxy: bool) -> Result<Challenge, String> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(super::clip(scheme, 40));
    }
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut algorithm = Some(Algorithm::Md5);
    let mut algorithm_name = "MD5".to_string();
    let mut qop = Qop::None;
    let mut stale = false;
    for (k, v) in params(rest) {
        match k.as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "opaque" => opaque = Some(v),
            "algorithm" => {
                algorithm = Algorithm::parse(&v);
                algorithm_name = super::clip(&v, 40);
            }
            "stale" => stale = v.eq_ignore_ascii_case("true"),
            "qop" => {
                let offered: Vec<String> = v
                    .split(',')
                    .map(|q| q.trim().to_ascii_lowercase())
                    .collect();
                qop = if offered.iter().any(|q| q == "auth") {
                    Qop::Auth
                } else if offered.iter().any(|q| q == "auth-int") {
                    Qop::AuthInt
                } else {
                    return Err(format!("Digest with qop={}", super::clip(&v, 40)));
                };
            }
            _ => {}
        }
    }
    let algorithm = algorithm.ok_or_else(|| format!("Digest {algorithm_name}"))?;
    Ok(Challenge {
        realm: realm.ok_or("Digest without realm")?,
        nonce: nonce.ok_or("Digest without nonce")?,
        opaque,
        algorithm,
        qop,
        stale,
        proxy,
    })
}

/// The strongest digest challenge of a 401/407 response. `values` are the authenticate
/// header values with whether each was `Proxy-Authenticate`.
pub fn choose<'a>(
    values: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<Challenge, ChallengeError> {
    let mut best: Option<Challenge> = None;
    let mut offered = Vec::new();
    for (v, proxy) in values {
        match parse_challenge(v, proxy) {
            Ok(c) => {
                if best
                    .as_ref()
                    .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
                {
                    best = Some(c);
                }
            }
            Err(what) => offered.push(what),
        }
    }
    match best {
        Some(c) => Ok(c),
        None if offered.is_empty() => Err(ChallengeError::Missing),
        None => Err(ChallengeError::Unsupported(offered.join("; "))),
    }
}

/// What the response is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// `username`.
    pub username: &'a str,
    /// The password (never printed).
    pub password: &'a str,
    /// Request method (`REGISTER`, `OPTIONS`).
    pub method: &'a str,
    /// The Request-URI, also sent as `uri=`.
    pub uri: &'a str,
}

/// The digest `response` value (RFC 7616 §3.4.1; RFC 2069 form when `qop` is none).
pub fn response(c: &Challenge, cred: &Credentials<'_>, cnonce: &str, nc: u32) -> String {
    let h = |s: &str| c.algorithm.hex(s);
    let mut ha1 = h(&format!("{}:{}:{}", cred.username, c.realm, cred.password));
    if c.algorithm.is_sess() {
        ha1 = h(&format!("{ha1}:{}:{cnonce}", c.nonce));
    }
    let ha2 = match c.qop {
        Qop::AuthInt => h(&format!("{}:{}:{}", cred.method, cred.uri, h(""))),
        _ => h(&format!("{}:{}", cred.method, cred.uri)),
    };
    match c.qop {
        Qop::None => h(&format!("{ha1}:{}:{ha2}", c.nonce)),
        Qop::Auth | Qop::AuthInt => {
            let q = if c.qop == Qop::Auth {
                "auth"
            } else {
                "auth-int"
            };
            h(&format!("{ha1}:{}:{nc:08x}:{cnonce}:{q}:{ha2}", c.nonce))
        }
    }
}

/// The header (name, value) that answers `c`: `Authorization` or `Proxy-Authorization`.
pub fn authorization(
    c: &Challenge,
    cred: &Credentials<'_>,
    cnonce: &str,
    nc: u32,
) -> (&'static str, String) {
    let resp = response(c, cred, cnonce, nc);
    let mut v = String::with_capacity(256);
    // Writing into a String cannot fail.
    let _ = write!(
        v,
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{resp}\", algorithm={}",
        quote(cred.username),
        quote(&c.realm),
        quote(&c.nonce),
        quote(cred.uri),
        c.algorithm.as_str()
    );
    if c.qop != Qop::None {
        let q = if c.qop == Qop::Auth {
            "auth"
        } else {
            "auth-int"
        };
        let _ = write!(v, ", cnonce=\"{}\", qop={q}, nc={nc:08x}", quote(cnonce));
    }
    if let Some(o) = &c.opaque {
        let _ = write!(v, ", opaque=\"{}\"", quote(o));
    }
    let name = if c.proxy {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    (name, v)
}

/// Escapes `"` and `\` for a quoted-string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the classic example (MD5, qop=auth).
    #[test]
    fn rfc2617_example() {
        let c = parse_challenge(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
            false,
        )
        .expect("challenge");
        assert_eq!((c.algorithm, c.qop), (Algorithm::Md5, Qop::Auth));
        let cred = Credentials {
            username: "Mufasa",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
        };
        assert_eq!(
            response(&c, &cred, "0a4f113b", 1),
            "6629fae49393a05397450978507c4ef1"
        );
        let (name, v) = authorization(&c, &cred, "0a4f113b", 1);
        assert_eq!(name, "Authorization");
        assert!(v.contains("nc=00000001"), "{v}");
        assert!(
            v.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""),
            "{v}"
        );
        assert!(v.contains("response=\"6629fae49393a05397450978507c4ef1\""));
    }

    /// RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    #[test]
    fn rfc7616_examples() {
        let cred = Credentials {
            username: "Mufasa",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
        };
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let offered = [
            (
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
                false,
            ),
            (
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
                false,
            ),
        ];
        let best = choose(offered).expect("a challenge");
        assert_eq!(best.algorithm, Algorithm::Sha256);
        assert_eq!(
            response(&best, &cred, cnonce, 1),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = parse_challenge(offered[0].0, false).expect("md5");
        assert_eq!(
            response(&md5, &cred, cnonce, 1),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn sip_register_without_qop_and_proxy_challenges() {
        // RFC 2069 form: H(HA1:nonce:HA2), checked against the definition.
        let c = parse_challenge(
            r#"Digest realm="example.com", nonce="abc", stale=TRUE"#,
            true,
        )
        .expect("challenge");
        assert!(c.stale && c.proxy && c.qop == Qop::None);
        let cred = Credentials {
            username: "alice",
            password: "s3cret",
            method: "REGISTER",
            uri: "sip:example.com",
        };
        let ha1 = Algorithm::Md5.hex("alice:example.com:s3cret");
        let ha2 = Algorithm::Md5.hex("REGISTER:sip:example.com");
        let want = Algorithm::Md5.hex(&format!("{ha1}:abc:{ha2}"));
        assert_eq!(response(&c, &cred, "ignored", 1), want);
        let (name, v) = authorization(&c, &cred, "x", 1);
        assert_eq!(name, "Proxy-Authorization");
        assert!(!v.contains("qop") && !v.contains("cnonce"), "{v}");
    }

    #[test]
    fn unsupported_and_hostile_challenges() {
        assert_eq!(choose([]), Err(ChallengeError::Missing));
        assert!(matches!(
            choose([(r#"Basic realm="x""#, false)]),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(matches!(
            choose([(
                r#"Digest realm="x", nonce="n", algorithm=SHA-512-256"#,
                false
            )]),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(parse_challenge("Digest nonce=\"n\"", false).is_err());
        assert!(parse_challenge("Digest realm=\"unterminated", false).is_err());
        // Quoted commas and escapes.
        let c = parse_challenge(r#"Digest realm="a, \"b\"", nonce=n1 , opaque="""#, false)
            .expect("challenge");
        assert_eq!((c.realm.as_str(), c.nonce.as_str()), ("a, \"b\"", "n1"));
        assert_eq!(c.opaque.as_deref(), Some(""));
        let long = format!("Digest realm=\"{}\", nonce=\"n\"", "r".repeat(60_000));
        assert!(parse_challenge(&long, false).is_ok());
    }
}
