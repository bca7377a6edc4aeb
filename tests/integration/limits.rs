//! `hub serve` under slow and greedy clients: half-sent heads and trickled bodies are cut off
//! after their deadlines while normal senders keep being answered; over the in-flight cap
//! requests are shed with 503.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr_of(hub: &Hub) -> String {
    hub.base.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes (or `limit` passes); returns what was read, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), false),
        }
    }
}

/// Sends a full head announcing `len` bytes, then one byte every `every` until told to stop.
async fn trickle(addr: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /hooks/leads HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_slow_connections_do_not_stop_normal_senders_and_are_cut_off() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start_with_env(
        &dir.path().join("m"),
        &dir.path().join("hub.redb"),
        &[("HUB_HEADER_TIMEOUT", "2s"), ("HUB_BODY_TIMEOUT", "3s")],
    );
    let addr = addr_of(&hub);

    // 450 clients that never finish their request head, 50 that trickle a body.
    let mut heads = Vec::new();
    for _ in 0..450 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(b"POST /hooks/leads HTTP/1.1\r\nHost: x\r\nContent-Type: appl").await.expect("half head");
        heads.push(s);
    }
    let mut bodies = Vec::new();
    for _ in 0..50 {
        bodies.push(trickle(&addr, 4000).await);
    }
    let started = Instant::now();
    let keep_trickling = {
        let mut bodies = std::mem::take(&mut bodies);
        tokio::spawn(async move {
            for _ in 0..40 {
                for b in &mut bodies {
                    let _ = b.write_all(b" ").await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bodies
        })
    };

    // Meanwhile normal senders are answered promptly.
    let client = reqwest::Client::new();
    for i in 0..20 {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            post_signed(&client, &hub, lead_body(&format!("OK-{i}"))),
        )
        .await
        .expect("a normal sender is answered within 2 s");
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    dest.wait_for(20, 10).await;

    // The half heads are disconnected after the header timeout.
    for s in &mut heads {
        let (_, closed) = read_until_closed(s, Duration::from_secs(8)).await;
        assert!(closed, "a half-sent head was still open after {:?}", started.elapsed());
    }
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed before the header timeout");
    // The trickled bodies get 408 request_timeout and the connection closes.
    let mut bodies = keep_trickling.await.expect("trickler");
    for s in &mut bodies {
        let (got, closed) = read_until_closed(s, Duration::from_secs(8)).await;
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("request_timeout"), "{got}");
        assert!(closed);
    }
    hub.stop();
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_are_shed_with_503() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start_with_env(
        &dir.path().join("m"),
        &dir.path().join("hub.redb"),
        &[("HUB_MAX_IN_FLIGHT", "2"), ("HUB_BODY_TIMEOUT", "3s")],
    );
    let addr = addr_of(&hub);
    let _a = trickle(&addr, 100).await;
    let _b = trickle(&addr, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = post_signed(&reqwest::Client::new(), &hub, lead_body("SHED-1")).await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "overloaded");
    // Once the slow ones are cut off, senders get through again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = post_signed(&reqwest::Client::new(), &hub, lead_body("SHED-2")).await;
    assert_eq!(r.status(), 200);
    hub.stop();
}

#[tokio::test]
async fn over_the_connection_cap_new_clients_wait_until_a_connection_closes() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start_with_env(
        &dir.path().join("m"),
        &dir.path().join("hub.redb"),
        &[("HUB_MAX_CONNECTIONS", "3"), ("HUB_HEADER_TIMEOUT", "2s")],
    );
    let addr = addr_of(&hub);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(b"POST /hooks/leads HTTP/1.1\r\n").await.expect("half head");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let r = post_signed(&reqwest::Client::new(), &hub, lead_body("CAP-1")).await;
    assert_eq!(r.status(), 200);
    // Served only once the held connections were cut at their header timeout.
    assert!(t.elapsed() >= Duration::from_millis(1200), "served after {:?}", t.elapsed());
    hub.stop();
}
