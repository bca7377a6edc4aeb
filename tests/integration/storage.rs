//! A full disk: ingest answers 503 `store_unavailable` (never 2xx), `/healthz` answers 503 with
//! the reason, and once space is back the same process accepts again and delivers everything it
//! acknowledged.
//!
//! The disk is "full" through a file-size limit on the running `hub serve` (`prlimit --fsize`,
//! no root needed): a write that would grow the store file fails with EFBIG, as a write to a full
//! disk fails with ENOSPC. Raising the limit is the space coming back.

use crate::support::*;
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// Sets the soft file-size limit of a running process (`None`: unlimited).
fn set_fsize(pid: u32, soft: Option<u64>) {
    let soft = soft.map_or_else(|| "unlimited".to_string(), |b| b.to_string());
    let out = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .output()
        .expect("prlimit (util-linux) must be installed to run this test");
    assert!(out.status.success(), "prlimit failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn padded_lead(id: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&lead_body(id)).expect("json");
    v["pad"] = serde_json::Value::String("x".repeat(3_000));
    serde_json::to_vec(&v).expect("json")
}

async fn health(client: &reqwest::Client, hub: &Hub) -> (u16, serde_json::Value) {
    let r = client.get(hub.url("/healthz")).send().await.expect("healthz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("healthz json"))
}

#[tokio::test]
async fn a_full_disk_answers_503_and_the_store_recovers_without_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    let store = dir.path().join("hub.redb");
    lead_mappings(&m, &dest.url("/contacts"), "");
    let hub = Hub::start(&m, &store);
    let client = reqwest::Client::new();
    let pid = hub.child.id();
    assert_eq!(health(&client, &hub).await.0, 200);

    // The store file may not grow any more.
    let size = std::fs::metadata(&store).expect("store file").len();
    set_fsize(pid, Some(size));

    let mut acked = HashSet::new();
    let mut refused = None;
    for i in 0..20_000 {
        let r = post_signed(&client, &hub, padded_lead(&format!("F-{i}"))).await;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("json answer");
        if status == 200 {
            acked.insert(body["event_id"].as_str().expect("id").to_string());
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the store filled up");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(!acked.is_empty(), "some webhooks were stored before the disk filled");

    // While the disk stays full, health says so (the hub keeps trying the store, so a write may
    // briefly succeed; every webhook either fails again or is truly stored).
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let (code, h) = health(&client, &hub).await;
        if code == 503 {
            assert_eq!(h["store"], "unavailable", "{h}");
            assert_eq!(h["error"]["code"], "store_unavailable", "{h}");
            break h["reason"].as_str().unwrap_or_default().to_string();
        }
        let r = post_signed(&client, &hub, padded_lead(&format!("G-{}", acked.len()))).await;
        if r.status() == 200 {
            let b: serde_json::Value = r.json().await.expect("json");
            acked.insert(b["event_id"].as_str().expect("id").to_string());
        }
        assert!(Instant::now() < deadline, "healthz never reported the full store: {h}");
    };
    assert!(reason.contains("write"), "the reason names the failing writes: {reason}");
    for i in 0..3 {
        let r = post_signed(&client, &hub, padded_lead(&format!("H-{i}"))).await;
        assert_ne!(r.status().as_u16() / 100, 2, "nothing is acknowledged while the disk is full");
    }

    // Space is back: the same process accepts again, and health recovers.
    set_fsize(pid, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = post_signed(&client, &hub, padded_lead(&format!("R-{}", acked.len()))).await;
        if r.status() == 200 {
            let b: serde_json::Value = r.json().await.expect("json");
            acked.insert(b["event_id"].as_str().expect("id").to_string());
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not recover: {}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, h) = health(&client, &hub).await;
        if code == 200 {
            assert_eq!(h["store"], "ok", "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "healthz did not recover: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every acknowledged webhook is delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> =
            dest.received().iter().filter_map(|r| r.header("x-hub-event-id")).collect();
        let missing: Vec<_> = acked.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged webhooks never delivered, e.g. {:?}",
            missing.len(),
            acked.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("full disk: {} acknowledged, all delivered after space came back", acked.len());
    hub.stop();
}
