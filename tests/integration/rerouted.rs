//! A delivery rendered for one destination never carries another destination's credentials:
//! after a mapping change moves a route (new URL and token) while a delivery is retrying, the
//! old host gets no further attempt and the new token goes nowhere but the new host.

use crate::support::*;
use std::time::{Duration, Instant};

fn mapping(dir: &std::path::Path, dest: &str, token_env: &str) {
    let yaml = format!(
        r#"source:
  id: moved
  verify:
    hmac: {{algorithm: sha256, header: X-Signature, prefix: "sha256=", secret: env:LEAD_SECRET}}
routes:
  - id: crm
    map: {{id: "{{{{body.id}}}}"}}
    to:
      url: {dest}
      allow_net: [127.0.0.0/8]
      auth: {{bearer: env:{token_env}}}
    retry: {{initial_delay: 200ms, max_delay: 300ms, jitter: false, max_attempts: 50, timeout: 2s}}
"#
    );
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("moved.yaml"), yaml).expect("write");
}

#[tokio::test]
async fn a_moved_route_sends_no_credentials_to_the_old_host_and_replay_reaches_the_new_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = Destination::start().await;
    let new = Destination::start().await;
    old.script(&[], 503);
    let m = dir.path().join("m");
    let store = dir.path().join("hub.redb");
    mapping(&m, &old.url("/contacts"), "OLD_TOKEN");
    let env = [("OLD_TOKEN", "old-token"), ("NEW_TOKEN", "new-token")];
    let hub = Hub::start_with_env(&m, &store, &env);
    let client = reqwest::Client::new();
    let ack: serde_json::Value = client
        .post(hub.url("/hooks/moved"))
        .header("content-type", "application/json")
        .header("x-signature", sign(br#"{"id": "m-1"}"#))
        .body(r#"{"id": "m-1"}"#)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("ack");
    let id = ack["event_id"].as_str().expect("id").to_string();
    old.wait_for(2, 10).await;
    hub.stop();

    // The route now goes to another host with another token; the delivery is still retrying.
    mapping(&m, &new.url("/contacts"), "NEW_TOKEN");
    let before = old.received().len();
    let hub = Hub::start_with_env(&m, &store, &env);
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let v: serde_json::Value = client
            .get(hub.admin_url(&format!("/admin/events/{id}")))
            .bearer_auth(hub.admin_token())
            .send()
            .await
            .expect("show")
            .json()
            .await
            .expect("json");
        if v["status"] == "dead" {
            break v;
        }
        assert!(Instant::now() < deadline, "the moved delivery is still {}", v["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = shown["deliveries"][0]["last_error"].as_str().expect("reason");
    assert!(err.contains("now sends to") && err.contains(&new.addr.to_string()), "{err}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = old.received();
    assert_eq!(after.len(), before, "no attempt went to the old host after the change");
    assert!(after.iter().all(|r| r.header("authorization").as_deref() == Some("Bearer old-token")));
    assert!(new.received().is_empty(), "nothing is sent to the new host until the event is replayed");

    let r = client
        .post(hub.admin_url(&format!("/admin/events/{id}/replay")))
        .bearer_auth(hub.admin_token())
        .send()
        .await
        .expect("replay");
    assert_eq!(r.status(), 200);
    let got = new.wait_for(1, 10).await;
    assert_eq!(got[0].header("authorization").as_deref(), Some("Bearer new-token"));
    assert_eq!(got[0].json(), serde_json::json!({"id": "m-1"}));
    hub.stop();
}
