//! The gateway's JSON shapes, as etcd 3.4 sends and accepts them.

use super::*;
use crate::cluster::etcd::Txn;

fn unb64(s: &serde_json::Value) -> Vec<u8> {
    B64.decode(s.as_str().expect("a string")).expect("base64")
}

#[test]
fn prefix_end_increments_the_last_byte_below_0xff() {
    assert_eq!(prefix_end(b"a/"), b"a0");
    assert_eq!(prefix_end(b"lifeline/agents/"), b"lifeline/agents0");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"a\xff\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    assert_eq!(prefix_end(b""), b"\0");
}

#[test]
fn prefix_requests_carry_key_and_range_end_in_base64() {
    let r = range_prefix_request("a/");
    assert_eq!(r["key"], "YS8=");
    assert_eq!(r["range_end"], "YTA=");
    // The empty prefix is every key.
    let all = range_prefix_request("");
    assert_eq!(unb64(&all["key"]), b"\0");
    assert_eq!(unb64(&all["range_end"]), b"\0");
    let w = watch_create_request("a/", 7);
    let c = &w["create_request"];
    assert_eq!(c["key"], "YS8=");
    assert_eq!(c["range_end"], "YTA=");
    assert_eq!(c["start_revision"], "7");
    assert_eq!(c["progress_notify"], true);
    // From now: no start revision at all.
    assert!(watch_create_request("a/", 0)["create_request"]["start_revision"].is_null());
}

#[test]
fn int64s_go_out_as_strings() {
    let p = put_request("k", b"v", Some(7_587_883_274_958_262_812));
    assert_eq!(p["key"], "aw==");
    assert_eq!(p["value"], "dg==");
    assert_eq!(p["lease"], "7587883274958262812");
    assert!(put_request("k", b"", None).get("lease").is_none());
    assert_eq!(grant_request(0)["TTL"], "1");
    assert_eq!(lease_id_request(-3)["ID"], "-3");
}

#[test]
fn txn_encodes_targets_results_and_ops() {
    let t = Txn {
        compare: vec![
            Compare::Version {
                key: "a".into(),
                op: Cmp::Equal,
                value: 0,
            },
            Compare::ModRevision {
                key: "a".into(),
                op: Cmp::Less,
                value: 9,
            },
            Compare::CreateRevision {
                key: "a".into(),
                op: Cmp::Greater,
                value: 2,
            },
            Compare::Lease {
                key: "a".into(),
                op: Cmp::NotEqual,
                value: 5,
            },
            Compare::Value {
                key: "a".into(),
                op: Cmp::Equal,
                value: b"x".to_vec(),
            },
        ],
        success: vec![
            Op::Put {
                key: "a".into(),
                value: b"x".to_vec(),
                lease: Some(5),
            },
            Op::Get { key: "b".into() },
        ],
        failure: vec![Op::Delete { key: "a".into() }],
    };
    let v = txn_request(&t);
    let c = &v["compare"];
    assert_eq!(c[0]["target"], "VERSION");
    assert_eq!(c[0]["result"], "EQUAL");
    assert_eq!(c[0]["version"], "0");
    assert_eq!(c[1]["target"], "MOD");
    assert_eq!(c[1]["result"], "LESS");
    assert_eq!(c[1]["mod_revision"], "9");
    assert_eq!(c[2]["target"], "CREATE");
    assert_eq!(c[2]["result"], "GREATER");
    assert_eq!(c[2]["create_revision"], "2");
    assert_eq!(c[3]["target"], "LEASE");
    assert_eq!(c[3]["result"], "NOT_EQUAL");
    assert_eq!(c[3]["lease"], "5");
    assert_eq!(c[4]["target"], "VALUE");
    assert_eq!(c[4]["value"], "eA==");
    assert_eq!(v["success"][0]["request_put"]["lease"], "5");
    assert_eq!(v["success"][1]["request_range"]["key"], "Yg==");
    assert_eq!(v["failure"][0]["request_delete_range"]["key"], "YQ==");
}

const HEADER: &str = r#""header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"6","raft_term":"2"}"#;

fn val(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("test JSON")
}

#[test]
fn range_decodes_base64_and_string_int64s_and_absent_zeroes() {
    let v = val(&format!(
        r#"{{{HEADER},"kvs":[{{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE=","lease":"4111120383145659407"}},{{"key":"YS8y","create_revision":5,"mod_revision":5,"version":1}}],"count":"2"}}"#
    ));
    let (kvs, rev) = parse_range(v).expect("parses");
    assert_eq!(rev, 6);
    assert_eq!(kvs.len(), 2);
    assert_eq!(kvs[0].key, "a/1");
    assert_eq!(kvs[0].value, b"v1");
    assert_eq!(kvs[0].lease, 4_111_120_383_145_659_407);
    assert_eq!(kvs[0].version, 1);
    // Numbers are accepted too; an empty value and lease 0 are left out by the server.
    assert_eq!(kvs[1].create_revision, 5);
    assert!(kvs[1].value.is_empty());
    assert_eq!(kvs[1].lease, 0);
    // No kvs at all: a missing key.
    let (none, rev) = parse_range(val(&format!("{{{HEADER}}}"))).expect("parses");
    assert!(none.is_empty());
    assert_eq!(rev, 6);
}

#[test]
fn bad_shapes_are_protocol_errors() {
    let bad = [
        r#"{"kvs":[{"key":"not base64!"}]}"#,
        r#"{"header":{"revision":"six"}}"#,
        r#"{"kvs":"no"}"#,
    ];
    for b in bad {
        assert!(
            matches!(parse_range(val(b)), Err(EtcdError::Protocol(_))),
            "{b}"
        );
    }
    assert!(matches!(
        parse_grant(val(&format!("{{{HEADER}}}"))),
        Err(EtcdError::Protocol(_))
    ));
    assert!(matches!(
        parse_token(val(&format!("{{{HEADER}}}"))),
        Err(EtcdError::Protocol(_))
    ));
}

#[test]
fn lease_answers() {
    let g = val(&format!(
        r#"{{{HEADER},"ID":"4111120383145659401","TTL":"5"}}"#
    ));
    assert_eq!(
        parse_grant(g).expect("grant"),
        (4_111_120_383_145_659_401, 5)
    );
    let alive = val(&format!(
        r#"{{"result":{{{HEADER},"ID":"4111120383145659407","TTL":"30"}}}}"#
    ));
    assert_eq!(parse_keepalive(alive).expect("keepalive"), 30);
    // An unknown or expired lease: the TTL is left out.
    let gone = val(&format!(r#"{{"result":{{{HEADER},"ID":"12345"}}}}"#));
    assert_eq!(parse_keepalive(gone).expect("keepalive"), 0);
    let err = val(
        r#"{"error":{"grpc_code":5,"http_code":404,"message":"etcdserver: requested lease not found","http_status":"Not Found"}}"#,
    );
    assert!(matches!(
        parse_keepalive(err),
        Err(EtcdError::Status { code: 5, .. })
    ));
}

#[test]
fn txn_answers_keep_the_order_of_gets() {
    let won = val(&format!(
        r#"{{{HEADER},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"5"}}}}}},{{"response_range":{{"header":{{"revision":"5"}},"kvs":[{{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="}}],"count":"1"}}}},{{"response_range":{{"header":{{"revision":"5"}}}}}}]}}"#
    ));
    let r = parse_txn(won).expect("txn");
    assert!(r.succeeded);
    assert_eq!(r.revision, 6);
    assert_eq!(r.gets.len(), 2);
    assert_eq!(r.gets[0][0].key, "a/1");
    assert!(r.gets[1].is_empty());
    // `succeeded: false` is left out.
    let lost = val(&format!(
        r#"{{{HEADER},"responses":[{{"response_delete_range":{{"deleted":"1"}}}}]}}"#
    ));
    let r = parse_txn(lost).expect("txn");
    assert!(!r.succeeded);
    assert!(r.gets.is_empty());
}

#[test]
fn both_error_shapes_are_read() {
    let unary = val(
        r#"{"error":"etcdserver: user name is empty","message":"etcdserver: user name is empty","code":3}"#,
    );
    match error_of(&unary) {
        Some(EtcdError::Status { code, message }) => {
            assert_eq!(code, 3);
            assert_eq!(message, "etcdserver: user name is empty");
        }
        other => panic!("{other:?}"),
    }
    let streamed = val(r#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#);
    assert!(matches!(
        error_of(&streamed),
        Some(EtcdError::Status { code: 14, .. })
    ));
    assert!(error_of(&val(&format!("{{{HEADER}}}"))).is_none());
}

#[test]
fn watch_messages() {
    let created = format!(r#"{{"result":{{{HEADER},"created":true}}}}"#);
    assert_eq!(
        parse_watch_line(created.as_bytes()).expect("created"),
        WatchMessage::Created
    );
    let events = format!(
        r#"{{"result":{{{HEADER},"events":[{{"kv":{{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE=","lease":"9"}}}},{{"type":"DELETE","kv":{{"key":"YS8y","mod_revision":"6"}}}}]}}}}"#
    );
    match parse_watch_line(events.as_bytes()).expect("events") {
        WatchMessage::Events { events, more } => {
            assert!(!more);
            assert_eq!(events.len(), 2);
            match &events[0] {
                WatchEvent::Put(kv) => {
                    assert_eq!(kv.key, "a/1");
                    assert_eq!(kv.value, b"v1");
                    assert_eq!(kv.lease, 9);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                events[1],
                WatchEvent::Delete {
                    key: "a/2".into(),
                    mod_revision: 6
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // The answer to a progress request (watch_id -1, no events).
    let progress = format!(r#"{{"result":{{{HEADER},"watch_id":"-1"}}}}"#);
    assert_eq!(
        parse_watch_line(progress.as_bytes()).expect("progress"),
        WatchMessage::Progress { revision: 6 }
    );
    // A fragment: more to come.
    let frag = format!(
        r#"{{"result":{{{HEADER},"fragment":true,"events":[{{"kv":{{"key":"YQ==","mod_revision":"3"}}}}]}}}}"#
    );
    assert!(matches!(
        parse_watch_line(frag.as_bytes()).expect("fragment"),
        WatchMessage::Events { more: true, .. }
    ));
}

#[test]
fn cancelled_watches() {
    let compacted = r#"{"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#;
    assert_eq!(
        parse_watch_line(compacted.as_bytes()).expect("compacted"),
        WatchMessage::Canceled {
            compact_revision: 5,
            reason: String::new()
        }
    );
    // A refused token: created and cancelled in one message.
    let refused = r#"{"result":{"header":{"revision":"9"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#;
    match parse_watch_line(refused.as_bytes()).expect("refused") {
        WatchMessage::Canceled {
            compact_revision: 0,
            reason,
        } => assert!(reason.contains("invalid auth token"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let err = r#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#;
    assert!(matches!(
        parse_watch_line(err.as_bytes()),
        Err(EtcdError::Status { code: 14, .. })
    ));
    assert!(matches!(
        parse_watch_line(b"{\"result\":"),
        Err(EtcdError::Protocol(_))
    ));
    assert!(matches!(
        parse_watch_line(br#"{"result":{"events":[{"type":"PATCH","kv":{}}]}}"#),
        Err(EtcdError::Protocol(_))
    ));
}
