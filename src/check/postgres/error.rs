//! What went wrong: a tokio-postgres error (with what the TLS wrapper saw) as a
//! `CheckError` of the right kind.

use std::error::Error as _;

use tokio_postgres::error::SqlState;

use super::ssl::TlsRecord;
use crate::check::{CheckError, ErrorKind};

/// Classifies a driver error. `tls_expected`: the sslmode requires TLS.
pub(super) fn classify(
    e: &tokio_postgres::Error,
    tls: Option<&TlsRecord>,
    tls_expected: bool,
) -> CheckError {
    let text = describe(e);
    if tls.is_some_and(|rec| *rec.failed.lock()) {
        return CheckError::new(ErrorKind::Tls, text);
    }
    if let Some(db) = e.as_db_error() {
        return CheckError::new(
            sqlstate_kind(db.code()),
            format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        );
    }
    if e.is_closed() {
        return CheckError::new(ErrorKind::Closed, "server closed the connection");
    }
    if let Some(io) = io_source(e) {
        let k = ErrorKind::from_io(io);
        let k = if k == ErrorKind::Internal {
            ErrorKind::Protocol
        } else {
            k
        };
        return CheckError::new(k, text);
    }
    // tokio-postgres refuses to go on in plain text when TLS is required before it ever
    // calls the connector: the only non-I/O, non-server error possible at that point.
    if tls_expected && tls.is_some_and(|r| !*r.started.lock()) {
        return CheckError::new(ErrorKind::Tls, text);
    }
    // Client-side authentication failures (the server asks for a password and none is
    // configured, a SCRAM exchange that does not verify) carry no public type; the
    // driver's error kind is only visible in its text.
    if text.starts_with("authentication error") || text.contains("password missing") {
        return CheckError::new(ErrorKind::AuthFailed, text);
    }
    CheckError::new(ErrorKind::Protocol, text)
}

/// The error kind for a server error.
fn sqlstate_kind(code: &SqlState) -> ErrorKind {
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        ErrorKind::AuthFailed
    } else if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || code.code().starts_with("08")
    {
        ErrorKind::Closed
    } else {
        // Unknown database (3D000), too many connections (53300), starting up (57P03), a
        // query the server refuses (syntax, missing table, permission): the server is up
        // and answered, but said no.
        ErrorKind::Rejected
    }
}

/// The first I/O error among the causes.
fn io_source(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        src = s.source();
    }
    None
}

/// The error and its causes on one line.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

/// A session that ended: the driver task's result as a `CheckError`.
pub(super) fn ended(
    r: Result<Result<(), tokio_postgres::Error>, tokio::task::JoinError>,
) -> CheckError {
    match r {
        Ok(Ok(())) => CheckError::new(ErrorKind::Closed, "server closed the connection"),
        Ok(Err(e)) => {
            let c = classify(&e, None, false);
            match c.kind {
                ErrorKind::AuthFailed | ErrorKind::Closed => c,
                // Reset, EOF, protocol trouble: for a live session all mean "it is gone".
                _ => CheckError::new(ErrorKind::Closed, format!("connection lost: {}", c.message)),
            }
        }
        Err(e) => CheckError::new(ErrorKind::Internal, format!("connection task failed: {e}")),
    }
}
