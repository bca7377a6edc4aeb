//! The admin listener: separate from the public one, loopback only, bearer token, own `Host`,
//! no proxied or browser requests; the CLI finds it without flags.

use crate::support::*;
use serde_json::Value;

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_answers_only_its_own_listener_with_the_token_and_its_own_host() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let hub = Hub::start(&dir.path().join("m"), &dir.path().join("hub.redb"));
    let token = hub.admin_token();
    let bearer = format!("Bearer {token}");
    assert!(token.len() >= 64, "a 32-byte token, hex: {token}");

    // The public listener does not know the admin routes, whoever asks and however.
    let (status, body) = get(&hub.url("/admin/events"), &[("authorization", &bearer)]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _) = get(&hub.url("/healthz"), &[]).await;
    assert_eq!(status, 200);

    let url = hub.admin_url("/admin/events");
    let (status, body) = get(&url, &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) = get(&url, &[("authorization", "Bearer wrong-token")]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));

    // A DNS-rebinding page: right listener, right token even, foreign Host.
    let (status, body) =
        get(&url, &[("authorization", &bearer), ("host", "rebind.attacker.example:8081")]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (421, Some("misdirected_request")));
    // Came through a proxy, or from a browser.
    for (k, v) in
        [("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=203.0.113.9"), ("origin", "http://x")]
    {
        let (status, body) = get(&url, &[("authorization", &bearer), (k, v)]).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{k}");
    }

    let (status, body) = get(&url, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array(), "{body}");
    let port = hub.admin_addr().rsplit(':').next().expect("port").to_string();
    let (status, _) = get(&url, &[("authorization", &bearer), ("host", &format!("localhost:{port}"))]).await;
    assert_eq!(status, 200);
    hub.stop();
}

#[cfg(unix)]
#[tokio::test]
async fn the_token_file_is_private_and_reused_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let store = dir.path().join("hub.redb");
    let hub = Hub::start(&dir.path().join("m"), &store);
    let first = hub.admin_token();
    let mode =
        std::fs::metadata(dir.path().join("hub.redb.admin-token")).expect("token file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    hub.stop();
    let hub = Hub::start(&dir.path().join("m"), &store);
    assert_eq!(hub.admin_token(), first);
    hub.stop();
}

#[tokio::test]
async fn the_cli_reaches_a_running_server_without_flags_and_is_refused_without_the_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    lead_mappings(&dir.path().join("m"), &dest.url("/contacts"), "");
    let store = dir.path().join("hub.redb");
    let hub = Hub::start(&dir.path().join("m"), &store);
    let ack: Value =
        post_signed(&reqwest::Client::new(), &hub, lead_body("CLI-1")).await.json().await.expect("ack");
    let id = ack["event_id"].as_str().expect("id").to_string();
    dest.wait_for(1, 10).await;
    let s = store.to_str().expect("utf8");

    let (code, out) = hub_cli(&["events", "list", "--json", "--store", s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id), "{out}");
    let (code, out) = hub_cli(&["events", "show", &id, "--store", s, "--body"]);
    assert_eq!(code, 0, "{out}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["id"], id.as_str());
    let (code, out) = hub_cli(&["replay", &id, "--store", s]);
    assert_eq!(code, 0, "{out}");
    dest.wait_for(2, 10).await;

    // With another token the server refuses the CLI.
    let out = std::process::Command::new(hub_bin())
        .args(["events", "list", "--store", s])
        .env("HUB_ADMIN_TOKEN", "x".repeat(64))
        .output()
        .expect("run hub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    hub.stop();
}
