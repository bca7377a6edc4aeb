//! Inbound credentials are redacted before the event is stored: the store file, `hub events
//! show`, the admin routes and every delivery (including replays) see `[redacted]`.

use crate::support::*;

const APP_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";
const ACCESS: &str = "s6p6eclrvim6da22ft9ch94ekreb52lv";
const REFRESH: &str = "4s386p3q0tr8dy89xvmt96234v3dljg8";
const BEARER: &str = "bearer-sent-by-the-portal";
const COOKIE: &str = "session=cookie-of-the-portal";
const QUERY_KEY: &str = "query-key-of-the-portal";
const PORTAL: &str = "portal-header-secret";

fn secrets() -> [&'static str; 7] {
    [APP_TOKEN, ACCESS, REFRESH, BEARER, COOKIE, QUERY_KEY, PORTAL]
}

fn assert_clean(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} holds `{s}`:\n{text}");
    }
}

fn mapping(dir: &std::path::Path, dest: &str) {
    let yaml = format!(
        r#"source:
  id: portal
  provider: bitrix24
  secret: env:PORTAL_APP_TOKEN
  redact:
    headers: [X-Portal-Token]
    query: [key]
routes:
  - id: raw
    to:
      url: {dest}
      allow_net: [127.0.0.0/8]
      raw: true
    retry: {{initial_delay: 100ms, max_delay: 300ms, jitter: false, max_attempts: 3, timeout: 2s}}
  - id: echo
    map:
      domain: "{{{{body.auth.domain}}}}"
      token: "{{{{body.auth.application_token}}}}"
      key: "{{{{query.key}}}}"
      auth: "{{{{headers.authorization}}}}"
    to:
      url: {dest}
      allow_net: [127.0.0.0/8]
"#
    );
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("portal.yaml"), yaml).expect("write");
}

fn form_body() -> String {
    format!(
        "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=7&auth%5Bdomain%5D=portal.example&auth%5Baccess_token%5D={ACCESS}\
         &auth%5Brefresh_token%5D={REFRESH}&auth%5Bapplication_token%5D={APP_TOKEN}"
    )
}

#[tokio::test]
async fn credentials_are_redacted_in_the_store_admin_cli_and_deliveries() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    let store = dir.path().join("hub.redb");
    mapping(&m, &dest.url("/in"));
    let hub = Hub::start_with_env(&m, &store, &[("PORTAL_APP_TOKEN", APP_TOKEN)]);
    let client = reqwest::Client::new();
    let r = client
        .post(hub.url(&format!("/hooks/portal?key={QUERY_KEY}&page=2")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {BEARER}"))
        .header("cookie", COOKIE)
        .header("x-portal-token", PORTAL)
        .body(form_body())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "the token in the body is verified before it is redacted");
    let id = r.json::<serde_json::Value>().await.expect("ack")["event_id"].as_str().expect("id").to_string();

    let got = dest.wait_for(2, 10).await;
    for g in &got {
        assert_clean("a delivery", &format!("{:?} {}", g.headers, String::from_utf8_lossy(&g.body)));
    }
    let raw = got
        .iter()
        .find(|g| g.header("content-type").as_deref() == Some("application/x-www-form-urlencoded"))
        .expect("the raw route forwards a form body");
    let fields = hub_core::body::parse_form(&raw.body);
    assert_eq!(fields["auth"]["domain"], "portal.example", "other fields are kept");
    assert_eq!(fields["auth"]["application_token"], "[redacted]");
    assert_eq!(fields["data"]["FIELDS"]["ID"], "7");
    let echo =
        got.iter().find(|g| g.header("content-type").as_deref() == Some("application/json")).expect("echo");
    assert_eq!(
        echo.json(),
        serde_json::json!({"domain": "portal.example", "token": "[redacted]", "key": "[redacted]", "auth": "[redacted]"}),
        "mappings render from the redacted copy"
    );

    // The admin routes: a list of summaries, one event with its redacted request.
    let list = client
        .get(hub.admin_url("/admin/events"))
        .bearer_auth(hub.admin_token())
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("text");
    assert_clean("the admin list", &list);
    let listed: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("headers").is_none(), "the list holds summaries: {list}");
    let shown = client
        .get(hub.admin_url(&format!("/admin/events/{id}?body=true")))
        .bearer_auth(hub.admin_token())
        .send()
        .await
        .expect("show");
    let shown = shown.text().await.expect("text");
    assert_clean("the admin event", &shown);
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    let header = |name: &str| {
        shown["headers"].as_array().expect("headers").iter().find(|h| h[0] == name).map(|h| h[1].clone())
    };
    assert_eq!(header("authorization"), Some("[redacted]".into()));
    assert_eq!(header("cookie"), Some("[redacted]".into()));
    assert_eq!(header("x-portal-token"), Some("[redacted]".into()));
    assert_eq!(shown["query"], "key=%5Bredacted%5D&page=2");

    // `hub events show` through the running server, then a replay from the redacted copy.
    let (code, out) = hub_cli(&["events", "show", &id, "--body", "--store", store.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert_clean("hub events show", &out);
    assert!(out.contains("[redacted]"), "{out}");
    let (code, out) = hub_cli(&["replay", &id, "--store", store.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    let got = dest.wait_for(4, 10).await;
    for g in &got[2..] {
        assert_clean("a replayed delivery", &format!("{:?} {}", g.headers, String::from_utf8_lossy(&g.body)));
    }
    hub.stop();

    // Nothing in the store file itself.
    let bytes = std::fs::read(&store).expect("read store");
    let text = String::from_utf8_lossy(&bytes);
    assert_clean("the store file", &text);
    let (code, out) = hub_cli(&["events", "show", &id, "--body", "--store", store.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert_clean("hub events show on the store", &out);
}
