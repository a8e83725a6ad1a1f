//! Options validation and what an HTTP answer means for failover (no server needed; the
//! real cluster is in tests/cluster/).

use super::*;

fn opts(endpoints: &[&str]) -> EtcdOptions {
    EtcdOptions {
        endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn endpoints_are_http_origins() {
    assert_eq!(
        normalize_endpoint("http://127.0.0.1:2379/").expect("ok"),
        "http://127.0.0.1:2379"
    );
    assert_eq!(
        normalize_endpoint("https://etcd.example:443").expect("ok"),
        "https://etcd.example"
    );
    for bad in [
        "127.0.0.1:2379",
        "ftp://h:1",
        "http://h:1/v3",
        "http://h:1/?x=1",
        "http://",
        "not a url",
    ] {
        assert!(
            matches!(normalize_endpoint(bad), Err(EtcdError::Config(_))),
            "{bad}"
        );
    }
    let Err(EtcdError::Config(m)) = normalize_endpoint("http://root:hunter2-pw@h:1") else {
        panic!("credentials in the URL accepted");
    };
    assert!(!m.contains("hunter2-pw"), "{m}");
}

#[test]
fn new_validates_options() {
    assert!(Etcd::new(&opts(&["http://127.0.0.1:2379", "https://h:2379"])).is_ok());
    assert!(matches!(Etcd::new(&opts(&[])), Err(EtcdError::Config(_))));
    let mut o = opts(&["http://127.0.0.1:2379"]);
    o.request_timeout = Duration::ZERO;
    assert!(matches!(Etcd::new(&o), Err(EtcdError::Config(_))));
    let mut o = opts(&["http://127.0.0.1:2379"]);
    o.password = Some(Secret::new("pw".into()));
    assert!(matches!(Etcd::new(&o), Err(EtcdError::Config(_))));
    let mut o = opts(&["https://127.0.0.1:2379"]);
    o.cert_file = Some("/nonexistent.crt".into());
    assert!(matches!(Etcd::new(&o), Err(EtcdError::Config(_))));
    let mut o = opts(&["https://127.0.0.1:2379"]);
    o.ca_file = Some("/nonexistent-ca.pem".into());
    assert!(matches!(Etcd::new(&o), Err(EtcdError::Config(_))));
}

#[test]
fn endpoint_starts_with_the_first() {
    let e = Etcd::new(&opts(&["http://127.0.0.1:1", "http://127.0.0.1:2"])).expect("client");
    assert_eq!(e.endpoint(), "http://127.0.0.1:1");
}

fn next(r: Result<Value, Failure>) -> String {
    match r {
        Err(Failure::Next(m)) => m,
        Err(Failure::Stop(e)) => panic!("stopped: {e}"),
        Ok(v) => panic!("ok: {v}"),
    }
}

fn stop(r: Result<Value, Failure>) -> EtcdError {
    match r {
        Err(Failure::Stop(e)) => e,
        Err(Failure::Next(m)) => panic!("next: {m}"),
        Ok(v) => panic!("ok: {v}"),
    }
}

#[test]
fn answers_that_fail_over() {
    use http::StatusCode as S;
    let m = next(answer(
        "/v3/kv/put",
        S::SERVICE_UNAVAILABLE,
        br#"{"error":"etcdserver: leader changed","message":"etcdserver: leader changed","code":14}"#,
    ));
    assert!(m.contains("503") && m.contains("leader changed"), "{m}");
    next(answer("/v3/kv/put", S::BAD_GATEWAY, b"<html>proxy</html>"));
    // "no leader" fails over whatever the HTTP status says.
    next(answer(
        "/v3/kv/range",
        S::OK,
        br#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#,
    ));
}

#[test]
fn answers_that_stop() {
    use http::StatusCode as S;
    let e = stop(answer(
        "/v3/auth/authenticate",
        S::BAD_REQUEST,
        br#"{"error":"etcdserver: authentication failed, invalid user ID or password","message":"etcdserver: authentication failed, invalid user ID or password","code":3}"#,
    ));
    assert!(matches!(e, EtcdError::Status { code: 3, .. }), "{e}");
    let e = stop(answer(
        "/v3/kv/range",
        S::UNAUTHORIZED,
        br#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#,
    ));
    assert!(e.is_token_error());
    assert!(matches!(
        stop(answer("/v3/kv/range", S::OK, b"{\"kvs\":")),
        EtcdError::Protocol(_)
    ));
    assert!(matches!(
        stop(answer("/v3/kv/range", S::NOT_FOUND, b"404 page not found")),
        EtcdError::Protocol(_)
    ));
    assert!(matches!(
        stop(answer("/v3/kv/range", S::NOT_FOUND, b"{}")),
        EtcdError::Status { .. }
    ));
    assert!(answer("/v3/kv/range", S::OK, b"{}").is_ok());
}

#[test]
fn cancel_reasons_name_their_code() {
    assert_eq!(
        watch::grpc_code_in(
            "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
        ),
        16
    );
    assert_eq!(
        watch::grpc_code_in("rpc error: code = InvalidArgument desc = x"),
        3
    );
    assert_eq!(watch::grpc_code_in("something else"), 1);
}

#[test]
fn only_unreachable_is_unreachable() {
    assert!(EtcdError::Unreachable("x".into()).is_unreachable());
    assert!(
        !EtcdError::Status {
            code: 14,
            message: "x".into()
        }
        .is_unreachable()
    );
    assert!(!EtcdError::Compacted(3).is_unreachable());
}
