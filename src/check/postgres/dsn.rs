//! The libpq connection URL, read by hand: tokio-postgres only knows
//! `sslmode=disable|prefer|require`, so the URL is parsed here and the driver is configured
//! through its builder (see `docs/postgres-redis.md` for the mode mapping).

use std::path::PathBuf;

use crate::net::addr::{NotUtf8, join_host_port, percent_decode, unbracket};
use crate::secret::Secret;

/// Why a `postgres://` URL is refused (the messages never contain the password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    /// Not a URL at all.
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
    /// Another scheme.
    #[error("must start with postgres:// or postgresql://, got `{0}:`")]
    Scheme(String),
    /// A percent-escape in user, password or database does not decode to UTF-8.
    #[error(transparent)]
    Decode(#[from] NotUtf8),
    /// An unknown `sslmode`.
    #[error("sslmode must be disable, prefer, require, verify-ca or verify-full, got `{0}`")]
    SslMode(String),
    /// `port=` is not a port number.
    #[error("invalid port `{0}`")]
    Port(String),
    /// A libpq parameter this agent does not implement.
    #[error(
        "unsupported parameter `{0}` (supported: sslmode, sslrootcert, application_name, host, port, user, password, dbname)"
    )]
    Unsupported(String),
    /// No host, in the authority or `host=`.
    #[error("the URL must name a host")]
    NoHost,
    /// `host=/path`.
    #[error("Unix-socket hosts are not supported; use a TCP host")]
    UnixSocket,
    /// `host=a,b`.
    #[error("multiple hosts are not supported; use one check per host")]
    MultipleHosts,
    /// No user, in the authority or `user=`.
    #[error("the URL must name a user (postgres://USER@HOST/DB)")]
    NoUser,
}

/// libpq `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, no certificate verification (libpq default).
    #[default]
    Prefer,
    /// TLS required; the certificate is not verified unless `sslrootcert` is set.
    Require,
    /// TLS required; the chain must lead to a trusted root, any host name.
    VerifyCa,
    /// TLS required; chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// Parses a libpq name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RootCert {
    /// The OS store (`sslrootcert=system`, and the default for `verify-*`).
    System,
    /// Only the certificates in this PEM file.
    File(PathBuf),
}

/// A parsed `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dsn {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (default 5432).
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password, if any.
    pub password: Option<Secret<String>>,
    /// Database (default: the user name, as libpq).
    pub dbname: String,
    /// TLS policy.
    pub sslmode: SslMode,
    /// `sslrootcert`, if given.
    pub sslrootcert: Option<RootCert>,
    /// `application_name` (default `lifeline`).
    pub application_name: String,
}

impl Dsn {
    /// Parses `s`; relative `sslrootcert` paths are resolved against `base`. Errors are
    /// free of the password.
    pub fn parse(s: &str, base: &std::path::Path) -> Result<Self, DsnError> {
        let url = url::Url::parse(s)?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(DsnError::Scheme(url.scheme().to_string()));
        }
        let mut host = url.host_str().map(|h| unbracket(h).to_string());
        let mut port = url.port();
        let mut user = Some(decode(url.username())?).filter(|u| !u.is_empty());
        let mut password = match url.password() {
            Some(p) => Some(decode(p)?),
            None => None,
        };
        let path = url.path().trim_start_matches('/');
        let mut dbname = Some(decode(path)?).filter(|d| !d.is_empty());
        let mut sslmode = SslMode::default();
        let mut sslrootcert = None;
        let mut application_name = "lifeline".to_string();
        for (k, v) in url.query_pairs() {
            let v = v.into_owned();
            match &*k {
                "sslmode" => {
                    sslmode = SslMode::parse(&v).ok_or(DsnError::SslMode(v))?;
                }
                "sslrootcert" => {
                    sslrootcert = Some(if v == "system" {
                        RootCert::System
                    } else {
                        RootCert::File(base.join(v))
                    });
                }
                "application_name" => application_name = v,
                "host" => host = Some(v),
                "port" => port = Some(v.parse().map_err(|_| DsnError::Port(v))?),
                "user" => user = Some(v),
                "password" => password = Some(v),
                "dbname" => dbname = Some(v),
                other => return Err(DsnError::Unsupported(other.to_string())),
            }
        }
        let host = host.filter(|h| !h.is_empty()).ok_or(DsnError::NoHost)?;
        if host.starts_with('/') {
            return Err(DsnError::UnixSocket);
        }
        if host.contains(',') {
            return Err(DsnError::MultipleHosts);
        }
        let user = user.ok_or(DsnError::NoUser)?;
        if let Some(p) = &password {
            crate::secret::register(p);
        }
        Ok(Self {
            dbname: dbname.unwrap_or_else(|| user.clone()),
            host,
            port: port.unwrap_or(5432),
            user,
            password: password.map(Secret::new),
            sslmode,
            sslrootcert,
            application_name,
        })
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// Percent-decodes a URL component.
fn decode(s: &str) -> Result<String, DsnError> {
    Ok(percent_decode(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn full_url() {
        let d = Dsn::parse(
            "postgres://app:p%40ss@db.example:6543/orders?sslmode=verify-full&sslrootcert=ca.pem",
            Path::new("/etc/lifeline"),
        )
        .unwrap();
        assert_eq!(d.host, "db.example");
        assert_eq!(d.port, 6543);
        assert_eq!(d.user, "app");
        assert_eq!(d.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(d.dbname, "orders");
        assert_eq!(d.sslmode, SslMode::VerifyFull);
        assert_eq!(
            d.sslrootcert,
            Some(RootCert::File("/etc/lifeline/ca.pem".into()))
        );
        assert_eq!(d.application_name, "lifeline");
    }

    #[test]
    fn defaults_follow_libpq() {
        let d = Dsn::parse("postgresql://bob@[::1]", Path::new("/")).unwrap();
        assert_eq!(d.host, "::1");
        assert_eq!(d.address(), "[::1]:5432");
        assert_eq!(d.dbname, "bob");
        assert_eq!(d.sslmode, SslMode::Prefer);
        assert!(d.password.is_none());
    }

    #[test]
    fn rejects_what_we_cannot_honour() {
        let base = Path::new("/");
        let err = |s: &str| Dsn::parse(s, base).unwrap_err();
        assert_eq!(
            err("mysql://u@h/db").to_string(),
            "must start with postgres:// or postgresql://, got `mysql:`"
        );
        assert_eq!(err("postgres://h/db"), DsnError::NoUser);
        assert_eq!(
            err("postgres://u@h/db?sslmode=allow").to_string(),
            "sslmode must be disable, prefer, require, verify-ca or verify-full, got `allow`"
        );
        assert_eq!(
            err("postgres://u@h/db?target_session_attrs=any"),
            DsnError::Unsupported("target_session_attrs".into())
        );
        assert!(
            err("postgres://u@h/db?target_session_attrs=any")
                .to_string()
                .starts_with("unsupported parameter `target_session_attrs` (supported: sslmode,")
        );
        assert_eq!(
            err("postgres://u@h/db?host=/run/postgresql"),
            DsnError::UnixSocket
        );
        assert_eq!(err("postgres://u@a,b/db"), DsnError::MultipleHosts);
        assert_eq!(
            err("postgres://u@h/db?port=x").to_string(),
            "invalid port `x`"
        );
        assert_eq!(err("postgres://u@h/%ff"), DsnError::Decode(NotUtf8));
        assert!(
            err("postgres://u@h:99999/db")
                .to_string()
                .starts_with("invalid URL: ")
        );
    }

    #[test]
    fn system_roots() {
        let d = Dsn::parse(
            "postgres://u@h/db?sslrootcert=system&sslmode=verify-ca",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(d.sslrootcert, Some(RootCert::System));
    }
}
