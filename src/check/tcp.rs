//! `tcp` (probe): healthy when a TCP connection to `address` succeeds.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ParseCx;
use super::{Attempt, BoxFuture, BuildEnv, Check, CheckError, KindSpec, Outcome, Phases};
use crate::config::raw::Table;
use crate::net::addr::{Connected, split_host_port};

/// `tcp` settings.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// `host:port`.
    pub address: String,
}

/// Reads `address`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let a = t.req_str("address")?;
    if split_host_port(&a.value).is_none() {
        t.error(
            a.span,
            format!("`address` must be HOST:PORT, got `{}`", a.value),
        );
        return None;
    }
    Some(Arc::new(TcpSpec { address: a.value }))
}

impl KindSpec for TcpSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(TcpCheck {
            address: self.address.clone(),
        }))
    }
}

struct TcpCheck {
    address: String,
}

impl Check for TcpCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut phases = Phases::default();
            match crate::net::addr::connect_first(&self.address, &mut phases).await {
                Ok((stream, first)) => {
                    // The handshake as the kernel timed it (plus the name lookup), not
                    // when this task got to run again: see `net::tcp_info`. When the
                    // first address did not answer, the wait for the next one counts.
                    // A connection the kernel finished inside the connect call was
                    // never waited for, so the call's own time is the exchange, with
                    // no queueing in it: no need to ask the kernel.
                    let rtt = match &stream {
                        Connected::Now(_) if first => phases.connect,
                        _ if first => crate::net::tcp_info::rtt(&stream),
                        _ => None,
                    };
                    let latency = match rtt {
                        Some(rtt) => {
                            phases.connect = Some(rtt);
                            phases.dns.unwrap_or_default() + rtt
                        }
                        None => start.elapsed(),
                    };
                    drop(stream);
                    Outcome::up(latency).with_phases(phases)
                }
                Err(e) => Outcome::down(e, start.elapsed()).with_phases(phases),
            }
        })
    }
}

/// Default when a kind needs a duration nobody configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
