//! Delivery: retries until the destination recovers, dead-letters permanent failures, replays,
//! and delivers a retried webhook once.

use crate::support::*;

fn store_arg(dir: &tempfile::TempDir) -> String {
    dir.path().join("hub.redb").to_str().expect("utf8").to_string()
}

#[tokio::test]
async fn failing_destination_is_retried_and_gets_the_event_once_it_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    // Two server errors and a rate limit, then success.
    dest.script(&[503, 500, 429], 200);
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start(&dir.path().join("m"), &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let ack: serde_json::Value =
        post_signed(&client, &hub, lead_body("R-1")).await.json().await.expect("ack");

    let got = dest.wait_for(4, 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let got_after = dest.received();
    assert_eq!(got_after.len(), 4, "exactly one successful delivery after three failures");
    // Every attempt carried the same body and idempotency key.
    let key = got[0].header("idempotency-key");
    assert!(got.iter().all(|r| r.header("idempotency-key") == key && r.body == got[0].body));

    hub.stop();
    let (_, out) =
        hub_cli(&["events", "show", ack["event_id"].as_str().expect("id"), "--store", &store_arg(&dir)]);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["status"], "delivered");
    assert_eq!(shown["deliveries"][0]["attempts"], 4);
}

#[tokio::test]
async fn permanent_failure_is_dead_lettered_and_replay_delivers_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    dest.script(&[], 422);
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let mappings = dir.path().join("m");
    let store = dir.path().join("hub.redb");
    let hub = Hub::start(&mappings, &store);
    let client = reqwest::Client::new();
    let ack: serde_json::Value =
        post_signed(&client, &hub, lead_body("D-1")).await.json().await.expect("ack");
    let id = ack["event_id"].as_str().expect("id").to_string();
    dest.wait_for(1, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(dest.received().len(), 1, "a 422 is not retried");
    hub.stop();

    let (code, out) = hub_cli(&["events", "list", "--store", &store_arg(&dir)]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("dead") && out.contains("HTTP 422"), "{out}");
    let (_, out) = hub_cli(&["events", "list", "--status", "dead", "--json", "--store", &store_arg(&dir)]);
    let line: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("one dead event")).expect("json");
    assert_eq!(line["attempts"], 1);

    // The destination is fixed; replay the event.
    dest.script(&[], 200);
    let (code, out) = hub_cli(&["replay", &id, "--store", &store_arg(&dir)]);
    assert_eq!(code, 0, "{out}");
    let hub = Hub::start(&mappings, &store);
    dest.wait_for(2, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    hub.stop();
    let (_, out) = hub_cli(&["events", "show", &id, "--store", &store_arg(&dir)]);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["status"], "delivered");
    assert_eq!(shown["dispatches"], 2);
}

#[tokio::test]
async fn retried_webhook_with_the_same_dedup_key_is_stored_and_delivered_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start(&dir.path().join("m"), &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let first: serde_json::Value =
        post_signed(&client, &hub, lead_body("DUP-1")).await.json().await.expect("ack");
    let mut acks = Vec::new();
    for _ in 0..3 {
        let r = post_signed(&client, &hub, lead_body("DUP-1")).await;
        assert_eq!(r.status(), 200);
        acks.push(r.json::<serde_json::Value>().await.expect("ack"));
    }
    for a in &acks {
        assert_eq!(a["status"], "duplicate");
        assert_eq!(a["event_id"], first["event_id"]);
    }
    dest.wait_for(1, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(dest.received().len(), 1);
    hub.stop();
    let (_, out) = hub_cli(&["events", "list", "--json", "--store", &store_arg(&dir)]);
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[tokio::test]
async fn events_and_replay_work_while_the_server_holds_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    dest.script(&[], 400);
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start(&dir.path().join("m"), &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let ack: serde_json::Value =
        post_signed(&client, &hub, lead_body("LIVE-1")).await.json().await.expect("ack");
    let id = ack["event_id"].as_str().expect("id").to_string();
    dest.wait_for(1, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let store = store_arg(&dir);
    let (code, out) = hub_cli(&["events", "list", "--json", "--store", &store]);
    assert_eq!(code, 0, "{out}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().expect("a line")).expect("json");
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["status"], "dead");

    dest.script(&[], 200);
    let (code, out) = hub_cli(&["replay", &id, "--store", &store]);
    assert_eq!(code, 0, "{out}");
    dest.wait_for(2, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (code, out) = hub_cli(&["events", "show", &id, "--store", &store]);
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["status"], "delivered");
    hub.stop();
}

#[tokio::test]
async fn a_secret_destination_url_is_used_to_send_but_never_stored() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("alert.yaml"),
        "source:\n  id: alert\n  description: internal alerts, unsigned\n  verify: none\nroutes:\n  - id: slack\n    map: {text: \"{{body.msg}}\"}\n    to: {url: env:SLACK_WEBHOOK_URL, allow_net: [127.0.0.0/8]}\n",
    )
    .expect("write");
    let secret_url = dest.url("/services/T000/B000/very-secret");
    let hub = Hub::start_with_env(&m, &dir.path().join("hub.redb"), &[("SLACK_WEBHOOK_URL", &secret_url)]);
    let client = reqwest::Client::new();
    let ack: serde_json::Value = client
        .post(hub.url("/hooks/alert"))
        .header("content-type", "application/json")
        .body(r#"{"msg": "hi"}"#)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("ack");
    let got = dest.wait_for(1, 10).await;
    assert_eq!(got[0].path, "/services/T000/B000/very-secret");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    hub.stop();
    let (_, out) =
        hub_cli(&["events", "show", ack["event_id"].as_str().expect("id"), "--store", &store_arg(&dir)]);
    assert!(out.contains("env:SLACK_WEBHOOK_URL") && !out.contains("very-secret"), "{out}");
}

/// `--allow-net` grants a network; only the route that names it with `to.allow_net` reaches it.
#[tokio::test]
async fn only_the_route_that_asks_for_a_private_network_reaches_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    let yaml = |extra: &str| {
        format!(
            "source:\n  id: fan\n  description: unsigned test sender\n  verify: none\nroutes:\n  - id: onprem\n    map: {{n: 1}}\n    to: {{url: \"{}\", allow_net: [127.0.0.1]}}\n  - id: saas\n    map: {{n: 2}}\n    to: {{url: \"{}\"{extra}}}\n",
            dest.url("/onprem"),
            dest.url("/saas"),
        )
    };
    std::fs::write(m.join("fan.yaml"), yaml("")).expect("write");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let ack: serde_json::Value = reqwest::Client::new()
        .post(hub.url("/hooks/fan"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("ack");
    let got = dest.wait_for(1, 10).await;
    assert_eq!(got[0].path, "/onprem");
    let id = ack["event_id"].as_str().expect("id").to_string();
    let mut shown = serde_json::Value::Null;
    for _ in 0..50 {
        let (code, out) = hub_cli(&["events", "show", &id, "--store", &store_arg(&dir)]);
        assert_eq!(code, 0, "{out}");
        shown = serde_json::from_str(&out).expect("json");
        let done = shown["deliveries"].as_array().is_some_and(|d| {
            d.len() == 2 && d.iter().all(|d| d["status"] == "delivered" || d["status"] == "dead")
        });
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let by_route = |r: &str| {
        shown["deliveries"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["route"] == r))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_route("onprem")["status"], "delivered", "{shown}");
    let saas = by_route("saas");
    assert_eq!(saas["status"], "dead", "{shown}");
    assert!(saas["last_error"].as_str().is_some_and(|e| e.contains("allow_net")), "{shown}");
    assert_eq!(dest.received().len(), 1, "the route without allow_net never reached the sink");
    hub.stop();

    // A route asking for more than the hub grants (here 127.0.0.0/8) fails the start at its line.
    std::fs::write(m.join("fan.yaml"), yaml(", allow_net: [10.0.0.0/8]")).expect("write");
    let out = std::process::Command::new(hub_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--allow-net",
            "127.0.0.0/8",
        ])
        .arg("--store")
        .arg(dir.path().join("hub.redb"))
        .arg("--mappings")
        .arg(&m)
        .output()
        .expect("run hub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("fan.yaml:11:") && stderr.contains("10.0.0.0/8") && stderr.contains("--allow-net"),
        "{stderr}"
    );
}

/// `hub mappings push --store local` puts a new set in force in a running `hub serve`, recorded
/// as the next version in its store; a broken set is refused at its line and changes nothing.
#[tokio::test]
async fn a_mapping_set_pushed_to_a_running_hub_is_in_force_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    lead_mappings(&m, &dest.url("/v1"), "");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let version = |hub: &Hub| {
        let (url, token) = (hub.admin_url("/admin/mappings"), hub.admin_token());
        async move {
            let v: serde_json::Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("admin")
                .json()
                .await
                .expect("json");
            v["version"].as_u64()
        }
    };
    assert_eq!(version(&hub).await, Some(1), "the set it started with is version 1");

    let next = dir.path().join("next");
    lead_mappings(&next, &dest.url("/v2"), "");
    let store = store_arg(&dir);
    let (code, out) = hub_cli(&[
        "mappings",
        "push",
        "--store",
        "local",
        "--hub-store",
        &store,
        next.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pushed mapping set version 2"), "{out}");
    post_signed(&client, &hub, lead_body("P-1")).await;
    let got = dest.wait_for(1, 10).await;
    assert_eq!(got[0].path, "/v2", "the pushed set is in force");
    // What the hub did, counted on the admin listener.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let metrics = reqwest::Client::new()
        .get(hub.admin_url("/admin/metrics"))
        .bearer_auth(hub.admin_token())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("hub_webhooks_accepted_total{source=\"leads\"} 1"), "{metrics}");
    assert!(metrics.contains("hub_attempts_total{route=\"crm\",outcome=\"delivered\"} 1"), "{metrics}");

    std::fs::write(next.join("leads.yaml"), "source:\n  id: leads\n  bogus: 1\nroutes: []\n").expect("write");
    let (code, out) = hub_cli(&[
        "mappings",
        "push",
        "--store",
        "local",
        "--hub-store",
        &store,
        next.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("leads.yaml:3:") && out.contains("nothing pushed"), "{out}");
    assert_eq!(version(&hub).await, Some(2));
    hub.stop();
}
