//! Provider presets and body formats through the real server, and `hub verify`.

use crate::support::*;
use serde_json::json;
use std::io::Write;

fn stripe_sign(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(format!("{t}.").as_bytes());
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

#[tokio::test]
async fn stripe_preset_verifies_dedups_and_exposes_the_event_type() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("stripe.yaml"),
        format!(
            "source:\n  id: pay\n  provider: stripe\n  secret: env:LEAD_SECRET\nroutes:\n  - id: deal\n    when: {{path: $.event.type, eq: invoice.paid}}\n    map:\n      type: \"{{{{event.type}}}}\"\n      amount: {{template: \"{{{{divide body.data.object.amount_paid 100}}}}\", type: number}}\n    to: {{url: \"{}\", allow_net: [127.0.0.0/8]}}\n",
            dest.url("/deals")
        ),
    )
    .expect("write");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(
        &json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": {"amount_paid": 1990}}}),
    )
    .expect("json");
    let post = |sig: String, body: Vec<u8>| {
        client
            .post(hub.url("/hooks/pay"))
            .header("content-type", "application/json")
            .header("stripe-signature", sig)
            .body(body)
            .send()
    };
    let r = post(stripe_sign(SECRET, &body), body.clone()).await.expect("send");
    assert_eq!(r.status(), 200);
    let again: serde_json::Value =
        post(stripe_sign(SECRET, &body), body.clone()).await.expect("send").json().await.expect("json");
    assert_eq!(again["status"], "duplicate", "Stripe's event id is the preset's dedup key");
    let bad = post(stripe_sign("wrong", &body), body.clone()).await.expect("send");
    assert_eq!(bad.status(), 401);
    let stale = post("t=1000,v1=00".into(), body.clone()).await.expect("send");
    assert_eq!(stale.status(), 401);
    let got = dest.wait_for(1, 10).await;
    assert_eq!(got[0].json(), json!({"type": "invoice.paid", "amount": 19.9}));
    hub.stop();
}

#[tokio::test]
async fn gzip_xml_and_multipart_bodies_are_parsed() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("any.yaml"),
        format!(
            "source:\n  id: any\n  description: test sender, unsigned\n  verify: none\nroutes:\n  - id: echo\n    map: {{got: $.body}}\n    to: {{url: \"{}\", allow_net: [127.0.0.0/8]}}\n",
            dest.url("/echo")
        ),
    )
    .expect("write");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let client = reqwest::Client::new();
    let url = hub.url("/hooks/any");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"lead": "gzip"}"#).expect("gzip");
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    let xml = r#"<lead id="7"><name>Ann</name><tag>a</tag><tag>b</tag></lead>"#;
    let r = client.post(&url).header("content-type", "application/xml").body(xml).send().await.expect("send");
    assert_eq!(r.status(), 200);

    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"contact[name]\"\r\n\r\nAnn\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
    let r = client
        .post(&url)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(multipart)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 8 * 1024 * 1024]).expect("gzip");
        gz.finish().expect("gzip")
    };
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413, "a body that inflates past the cap is refused");
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);

    let got = dest.wait_for(3, 10).await;
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json()["got"].clone()).collect();
    assert!(bodies.contains(&json!({"lead": "gzip"})), "{bodies:?}");
    assert!(bodies.contains(&json!({"lead": {"@id": "7", "name": "Ann", "tag": ["a", "b"]}})), "{bodies:?}");
    let mp = bodies.iter().find(|b| b.get("contact").is_some()).expect("multipart body");
    assert_eq!(mp["contact"]["name"], "Ann");
    assert_eq!(mp["cv"]["filename"], "cv.txt");
    assert_eq!(mp["cv"]["size"], 5);
    assert_eq!(mp["cv"]["sha256"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    hub.stop();
}

#[test]
fn hub_verify_prints_the_verdict_and_exits_accordingly() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "Hello, World!").expect("write");
    let sig = "X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let b = body.to_str().expect("utf8");
    let (code, out) = hub_cli(&[
        "verify",
        "--provider",
        "github",
        "--secret",
        "It's a Secret to Everybody",
        "--header",
        sig,
        "--body-file",
        b,
    ]);
    assert_eq!((code, out.trim()), (0, "valid"));
    let (code, out) =
        hub_cli(&["verify", "--provider", "github", "--secret", "nope", "--header", sig, "--body-file", b]);
    assert_eq!((code, out.trim()), (1, "invalid: signature does not match"));
    let (code, out) = hub_cli(&["verify", "--provider", "github", "--secret", "x", "--body-file", b]);
    assert_eq!(code, 1);
    assert!(out.starts_with("invalid: missing signature header"), "{out}");
}

#[test]
fn hub_verify_reads_the_secret_from_the_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "Hello, World!").expect("write");
    let sig = "X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let b = body.to_str().expect("utf8");
    let args =
        ["verify", "--provider", "github", "--secret-env", "GH_SECRET", "--header", sig, "--body-file", b];
    let (code, out, err) = crate::support::hub_cli_env(&args, &[("GH_SECRET", "It's a Secret to Everybody")]);
    assert_eq!((code, out.trim()), (0, "valid"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let (code, _, err) = crate::support::hub_cli_env(&args, &[("GH_SECRET", "")]);
    assert_ne!(code, 0);
    assert!(err.contains("--secret-env GH_SECRET: variable is empty"), "{err}");
    let (code, _, err) = crate::support::hub_cli_env(&args, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--secret-env GH_SECRET: variable not set"), "{err}");
    // The literal flag still works, with a warning on stderr.
    let literal = [
        "verify",
        "--provider",
        "github",
        "--secret",
        "It's a Secret to Everybody",
        "--header",
        sig,
        "--body-file",
        b,
    ];
    let (code, out, err) = crate::support::hub_cli_env(&literal, &[]);
    assert_eq!((code, out.trim()), (0, "valid"));
    assert!(err.contains("warning: --secret puts the secret in shell history"), "{err}");
}

#[tokio::test]
async fn url_signing_schemes_verify_against_public_url_not_forwarded_headers() {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("twilio.yaml"),
        format!(
            "source:\n  id: sms\n  provider: twilio\n  secret: env:LEAD_SECRET\n  public_url: https://hooks.example.com/hooks/sms\nroutes:\n  - id: note\n    map: {{from: $.body.From, text: $.body.Body}}\n    to: {{url: \"{}\", allow_net: [127.0.0.0/8]}}\n",
            dest.url("/notes")
        ),
    )
    .expect("write");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let body = "Body=Hello+there&From=%2B14155550132&To=%2B14155550100";
    // What Twilio signs: the URL it was configured with (behind a TLS proxy) + sorted params.
    let sign = |url: &str| {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(format!("{url}BodyHello thereFrom+14155550132To+14155550100").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let client = reqwest::Client::new();
    let send = |sig: String, forwarded_host: Option<&str>| {
        let mut r = client
            .post(hub.url("/hooks/sms?src=twilio"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(body);
        if let Some(host) = forwarded_host {
            r = r.header("x-forwarded-proto", "https").header("x-forwarded-host", host);
        }
        r.send()
    };
    // A request signed for another endpoint of the same account (same auth token) cannot be
    // made to match by naming that endpoint's host in X-Forwarded-Host.
    let elsewhere = sign("https://other.example.com/hooks/sms?src=twilio");
    let status = send(elsewhere, Some("other.example.com")).await.expect("send").status();
    assert_eq!(status, 401, "forwarded headers must not choose the signed URL");
    let here = sign("https://hooks.example.com/hooks/sms?src=twilio");
    assert_eq!(send(here, None).await.expect("send").status(), 200);
    let got = dest.wait_for(1, 10).await;
    assert_eq!(got[0].json(), json!({"from": "+14155550132", "text": "Hello there"}));
    hub.stop();
}

#[tokio::test]
async fn slack_url_verification_is_answered_after_its_signature_and_not_stored() {
    use hmac::{KeyInit, Mac};
    let dir = tempfile::tempdir().expect("tmp");
    let dest = Destination::start().await;
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("slack.yaml"),
        format!(
            "source:\n  id: slack\n  provider: slack\n  secret: env:LEAD_SECRET\nroutes:\n  - id: any\n    map: {{t: $.event.type}}\n    to: {{url: \"{}\", allow_net: [127.0.0.0/8]}}\n",
            dest.url("/x")
        ),
    )
    .expect("write");
    let hub = Hub::start(&m, &dir.path().join("hub.redb"));
    let body = r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let client = reqwest::Client::new();
    let post = |sig: String| {
        client
            .post(hub.url("/hooks/slack"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sig)
            .body(body)
            .send()
    };
    let r = post(sig).await.expect("send");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v, json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}));
    assert_eq!(post("v0=00".into()).await.expect("send").status(), 401, "unsigned challenges are refused");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(dest.received().is_empty());
    hub.stop();
    let (_, out) = hub_cli(&[
        "events",
        "list",
        "--json",
        "--store",
        dir.path().join("hub.redb").to_str().expect("utf8"),
    ]);
    assert_eq!(out.trim(), "", "a challenge is not an event");
}
