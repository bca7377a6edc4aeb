//! The ingest surface: a signed lead is delivered as mapped; bad requests get JSON errors.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn signed_lead_is_delivered_exactly_as_mapped() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start(&dir.path().join("m"), &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();

    let resp = post_signed(&client, &hub, lead_body("L-1")).await;
    assert_eq!(resp.status(), 200);
    let ack: serde_json::Value = resp.json().await.expect("json ack");
    assert_eq!(ack["status"], "accepted");
    let event_id = ack["event_id"].as_str().expect("event id").to_string();
    assert!(event_id.starts_with("evt_"));

    let got = dest.wait_for(1, 10).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/contacts");
    assert_eq!(
        r.json(),
        json!({
            "email": "ann.lee@example.com",
            "first_name": "Ann",
            "last_name": "Marie Lee",
            "phone": "+14155550132",
            "utm_source": "direct",
            "amount": 1250.5
        })
    );
    assert_eq!(r.header("authorization").as_deref(), Some("Bearer crm-token-123"));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.header("x-lead-id").as_deref(), Some("L-1"));
    assert_eq!(r.header("x-hub-event-id").as_deref(), Some(event_id.as_str()));
    assert!(r.header("idempotency-key").is_some_and(|k| k.starts_with("dlv_")));
    // Nothing more arrives.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(dest.received().len(), 1);

    hub.stop();
    let (code, out) = hub_cli(&[
        "events",
        "show",
        &event_id,
        "--store",
        dir.path().join("hub.redb").to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["status"], "delivered");
    assert_eq!(shown["deliveries"][0]["attempts"], 1);
    assert!(!out.contains("crm-token-123"), "credentials must not be stored");
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_nothing_is_queued() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start(&dir.path().join("m"), &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let body = lead_body("L-2");

    let check = |status: u16, code: &'static str| {
        move |r: reqwest::Response| async move {
            assert_eq!(r.status().as_u16(), status);
            let v: serde_json::Value = r.json().await.expect("json error body");
            assert_eq!(v["error"]["code"], code, "{v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    };
    let post = |path: &str| client.post(hub.url(path)).header("content-type", "application/json");

    // Wrong signature, missing signature.
    check(401, "signature_invalid")(
        post("/hooks/leads")
            .header("x-signature", sign(b"other"))
            .body(body.clone())
            .send()
            .await
            .expect("send"),
    )
    .await;
    check(401, "signature_missing")(post("/hooks/leads").body(body.clone()).send().await.expect("send"))
        .await;
    // Unknown source, unknown path, wrong method.
    check(404, "unknown_source")(post("/hooks/nope").body(body.clone()).send().await.expect("send")).await;
    check(404, "not_found")(client.get(hub.url("/elsewhere")).send().await.expect("send")).await;
    check(405, "method_not_allowed")(client.put(hub.url("/hooks/leads")).send().await.expect("send")).await;
    // Endpoint checks (Mailchimp GETs, Mandrill HEADs the URL before using it) answer 200.
    assert_eq!(client.get(hub.url("/hooks/leads")).send().await.expect("send").status(), 200);
    assert_eq!(client.head(hub.url("/hooks/leads")).send().await.expect("send").status(), 200);
    check(404, "unknown_source")(client.get(hub.url("/hooks/nope")).send().await.expect("send")).await;
    // Over the source's 4096-byte cap.
    let big = vec![b' '; 5000];
    check(413, "payload_too_large")(
        post("/hooks/leads").header("x-signature", sign(&big)).body(big).send().await.expect("send"),
    )
    .await;
    // Signed, but a content type we do not read, and JSON that does not parse.
    let csv = b"a,b".to_vec();
    check(415, "unsupported_media_type")(
        client
            .post(hub.url("/hooks/leads"))
            .header("content-type", "text/csv")
            .header("x-signature", sign(&csv))
            .body(csv)
            .send()
            .await
            .expect("send"),
    )
    .await;
    let broken = b"{\"id\": ".to_vec();
    check(400, "invalid_body")(
        post("/hooks/leads").header("x-signature", sign(&broken)).body(broken).send().await.expect("send"),
    )
    .await;

    let health = client.get(hub.url("/healthz")).send().await.expect("health");
    assert_eq!(health.status(), 200);

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(dest.received().is_empty(), "rejected requests must not be delivered");
    hub.stop();
    let (code, out) = hub_cli(&[
        "events",
        "list",
        "--json",
        "--store",
        dir.path().join("hub.redb").to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "", "rejected requests must not be stored: {out}");
}

#[tokio::test]
async fn form_encoded_bodies_nest_and_unmatched_events_are_filtered() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("amo.yaml"),
        format!(
            r#"source:
  id: amo
  description: a test sender that cannot sign
  verify: none
routes:
  - id: status-change
    when: {{path: "$.body.leads.status[0].status_id", eq: 142}}
    map:
      lead: {{path: "$.body.leads.status[0].id", type: integer}}
      won: true
    to: {{url: "{}", allow_net: [127.0.0.0/8]}}
"#,
            dest.url("/won")
        ),
    )
    .expect("write");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let form = |status: &str| {
        format!(
            "leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D={status}&account%5Bsubdomain%5D=test"
        )
    };
    let send = |b: String| {
        client
            .post(hub.url("/hooks/amo"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(b)
            .send()
    };
    assert_eq!(send(form("142")).await.expect("send").status(), 200);
    let filtered: serde_json::Value = send(form("143")).await.expect("send").json().await.expect("json");
    let got = dest.wait_for(1, 10).await;
    assert_eq!(got[0].json(), json!({"lead": 25399013, "won": true}));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(dest.received().len(), 1);
    hub.stop();
    let id = filtered["event_id"].as_str().expect("id");
    let (_, out) =
        hub_cli(&["events", "show", id, "--store", dir.path().join("hub.redb").to_str().expect("utf8")]);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["status"], "filtered");
}

/// `ip_allow` behind a reverse proxy: the client address comes from `X-Forwarded-For` only when
/// the connection is from a proxy named by `--trusted-proxy`; anyone else's header is ignored.
#[tokio::test(flavor = "multi_thread")]
async fn ip_allow_reads_forwarded_for_only_from_trusted_proxies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("office.yaml"),
        "source:\n  id: office\n  description: posts from the office network only\n  verify: none\n  ip_allow: [203.0.113.0/24]\nroutes:\n  - id: sink\n    map: {seen: {path: $.body.seen, default: yes}}\n    to: {url: \"http://127.0.0.1:9/sink\"}\n",
    )
    .expect("write mapping");
    let client = reqwest::Client::new();
    let post = |hub: &Hub, forwarded: &str| {
        client
            .post(hub.url("/hooks/office"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", forwarded)
            .body("{}")
            .send()
    };

    // No trusted proxy: the header is the client's word and is ignored (the peer is 127.0.0.1).
    let hub = Hub::start(&dir, &tmp.path().join("a.redb"));
    let r = post(&hub, "203.0.113.9").await.expect("post");
    assert_eq!(r.status(), 403);
    hub.stop();

    // Loopback is the trusted proxy: the address it appended decides.
    let hub =
        Hub::start_with_env(&dir, &tmp.path().join("b.redb"), &[("HUB_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let r = post(&hub, "203.0.113.9").await.expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let id = r.json::<serde_json::Value>().await.expect("json")["event_id"].as_str().expect("id").to_string();
    // A forged first entry does not help: the proxy's own (last) entry is outside the list.
    let r = post(&hub, "203.0.113.9, 198.51.100.7").await.expect("post");
    assert_eq!(r.status(), 403);
    // The stored remote address is the client's, not the proxy's.
    let (code, out) = hub_cli(&["events", "show", &id, "--store", hub.store.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("203.0.113.9"), "{out}");
    hub.stop();
}
