//! Crash safety: what was answered 2xx is delivered after a kill -9 and restart.

use crate::support::*;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
async fn pending_work_survives_kill_9_and_is_delivered_after_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    // The destination is down (503) while the hub runs the first time.
    dest.script(&[], 503);
    let m = dir.path().join("m");
    let store = dir.path().join("hub.redb");
    lead_mappings(&m, &dest.url("/contacts"), "");
    let hub = Hub::start(&m, &store);
    let client = reqwest::Client::new();
    let mut ids = HashSet::new();
    for i in 0..5 {
        let ack: serde_json::Value =
            post_signed(&client, &hub, lead_body(&format!("K-{i}"))).await.json().await.expect("ack");
        ids.insert(ack["event_id"].as_str().expect("id").to_string());
    }
    dest.wait_for(5, 10).await;
    hub.kill9();

    dest.script(&[], 200);
    let before = dest.received().len();
    let hub = Hub::start(&m, &store);
    // Retries are due within max_delay (300ms) of the last failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ok: HashSet<String> =
            dest.received()[before..].iter().filter_map(|r| r.header("x-hub-event-id")).collect();
        if ids.is_subset(&ok) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not all events delivered after restart: {ok:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop();
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_webhook() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    let store = dir.path().join("hub.redb");
    lead_mappings(&m, &dest.url("/contacts"), "");
    let hub = Hub::start(&m, &store);
    let client = reqwest::Client::new();
    let url = hub.url("/hooks/leads");

    // 8 senders post as fast as they can; the hub is killed while they do, once a meaningful
    // number of webhooks was acknowledged (however slow the machine is).
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..8 {
        let client = client.clone();
        let url = url.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200 {
                let body = lead_body(&format!("S{s}-{i}"));
                let sig = sign(&body);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-signature", sig)
                    .body(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        acked.push(v["event_id"].as_str().unwrap_or_default().to_string());
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    let started = std::time::Instant::now();
    while count.load(std::sync::atomic::Ordering::Relaxed) < 100
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.kill9();
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.expect("sender"));
    }
    assert!(acked.len() > 10, "the load test sent too little to mean anything: {}", acked.len());

    let hub = Hub::start(&m, &store);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: HashSet<String> =
            dest.received().iter().filter_map(|r| r.header("x-hub-event-id")).collect();
        let missing = acked.difference(&delivered).count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} acknowledged events never delivered",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hub.stop();
    eprintln!("kill -9 under load: {} acknowledged, all delivered", acked.len());
}
