//! The libpq connection URL, read by hand: tokio-postgres only knows
//! `sslmode=disable|prefer|require`, so the URL is parsed here and the driver is configured
//! through its builder (see `docs/postgres-redis.md` for the mode mapping).

use std::path::PathBuf;

use crate::net::addr::{join_host_port, percent_decode, unbracket};
use crate::secret::Secret;

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
    pub fn parse(s: &str, base: &std::path::Path) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "must start with postgres:// or postgresql://, got `{}:`",
                url.scheme()
            ));
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
                    sslmode = SslMode::parse(&v).ok_or_else(|| {
                        format!("sslmode must be disable, prefer, require, verify-ca or verify-full, got `{v}`")
                    })?;
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
                "port" => port = Some(v.parse().map_err(|_| format!("invalid port `{v}`"))?),
                "user" => user = Some(v),
                "password" => password = Some(v),
                "dbname" => dbname = Some(v),
                other => {
                    return Err(format!(
                        "unsupported parameter `{other}` (supported: sslmode, sslrootcert, application_name, host, port, user, password, dbname)"
                    ));
                }
            }
        }
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or("the URL must name a host")?;
        if host.starts_with('/') {
            return Err("Unix-socket hosts are not supported; use a TCP host".into());
        }
        if host.contains(',') {
            return Err("multiple hosts are not supported; use one check per host".into());
        }
        let user = user.ok_or("the URL must name a user (postgres://USER@HOST/DB)")?;
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
fn decode(s: &str) -> Result<String, String> {
    percent_decode(s).map_err(|e| e.to_string())
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
        assert!(
            Dsn::parse("mysql://u@h/db", base)
                .unwrap_err()
                .contains("postgres://")
        );
        assert!(
            Dsn::parse("postgres://h/db", base)
                .unwrap_err()
                .contains("user")
        );
        assert!(
            Dsn::parse("postgres://u@h/db?sslmode=allow", base)
                .unwrap_err()
                .contains("sslmode")
        );
        assert!(
            Dsn::parse("postgres://u@h/db?target_session_attrs=any", base)
                .unwrap_err()
                .contains("unsupported parameter")
        );
        assert!(
            Dsn::parse("postgres://u@h/db?host=/run/postgresql", base)
                .unwrap_err()
                .contains("Unix-socket")
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
