//! The `target` URI of a `sip` check: `sip:` / `sips:` with an optional user, a host name,
//! IPv4 or bracketed IPv6 address, a port and a `transport=` parameter.

use super::message::Transport;

/// Where to send OPTIONS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URI as configured (Request-URI and To).
    pub uri: String,
    /// Host name or IP (without brackets).
    pub host: String,
    /// Port (default 5060, 5061 for TLS, 80 for WS, 443 for WSS).
    pub port: u16,
    /// Transport (`transport=` parameter; `sips:` means TLS).
    pub transport: Transport,
}

impl Target {
    /// `host:port`, IPv6 bracketed.
    pub fn address(&self) -> String {
        crate::net::addr::join_host_port(&self.host, self.port)
    }

    /// The registrar's URI for REGISTER (RFC 3261 §10.2: no user part): the target
    /// without `user@`, parameters kept.
    pub fn registrar_uri(&self) -> String {
        let (scheme, rest) = self.uri.split_once(':').unwrap_or(("sip", &self.uri));
        let (hostport, params) = match rest.find(';') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
        format!("{scheme}:{hostport}{params}")
    }

    /// `host`, IPv6 bracketed (for an address of record).
    pub fn uri_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Why a `target` URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither `sip:` nor `sips:`.
    #[error("must start with `sip:` or `sips:`")]
    Scheme,
    /// A `?` header part.
    #[error("URI headers (`?…`) are not supported")]
    Headers,
    /// A `transport=` other than udp, tcp or tls.
    #[error("transport `{0}` is not supported (udp, tcp, tls, ws, wss)")]
    Transport(String),
    /// `sips:` with `transport=udp`.
    #[error("`sips:` cannot use transport=udp")]
    SipsOverUdp,
    /// `[` without `]`.
    #[error("unclosed `[` in host")]
    UnclosedBracket,
    /// Something other than `:port` after `[…]`.
    #[error("junk after IPv6 host")]
    JunkAfterIpv6,
    /// A port that is not 1–65535.
    #[error("bad port `{0}`")]
    Port(String),
    /// No host, or one with white space.
    #[error("missing host")]
    MissingHost,
}

/// Reads `sip:[user@]host[:port][;transport=udp|tcp|tls|ws|wss]` (or `sips:`).
pub fn parse_target(s: &str) -> Result<Target, TargetError> {
    let s = s.trim();
    let (secure, rest) = if let Some(r) = strip_prefix_ci(s, "sips:") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(s, "sip:") {
        (false, r)
    } else {
        return Err(TargetError::Scheme);
    };
    if rest.contains('?') {
        return Err(TargetError::Headers);
    }
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or("");
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let mut transport = None;
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.eq_ignore_ascii_case("transport") {
            transport = Some(match v.to_ascii_lowercase().as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "tls" => Transport::Tls,
                "ws" => Transport::Ws,
                "wss" => Transport::Wss,
                other => return Err(TargetError::Transport(other.to_string())),
            });
        }
    }
    let transport = match (secure, transport) {
        (true, Some(Transport::Udp)) => return Err(TargetError::SipsOverUdp),
        (true, Some(Transport::Ws | Transport::Wss)) => Transport::Wss,
        (true, _) => Transport::Tls,
        (false, t) => t.unwrap_or(Transport::Udp),
    };
    let default_port = match transport {
        Transport::Tls => 5061,
        Transport::Ws => 80,
        Transport::Wss => 443,
        Transport::Udp | Transport::Tcp => 5060,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(TargetError::UnclosedBracket)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(TargetError::JunkAfterIpv6),
        };
        (h, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| TargetError::Port(p.to_string()))?,
        None => default_port,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(TargetError::MissingHost);
    }
    Ok(Target {
        uri: s.to_string(),
        host: host.to_string(),
        port,
        transport,
    })
}

/// `s` without `prefix`, compared ASCII case-insensitively.
pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("sip:pbx.example:5070;transport=TCP").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("pbx.example", 5070, Transport::Tcp)
        );
        let t = parse_target("sips:alice@[::1]").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("::1", 5061, Transport::Tls)
        );
        assert_eq!(t.address(), "[::1]:5061");
        assert_eq!(t.registrar_uri(), "sips:[::1]");
        assert_eq!(t.uri_host(), "[::1]");
        let t = parse_target("sip:bob@pbx:5070;transport=tcp").expect("valid");
        assert_eq!(t.registrar_uri(), "sip:pbx:5070;transport=tcp");
        let t = parse_target("sip:10.0.0.1;transport=ws").expect("valid");
        assert_eq!((t.port, t.transport), (80, Transport::Ws));
        let t = parse_target("sips:10.0.0.1;transport=ws").expect("valid");
        assert_eq!((t.port, t.transport), (443, Transport::Wss));
        let t = parse_target("sip:10.0.0.1").expect("valid");
        assert_eq!((t.port, t.transport), (5060, Transport::Udp));
        for bad in [
            "http://x",
            "sip:",
            "sip:host:0",
            "sip:host:99999",
            "sip:host;transport=sctp",
            "sips:host;transport=udp",
            "sip:[::1",
            "sip:host?subject=x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
