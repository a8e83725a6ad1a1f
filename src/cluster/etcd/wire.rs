//! The JSON shapes of etcd's v3 gRPC gateway: request bodies built from the client's
//! types, and responses parsed into them. Keys and values travel as base64; int64 fields
//! arrive as JSON strings (numbers are accepted too); fields holding their zero value are
//! left out by the server (`succeeded: false`, `version: 0`, an empty value, `watch_id: 0`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Cmp, Compare, EtcdError, Kv, Op, TxnResult, WatchEvent};

/// `bytes` as base64 (how the gateway carries keys and values).
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with
/// its last byte below 0xff incremented and what follows it dropped; `"\0"` (every key
/// from the start key on) when there is no such byte (an empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key and range end of a prefix range (an empty prefix is every key: `"\0".."\0"`).
pub fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let key = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    (key, prefix_end(prefix.as_bytes()))
}

/// An int64 as the gateway expects it (a string: lease ids exceed 2^53).
fn i64s(v: i64) -> String {
    v.to_string()
}

/// `/v3/kv/put`.
pub fn put_request(key: &str, value: &[u8], lease: Option<i64>) -> Value {
    let mut v = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
    if let Some(l) = lease {
        v["lease"] = Value::String(i64s(l));
    }
    v
}

/// `/v3/kv/range` for one key.
pub fn get_request(key: &str) -> Value {
    json!({ "key": b64(key.as_bytes()) })
}

/// `/v3/kv/range` for every key under `prefix`.
pub fn range_prefix_request(prefix: &str) -> Value {
    let (key, end) = prefix_range(prefix);
    json!({ "key": b64(&key), "range_end": b64(&end) })
}

/// `/v3/kv/deleterange` for one key.
pub fn delete_request(key: &str) -> Value {
    json!({ "key": b64(key.as_bytes()) })
}

/// `/v3/lease/grant`: the TTL in whole seconds (at least 1).
pub fn grant_request(ttl_secs: i64) -> Value {
    json!({ "TTL": i64s(ttl_secs.max(1)) })
}

/// `/v3/lease/keepalive` and `/v3/lease/revoke`.
pub fn lease_id_request(lease: i64) -> Value {
    json!({ "ID": i64s(lease) })
}

fn cmp_name(c: Cmp) -> &'static str {
    match c {
        Cmp::Equal => "EQUAL",
        Cmp::NotEqual => "NOT_EQUAL",
        Cmp::Greater => "GREATER",
        Cmp::Less => "LESS",
    }
}

fn compare_json(c: &Compare) -> Value {
    let (key, op, target, field, value) = match c {
        Compare::Version { key, op, value } => {
            (key, op, "VERSION", "version", Value::String(i64s(*value)))
        }
        Compare::ModRevision { key, op, value } => {
            (key, op, "MOD", "mod_revision", Value::String(i64s(*value)))
        }
        Compare::CreateRevision { key, op, value } => (
            key,
            op,
            "CREATE",
            "create_revision",
            Value::String(i64s(*value)),
        ),
        Compare::Lease { key, op, value } => {
            (key, op, "LEASE", "lease", Value::String(i64s(*value)))
        }
        Compare::Value { key, op, value } => (key, op, "VALUE", "value", Value::String(b64(value))),
    };
    let mut v = json!({
        "key": b64(key.as_bytes()),
        "target": target,
        "result": cmp_name(*op),
    });
    v[field] = value;
    v
}

fn op_json(o: &Op) -> Value {
    match o {
        Op::Put { key, value, lease } => json!({ "request_put": put_request(key, value, *lease) }),
        Op::Delete { key } => json!({ "request_delete_range": delete_request(key) }),
        Op::Get { key } => json!({ "request_range": get_request(key) }),
    }
}

/// `/v3/kv/txn`.
pub fn txn_request(t: &super::Txn) -> Value {
    json!({
        "compare": t.compare.iter().map(compare_json).collect::<Vec<_>>(),
        "success": t.success.iter().map(op_json).collect::<Vec<_>>(),
        "failure": t.failure.iter().map(op_json).collect::<Vec<_>>(),
    })
}

/// `/v3/watch`: a watch of every key under `prefix` from `start_revision` (0: from now),
/// with progress notifications and fragmented large responses.
pub fn watch_create_request(prefix: &str, start_revision: i64) -> Value {
    let (key, end) = prefix_range(prefix);
    let mut c = json!({
        "key": b64(&key),
        "range_end": b64(&end),
        "progress_notify": true,
        "fragment": true,
    });
    if start_revision > 0 {
        c["start_revision"] = Value::String(i64s(start_revision));
    }
    json!({ "create_request": c })
}

/// `/v3/auth/authenticate`.
pub fn authenticate_request(name: &str, password: &str) -> Value {
    json!({ "name": name, "password": password })
}

// ---- responses ----

/// An int64 the gateway sends as a string (or, from other gateways, a number).
fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// base64 bytes.
fn de_b64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
}

/// `ResponseHeader` (only the revision is used).
#[derive(Debug, Default, Deserialize)]
pub struct Header {
    /// The store revision when the request was applied.
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Default, Deserialize)]
struct RawKv {
    #[serde(default, deserialize_with = "de_b64")]
    key: Vec<u8>,
    #[serde(default, deserialize_with = "de_b64")]
    value: Vec<u8>,
    #[serde(default, deserialize_with = "de_i64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    version: i64,
    #[serde(default, deserialize_with = "de_i64")]
    lease: i64,
}

impl From<RawKv> for Kv {
    fn from(r: RawKv) -> Self {
        Kv {
            // Keys are ours (UTF-8); anything else is shown, not trusted.
            key: String::from_utf8_lossy(&r.key).into_owned(),
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
            lease: r.lease,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RangeBody {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Debug, Default, Deserialize)]
struct HeaderOnly {
    #[serde(default)]
    header: Header,
}

#[derive(Debug, Default, Deserialize)]
struct DeleteBody {
    #[serde(default, deserialize_with = "de_i64")]
    deleted: i64,
}

#[derive(Debug, Default, Deserialize)]
struct LeaseBody {
    #[serde(default, rename = "ID", deserialize_with = "de_i64")]
    id: i64,
    #[serde(default, rename = "TTL", deserialize_with = "de_i64")]
    ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
struct TxnBody {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<TxnResponseOp>,
}

#[derive(Debug, Default, Deserialize)]
struct TxnResponseOp {
    #[serde(default)]
    response_range: Option<RangeBody>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthBody {
    #[serde(default)]
    token: String,
}

fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, EtcdError> {
    serde_json::from_value(v).map_err(|e| EtcdError::Protocol(format!("bad {what} response: {e}")))
}

/// A range response: its key-values and header revision.
pub fn parse_range(v: Value) -> Result<(Vec<Kv>, i64), EtcdError> {
    let r: RangeBody = decode(v, "range")?;
    Ok((r.kvs.into_iter().map(Kv::from).collect(), r.header.revision))
}

/// The header revision of any response.
pub fn parse_revision(v: Value) -> Result<i64, EtcdError> {
    let r: HeaderOnly = decode(v, "etcd")?;
    Ok(r.header.revision)
}

/// A delete-range response: how many keys went.
pub fn parse_deleted(v: Value) -> Result<i64, EtcdError> {
    let r: DeleteBody = decode(v, "deleterange")?;
    Ok(r.deleted)
}

/// A lease grant: its id (and TTL in seconds, which may exceed the one asked for).
pub fn parse_grant(v: Value) -> Result<(i64, i64), EtcdError> {
    let r: LeaseBody = decode(v, "lease grant")?;
    if r.id == 0 {
        return Err(EtcdError::Protocol("lease grant without an ID".into()));
    }
    Ok((r.id, r.ttl))
}

/// A keep-alive answer (a streamed `{"result":{…}}`): the remaining TTL in seconds, 0 or
/// less when the lease is gone (the server leaves `TTL` out then).
pub fn parse_keepalive(v: Value) -> Result<i64, EtcdError> {
    let inner = unwrap_result(v)?;
    let r: LeaseBody = decode(inner, "lease keepalive")?;
    Ok(r.ttl)
}

/// A txn response: whether the compares held, the revision, and the kvs of each range
/// in the branch taken, in order.
pub fn parse_txn(v: Value) -> Result<TxnResult, EtcdError> {
    let r: TxnBody = decode(v, "txn")?;
    Ok(TxnResult {
        succeeded: r.succeeded,
        revision: r.header.revision,
        gets: r
            .responses
            .into_iter()
            .filter_map(|op| op.response_range)
            .map(|rr| rr.kvs.into_iter().map(Kv::from).collect())
            .collect(),
    })
}

/// An authenticate response: the token.
pub fn parse_token(v: Value) -> Result<String, EtcdError> {
    let r: AuthBody = decode(v, "authenticate")?;
    if r.token.is_empty() {
        return Err(EtcdError::Protocol("authenticate answered no token".into()));
    }
    Ok(r.token)
}

/// A gRPC error in a gateway body, in either of its shapes: unary
/// `{"error":"…","message":"…","code":N}` or streamed
/// `{"error":{"grpc_code":N,"http_code":…,"message":"…"}}`. `None` if `v` is no error.
pub fn error_of(v: &Value) -> Option<EtcdError> {
    let e = v.get("error")?;
    let (code, message) = match e {
        Value::Object(o) => (
            o.get("grpc_code")
                .or_else(|| o.get("code"))
                .and_then(as_i64),
            o.get("message").and_then(Value::as_str).map(str::to_string),
        ),
        Value::String(s) => (
            v.get("code").and_then(as_i64),
            v.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| Some(s.clone())),
        ),
        _ => (None, None),
    };
    Some(EtcdError::Status {
        code: code.unwrap_or(2),
        message: crate::secret::redact(&message.unwrap_or_else(|| e.to_string())),
    })
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The object inside a streamed `{"result":{…}}` (or the error it carries instead).
fn unwrap_result(mut v: Value) -> Result<Value, EtcdError> {
    if let Some(e) = error_of(&v) {
        return Err(e);
    }
    match v.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => Err(EtcdError::Protocol(
            "streamed response without `result`".into(),
        )),
    }
}

/// What one message of a watch stream says.
#[derive(Debug, PartialEq)]
pub enum WatchMessage {
    /// The watch exists now (the first message).
    Created,
    /// Events (possibly one fragment of a larger response: `more` is true then).
    Events {
        /// The events, in revision order.
        events: Vec<WatchEvent>,
        /// More fragments of the same response follow.
        more: bool,
    },
    /// A progress notification or an empty response: the watch is alive at `revision`.
    Progress {
        /// The header revision.
        revision: i64,
    },
    /// The server cancelled the watch; `compact_revision` > 0 when the start revision
    /// was compacted away.
    Canceled {
        /// The compaction revision (0 if the cancel had another reason).
        compact_revision: i64,
        /// The server's reason (empty for compaction).
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct WatchBody {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "de_i64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    fragment: bool,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawEvent {
    /// `PUT` is the zero value and left out; `DELETE` is spelled.
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    kv: RawKv,
}

/// Parses one line of a watch stream.
pub fn parse_watch_line(line: &[u8]) -> Result<WatchMessage, EtcdError> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| EtcdError::Protocol(format!("bad watch message: {e}")))?;
    let inner = unwrap_result(v)?;
    let w: WatchBody = decode(inner, "watch")?;
    if w.canceled {
        return Ok(WatchMessage::Canceled {
            compact_revision: w.compact_revision,
            reason: crate::secret::redact(&w.cancel_reason),
        });
    }
    if w.created {
        return Ok(WatchMessage::Created);
    }
    if w.events.is_empty() && !w.fragment {
        return Ok(WatchMessage::Progress {
            revision: w.header.revision,
        });
    }
    let mut events = Vec::with_capacity(w.events.len());
    for e in w.events {
        let kv = Kv::from(e.kv);
        events.push(match e.kind.as_str() {
            "" | "PUT" => WatchEvent::Put(kv),
            "DELETE" => WatchEvent::Delete {
                key: kv.key,
                mod_revision: kv.mod_revision,
            },
            other => {
                return Err(EtcdError::Protocol(format!(
                    "unknown watch event type {other:?}"
                )));
            }
        });
    }
    Ok(WatchMessage::Events {
        events,
        more: w.fragment,
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
