use std::time::Duration;

use lifeline::health::Status;

use crate::common::*;

#[tokio::test]
async fn tcp_check_against_a_real_listener_becomes_healthy() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let a = TestAgent::start(&agent_toml(&tcp_check("t", addr, "interval = \"100ms\"\n"))).await;
    a.wait_status("t", Status::Healthy, Duration::from_secs(5))
        .await;
    a.stop().await;
}
