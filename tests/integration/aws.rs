//! The AWS shell end to end on DynamoDB Local + moto (SQS, S3, Secrets Manager): the Lambda
//! handlers are invoked in-process with API Gateway v2 / Function URL / SQS event fixtures, the
//! way the Lambda runtime hands them over, and deliver to a real local HTTP destination.
//!
//! SQS's event source mapping is played by [`Aws::pump`]: it receives messages, hands them to
//! `deliver` as an SQS event, and deletes the ones not reported as failures.

use crate::support::{Destination, SECRET, hub_cli, sign};
use aws_sdk_sqs::types::QueueAttributeName;
use hub_aws::Clients;
use hub_aws::mappings::MappingRepo;
use hub_aws::testing::{emulator_clients as clients, unique};
use hub_core::event::{DeliveryStatus, EventStatus};
use hub_core::ids::EventId;
use hub_core::time::SystemClock;
use hub_http::forwarder::{ForwarderConfig, HttpForwarder};
use hub_lambda::Shell;
use hub_lambda::emulated::{Deployment, invoke};
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/lambda");

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn shop_mapping(dest: &str, max_attempts: u32) -> String {
    format!(
        r#"source:
  id: shop
  verify:
    hmac: {{algorithm: sha256, header: X-Shop-Signature, prefix: "sha256=", secret: env:SHOP_SECRET}}
  dedup: {{path: $.body.id}}
routes:
  - id: crm
    map:
      order: "{{{{body.id}}}}"
      email: "{{{{normalize_email body.email}}}}"
      total: {{path: $.body.total, type: number}}
    to:
      url: {dest}
      allow_net: [127.0.0.0/8]
    retry: {{initial_delay: 1s, max_delay: 1s, jitter: false, max_attempts: {max_attempts}, timeout: 2s}}
"#
    )
}

/// One deployment's resources on the emulators, with its handlers.
struct Aws {
    clients: Clients,
    shell: Shell,
    settings: hub_aws::Settings,
    table: String,
    queue_url: String,
    dlq_url: String,
    secret: String,
    /// The metric lines (EMF) the functions wrote.
    metrics: Arc<Mutex<Vec<String>>>,
    dep: Deployment,
}

impl Aws {
    /// Table, bucket, queue + DLQ (redrive after `max_receive`), the secret, the mapping pushed
    /// as version 1, then the shell as a cold start builds it.
    async fn deploy(clients: Clients, mapping: &str, max_receive: u32) -> Aws {
        let files = [("shop.yaml".to_string(), mapping.to_string())];
        // The destinations of these tests listen on 127.0.0.1.
        let env = [("HUB_ALLOW_NETS", "127.0.0.0/8")];
        let dep =
            Deployment::create(clients.clone(), &files, &json!({"SHOP_SECRET": SECRET}), max_receive, &env)
                .await
                .expect("deployment");
        let settings = dep.settings().expect("settings");
        let (shell, metrics) = Self::shell(&clients, settings.clone()).await;
        Aws {
            clients,
            shell,
            settings,
            table: dep.table.clone(),
            queue_url: dep.queue_url.clone(),
            dlq_url: dep.dlq_url.clone(),
            secret: dep.secret_arn.clone(),
            metrics,
            dep,
        }
    }

    /// A cold start with these settings, its metric lines kept; the forwarder is built the way
    /// the function builds it (`HUB_ALLOW_NETS`).
    async fn shell(clients: &Clients, settings: hub_aws::Settings) -> (Shell, Arc<Mutex<Vec<String>>>) {
        let forwarder = HttpForwarder::new(ForwarderConfig {
            allow_nets: settings.allow_nets.clone(),
            ..Default::default()
        })
        .expect("forwarder");
        let (m, lines) = hub_aws::metrics::Metrics::memory("hub/test");
        let shell = Shell::build_with(settings, clients, m, Arc::new(forwarder), Arc::new(SystemClock))
            .await
            .expect("cold start");
        (shell, lines)
    }

    fn dead_lines(&self) -> Vec<Value> {
        let lines = self.metrics.lock().expect("metrics");
        lines.iter().map(|l| serde_json::from_str(l).expect("EMF JSON")).collect()
    }

    /// A second cold start with these settings.
    async fn cold_start(&self, settings: hub_aws::Settings) -> anyhow::Result<Shell> {
        let forwarder = HttpForwarder::new(ForwarderConfig::default()).expect("forwarder");
        Shell::build(settings, &self.clients, Arc::new(forwarder), Arc::new(SystemClock)).await
    }

    /// Invokes an HTTP function the way `lambda_http::run` does, with an event fixture whose
    /// method, path and body are set; returns (statusCode, JSON body).
    async fn invoke(
        app: axum::Router,
        fixture_name: &str,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{fixture_name}")).expect("fixture");
        invoke(app, &text, method, path, body, headers).await.expect("invocation")
    }

    async fn webhook(&self, fixture_name: &str, body: &str, signature: &str) -> (u16, Value) {
        let app = hub_lambda::ingest_app(self.shell.clone());
        Self::invoke(app, fixture_name, "POST", "/hooks/shop", body, &[("x-shop-signature", signature)]).await
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let app = hub_lambda::admin_app(self.shell.clone());
        Self::invoke(app, "function-url-iam-admin.json", method, path, body, &[]).await
    }

    /// One round of the SQS event source mapping: receive a batch, hand it to `deliver-sqs`,
    /// delete what it did not report as failed. Returns how many messages were handed over.
    async fn pump_once(&self) -> usize {
        self.pump_once_with(&self.shell).await
    }

    /// One round with the `deliver-sqs` instance `shell`.
    async fn pump_once_with(&self, shell: &Shell) -> usize {
        self.dep.pump_once(shell).await.expect("pump")
    }

    /// Pumps until `done` holds (or panics after `secs`).
    async fn pump_until(&self, secs: u64, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done().await {
            assert!(Instant::now() < deadline, "condition not reached within {secs}s");
            self.pump_once().await;
        }
    }

    /// Messages received and not yet deleted or released (held in flight).
    async fn in_flight(&self) -> u64 {
        let out = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        out.attributes
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible).cloned())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Takes every visible message off the queue without running it (a lost message).
    async fn lose_messages(&self) -> usize {
        let mut lost = 0;
        loop {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let msgs = out.messages.unwrap_or_default();
            if msgs.is_empty() {
                return lost;
            }
            for m in msgs {
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
                lost += 1;
            }
        }
    }

    async fn dlq_bodies(&self) -> Vec<String> {
        let out = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive dlq");
        out.messages.unwrap_or_default().iter().filter_map(|m| m.body().map(str::to_string)).collect()
    }

    async fn event(&self, id: &str) -> hub_core::event::EventRecord {
        self.shell.hub().event(&EventId::new(id)).await.expect("store").expect("event stored")
    }
}

fn order(id: &str) -> String {
    json!({"id": id, "email": "  Ada@Example.COM ", "total": 12.5}).to_string()
}

#[tokio::test]
async fn aws_signed_webhook_is_delivered_as_mapped_and_a_duplicate_once() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 5), 5).await;

    let body = order("o-1");
    let (status, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("accepted")), "{resp}");
    let id = resp["event_id"].as_str().expect("event id").to_string();
    // The same webhook again (a sender's retry): acknowledged with the first id, not stored.
    let (status, again) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    assert_eq!(
        (status, again["status"].as_str(), again["event_id"].as_str()),
        (200, Some("duplicate"), Some(id.as_str()))
    );
    // A forged one is refused with the same JSON error as `hub serve` gives.
    let (status, err) = aws.webhook("apigw-v2-post.json", &body, "sha256=00").await;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("signature_invalid")), "{err}");
    // Through a Function URL event as well.
    let body2 = order("o-2");
    let (status, resp2) = aws.webhook("function-url-post.json", &body2, &sign(body2.as_bytes())).await;
    assert_eq!((status, resp2["status"].as_str()), (200, Some("accepted")));
    // The router's own 404 for other paths, JSON like locally.
    let app = hub_lambda::ingest_app(aws.shell.clone());
    let (status, nf) = Aws::invoke(app, "apigw-v2-post.json", "POST", "/nope", "{}", &[]).await;
    assert_eq!((status, nf["error"]["code"].as_str()), (404, Some("not_found")));

    aws.pump_until(30, async || dest.received().len() >= 2).await;
    // Nothing else arrives: the duplicate was never queued.
    for _ in 0..3 {
        aws.pump_once().await;
    }
    let got = dest.received();
    assert_eq!(got.len(), 2, "one delivery per distinct webhook");
    let mut bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["order"].as_str().map(str::to_string));
    assert_eq!(bodies[0], json!({"order": "o-1", "email": "ada@example.com", "total": 12.5}));
    assert_eq!(bodies[1]["order"], json!("o-2"));
    let ev = aws.event(&id).await;
    assert_eq!(ev.status(), EventStatus::Delivered);
    assert_eq!(ev.remote_addr.as_deref(), Some("203.0.113.7"), "the client address from the request context");
    assert!(aws.dlq_bodies().await.is_empty());
}

#[tokio::test]
async fn aws_failing_destination_is_retried_on_its_schedule_then_moved_to_the_dlq() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    dest.script(&[], 503);
    // The route tries 4 times; the queue hands one message over at most 3 times: each retry
    // is a new delayed message, so the route's own limit is what counts.
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 4), 3).await;
    let body = order("o-3");
    let (status, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    assert_eq!(status, 200, "{resp}");
    let id = resp["event_id"].as_str().expect("id").to_string();

    let mut dlq = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = Vec::new();
    while dlq.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no message reached the DLQ; destination got {}",
            dest.received().len()
        );
        aws.pump_once().await;
        held.push(aws.in_flight().await);
        dlq = aws.dlq_bodies().await;
    }
    assert!(held.iter().all(|n| *n == 0), "a waiting retry is never a message in flight: {held:?}");
    let got = dest.received();
    assert_eq!(got.len(), 4, "the route's max_attempts, not the queue's receive limit");
    let keys: Vec<_> = got.iter().map(|r| r.header("idempotency-key")).collect();
    assert!(keys[0].is_some() && keys.iter().all(|k| *k == keys[0]), "same Idempotency-Key on every attempt");
    let ev = aws.event(&id).await;
    let d = &ev.current_deliveries()[0];
    assert_eq!((d.status, d.attempts, d.last_status), (DeliveryStatus::Dead, 4, Some(503)));
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .contains("gave up after 4 attempts; moved to the dead-letter queue"),
        "{:?}",
        d.last_error
    );
    assert_eq!(ev.status(), EventStatus::Dead);
    let job: Value = serde_json::from_str(&dlq[0]).expect("job JSON");
    assert_eq!(job, json!({"job": "attempt", "event": id, "delivery": d.id}));
    // Retries were spaced by the route's schedule (1 s), not hammered.
    assert!(ev.deliveries[0].last_attempt_at.expect("tried").0 - d.created_at.0 >= 2_000);

    // After the destination recovers, a replay (admin function) delivers it.
    dest.script(&[], 200);
    let (status, r) = aws.admin("POST", &format!("/admin/events/{id}/replay"), "").await;
    assert_eq!((status, r["status"].as_str()), (200, Some("queued")), "{r}");
    aws.pump_until(30, async || dest.received().len() >= 5).await;
    aws.pump_until(10, async || aws.event(&id).await.status() == EventStatus::Delivered).await;
}

#[tokio::test]
async fn aws_route_that_gives_up_first_moves_its_message_to_the_dlq() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    dest.script(&[], 500);
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 2), 10).await;
    let body = order("o-4");
    let (_, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    let id = resp["event_id"].as_str().expect("id").to_string();
    let mut dlq = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq.is_empty() {
        assert!(Instant::now() < deadline, "no message reached the DLQ");
        aws.pump_once().await;
        dlq = aws.dlq_bodies().await;
    }
    assert_eq!(dest.received().len(), 2);
    let d = aws.event(&id).await.current_deliveries()[0].clone();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Dead, 2));
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .contains("gave up after 2 attempts; moved to the dead-letter queue")
    );
    // The message left the main queue.
    assert_eq!(aws.pump_once().await, 0);
}

#[tokio::test]
async fn aws_admin_pushes_mappings_lists_events_and_the_tick_sweeps_lost_jobs() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 5), 5).await;
    let (status, v) = aws.admin("GET", "/admin/mappings", "").await;
    assert_eq!((status, v["version"].as_u64()), (200, Some(1)), "{v}");

    // A broken set is refused with file:line:col and nothing changes.
    let broken = json!({"files": {"shop.yaml": "source:\n  id: shop\n  bogus: 1\nroutes: []\n"}}).to_string();
    let (status, err) = aws.admin("POST", "/admin/mappings", &broken).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_mapping")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or("").contains("shop.yaml:3:"), "{err}");
    // A good one becomes version 2 and is in force at once: the route now goes to /v2.
    let v2 = json!({"files": {"shop.yaml": shop_mapping(&dest.url("/v2"), 5)}}).to_string();
    let (status, ok) = aws.admin("POST", "/admin/mappings", &v2).await;
    assert_eq!((status, ok["version"].as_u64()), (200, Some(2)), "{ok}");

    let body = order("o-5");
    let (_, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    let id = resp["event_id"].as_str().expect("id").to_string();
    // The queue loses the message (purged): the event is stored and its dispatch still due.
    aws.clients.sqs.purge_queue().queue_url(&aws.queue_url).send().await.expect("purge");
    assert_eq!(aws.pump_once().await, 0);
    let report = hub_lambda::tick(&aws.shell).await.expect("tick");
    assert_eq!(report.swept, 1, "{report:?}");
    // The next tick does not send it again while its message waits in the queue.
    assert_eq!(hub_lambda::tick(&aws.shell).await.expect("tick").swept, 0);
    aws.pump_until(30, async || !dest.received().is_empty()).await;
    assert_eq!(dest.received()[0].path, "/v2");

    let (status, list) = aws.admin("GET", "/admin/events?limit=10", "").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["id"].as_str(), Some(id.as_str()));
    let (status, shown) = aws.admin("GET", &format!("/admin/events/{id}?body=true"), "").await;
    assert_eq!((status, shown["body"].as_str()), (200, Some(body.as_str())));
    let (status, _) = aws.admin("GET", "/admin/events/evt_missing", "").await;
    assert_eq!(status, 404);

    // `hub mappings push` (the CLI, environment pointing at the emulators) stores version 3;
    // a broken directory pushes nothing.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("shop.yaml"), shop_mapping(&dest.url("/v3"), 5)).expect("write");
    let d = dir.path().to_str().expect("utf-8 path");
    let (code, out) = hub_cli(&["mappings", "push", "--store", "dynamodb", "--table", &aws.table, d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pushed mapping set version 3 (1 files)"), "{out}");
    std::fs::write(dir.path().join("bad.yaml"), "source: {id: x}\nroutes: [{id: r}]\n").expect("write");
    let (code, out) = hub_cli(&["mappings", "push", "--table", &aws.table, d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml:2:") && out.contains("nothing pushed"), "{out}");
    let repo = MappingRepo::new(aws.clients.dynamodb.clone(), &aws.table);
    let (pointer, files) = repo.load_current().await.expect("files");
    assert_eq!((pointer.version, files.len(), files[0].0.as_str()), (3, 1, "shop.yaml"));
    // The functions pick it up on their next check.
    aws.shell.refresh().await;
    assert_eq!(aws.shell.mappings_version(), 3);
}

#[tokio::test]
async fn aws_bad_configuration_fails_the_cold_start_and_a_bad_reload_keeps_the_running_set() {
    let Some(clients) = clients().await else { return };
    let aws = Aws::deploy(clients, &shop_mapping("https://crm.example/x", 1), 3).await;
    // A pushed set whose secret the deployment does not have: a new instance refuses to start
    // (naming the file and the secret); the running one keeps its set.
    let bad = shop_mapping("https://crm.example/x", 1).replace("env:SHOP_SECRET", "env:NOT_DEPLOYED");
    let repo = MappingRepo::new(aws.clients.dynamodb.clone(), &aws.table);
    assert_eq!(repo.push(&[("shop.yaml".into(), bad)], 0).await.expect("push"), 2);
    let err = format!("{:#}", aws.cold_start(aws.settings.clone()).await.err().expect("cold start fails"));
    assert!(err.contains("shop.yaml:") && err.contains("NOT_DEPLOYED"), "{err}");
    aws.shell.refresh().await;
    assert_eq!(aws.shell.mappings_version(), 1, "the running instance keeps the set that works");
    assert!(aws.shell.hub().mappings().source("shop").is_some());

    let mut no_queue = aws.settings.clone();
    no_queue.queue_url = None;
    let err = format!("{:#}", aws.cold_start(no_queue).await.err().expect("fails"));
    assert!(err.contains("HUB_QUEUE_URL"), "{err}");
    let mut no_secret = aws.settings.clone();
    no_secret.secrets_id = Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:missing".into());
    let err = format!("{:#}", aws.cold_start(no_secret).await.err().expect("fails"));
    assert!(err.contains("loading secrets"), "{err}");
}

#[tokio::test]
async fn aws_large_binary_encoded_body_goes_to_s3_and_is_delivered() {
    use base64::Engine as _;
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let mapping =
        shop_mapping(&dest.url("/crm"), 3).replace("  dedup:", "  max_body_bytes: 2000000\n  dedup:");
    let aws = Aws::deploy(clients, &mapping, 3).await;
    // 700 KB: more than a DynamoDB item holds. API Gateway hands it over base64-encoded.
    let body = json!({"id": "o-big", "email": "big@example.com", "total": 1, "notes": "é".repeat(350_000)})
        .to_string();
    let app = hub_lambda::ingest_app(aws.shell.clone());
    let mut ev = fixture("apigw-v2-post.json");
    ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&body));
    ev["isBase64Encoded"] = json!(true);
    ev["headers"]["content-length"] = json!(body.len().to_string());
    ev["headers"]["x-shop-signature"] = json!(sign(body.as_bytes()));
    let req: LambdaRequest = serde_json::from_value(ev).expect("event");
    let resp = lambda_http::Adapter::from(app)
        .oneshot(LambdaEvent::new(req, Context::default()))
        .await
        .expect("handler");
    let resp = serde_json::to_value(&resp).expect("json");
    assert_eq!(resp["statusCode"], json!(200), "{resp}");
    let id: Value = serde_json::from_str(resp["body"].as_str().expect("body")).expect("json");
    let id = EventId::new(id["event_id"].as_str().expect("id"));
    let stored = aws.shell.hub().body(&id).await.expect("store").expect("body");
    assert_eq!(stored.as_ref(), body.as_bytes(), "the raw bytes, byte for byte");
    aws.pump_until(30, async || !dest.received().is_empty()).await;
    assert_eq!(dest.received()[0].json()["order"], json!("o-big"));
}

fn sign_with(key: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// The job message a queue would hand over.
async fn send_job(aws: &Aws, job: &hub_core::ports::Job) {
    aws.clients
        .sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(hub_aws::sqs::JobMessage::body(job))
        .send()
        .await
        .expect("send");
}

#[tokio::test]
async fn aws_a_duplicate_attempt_before_its_retry_time_sends_nothing() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    dest.script(&[], 503);
    let mapping = shop_mapping(&dest.url("/crm"), 5)
        .replace("initial_delay: 1s, max_delay: 1s", "initial_delay: 1h, max_delay: 1h");
    let aws = Aws::deploy(clients, &mapping, 5).await;
    let body = order("o-due");
    let (_, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    let id = resp["event_id"].as_str().expect("id").to_string();
    aws.pump_until(30, async || !dest.received().is_empty()).await;
    let d = aws.event(&id).await.current_deliveries()[0].clone();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Retrying, 1));
    // A second message for the same attempt (SQS delivers at least once, a sweep resends).
    send_job(&aws, &hub_core::ports::Job::Attempt(EventId::new(&id), d.id.clone())).await;
    assert_eq!(aws.pump_once().await, 1);
    assert_eq!(dest.received().len(), 1, "not sent before its retry time");
    let after = aws.event(&id).await.current_deliveries()[0].clone();
    assert_eq!((after.attempts, after.next_attempt_at), (1, d.next_attempt_at), "its schedule is kept");
}

#[tokio::test]
async fn aws_permanent_failures_and_failed_dispatches_are_counted_for_the_alarm() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    dest.script(&[], 404);
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 5), 5).await;
    let body = order("o-404");
    let (_, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    let id = resp["event_id"].as_str().expect("id").to_string();
    aws.pump_until(30, async || aws.event(&id).await.status() == EventStatus::Dead).await;
    // A 404 is permanent: no DLQ message, so the metric is what raises the alarm.
    assert!(aws.dlq_bodies().await.is_empty());
    let lines = aws.dead_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], json!("DeadEvents"));
    assert_eq!(l["_aws"]["CloudWatchMetrics"][0]["Namespace"], json!("hub/test"));
    assert_eq!(
        (l["kind"].as_str(), l["event"].as_str(), l["route"].as_str()),
        (Some("delivery"), Some(id.as_str()), Some("crm"))
    );
    assert!(l["reason"].as_str().unwrap_or("").contains("404"), "{l}");
}

#[tokio::test]
async fn aws_a_source_pushed_a_moment_ago_is_loaded_before_its_event_is_called_dead() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 5), 5).await;
    // A deliver-sqs instance that checks for new versions only every hour.
    let mut slow = aws.settings.clone();
    slow.mappings_refresh = Duration::from_secs(3600);
    let (old_deliver, _) = Aws::shell(&aws.clients, slow).await;
    // A push adds a source; an ingest instance started after it accepts an event for it.
    let late = shop_mapping(&dest.url("/late"), 5).replace("id: shop", "id: late");
    let repo = MappingRepo::new(aws.clients.dynamodb.clone(), &aws.table);
    repo.push(&[("shop.yaml".into(), shop_mapping(&dest.url("/crm"), 5)), ("late.yaml".into(), late)], 0)
        .await
        .expect("push");
    let (new_ingest, _) = Aws::shell(&aws.clients, aws.settings.clone()).await;
    let body = order("o-late");
    let app = hub_lambda::ingest_app(new_ingest);
    let (status, resp) = Aws::invoke(
        app,
        "apigw-v2-post.json",
        "POST",
        "/hooks/late",
        &body,
        &[("x-shop-signature", &sign(body.as_bytes()))],
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let id = resp["event_id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dest.received().is_empty() {
        assert!(Instant::now() < deadline, "not delivered: {:?}", aws.event(&id).await.dispatch_error);
        aws.pump_once_with(&old_deliver).await;
    }
    assert_eq!(dest.received()[0].path, "/late");
    assert_eq!(aws.event(&id).await.dispatch_error, None);
}

#[tokio::test]
async fn aws_a_job_whose_runs_keep_dying_is_recorded_dead_not_handed_over_forever() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 5), 15).await;
    let mut settings = aws.settings.clone();
    settings.max_runs = 2;
    settings.sweep_lease = Duration::ZERO;
    let (deliver, metrics) = Aws::shell(&aws.clients, settings).await;
    let body = order("o-oom");
    let (_, resp) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    let id = EventId::new(resp["event_id"].as_str().expect("id"));
    // Its message is lost and every run of it dies without a word (what an out-of-memory kill
    // leaves behind): the tick sends it again, counting each run it starts.
    assert_eq!(aws.lose_messages().await, 1);
    for _ in 0..2 {
        assert_eq!(hub_lambda::tick(&deliver).await.expect("tick").swept, 1);
        assert_eq!(aws.lose_messages().await, 1);
    }
    // The third run would be one more than allowed: the job is recorded dead instead.
    assert_eq!(hub_lambda::tick(&deliver).await.expect("tick").swept, 0);
    let ev = aws.event(id.as_str()).await;
    assert_eq!(ev.status(), EventStatus::Dead);
    let d = &ev.current_deliveries()[0];
    assert!(
        d.last_error.as_deref().unwrap_or("").contains("2 runs ended without an outcome"),
        "{:?}",
        d.last_error
    );
    assert!(dest.received().is_empty());
    assert_eq!(hub_lambda::tick(&deliver).await.expect("tick").swept, 0, "nothing is due any more");
    let lines = metrics.lock().expect("metrics").clone();
    assert!(lines.len() == 1 && lines[0].contains(r#""kind":"delivery""#), "{lines:?}");
}

#[tokio::test]
async fn aws_a_rotated_secret_reaches_running_functions() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let aws = Aws::deploy(clients, &shop_mapping(&dest.url("/crm"), 5), 5).await;
    let mut settings = aws.settings.clone();
    settings.secrets_refresh = Duration::ZERO;
    let (ingest, _) = Aws::shell(&aws.clients, settings).await;
    aws.clients
        .secrets
        .put_secret_value()
        .secret_id(&aws.secret)
        .secret_string(json!({"SHOP_SECRET": "rotated-secret"}).to_string())
        .send()
        .await
        .expect("rotate");
    let body = order("o-rot");
    let sig = sign_with("rotated-secret", body.as_bytes());
    let app = hub_lambda::ingest_app(ingest);
    let (status, resp) =
        Aws::invoke(app, "apigw-v2-post.json", "POST", "/hooks/shop", &body, &[("x-shop-signature", &sig)])
            .await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("accepted")), "{resp}");
}

#[tokio::test]
async fn aws_admin_refuses_a_mapping_set_that_retries_longer_than_events_are_kept() {
    let Some(clients) = clients().await else { return };
    let aws = Aws::deploy(clients, &shop_mapping("https://crm.example/x", 5), 5).await;
    // 30 days kept (the default): 20 days of retries + 14 in the DLQ do not fit.
    let long = shop_mapping("https://crm.example/x", 5).replace("timeout: 2s}", "timeout: 2s, max_age: 20d}");
    let push = json!({"files": {"shop.yaml": long}}).to_string();
    let (status, err) = aws.admin("POST", "/admin/mappings", &push).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_mapping")), "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("shop.yaml") && msg.contains("route `crm`") && msg.contains("RetentionDays"),
        "{msg}"
    );
    let repo = MappingRepo::new(aws.clients.dynamodb.clone(), &aws.table);
    assert_eq!(repo.current_version().await.expect("version"), 1, "nothing pushed");
    let short =
        shop_mapping("https://crm.example/x", 5).replace("timeout: 2s}", "timeout: 2s, max_age: 16d}");
    let (status, ok) =
        aws.admin("POST", "/admin/mappings", &json!({"files": {"shop.yaml": short}}).to_string()).await;
    assert_eq!((status, ok["version"].as_u64()), (200, Some(2)), "{ok}");
    // A route may ask only for networks the deployment allows (HUB_ALLOW_NETS: 127.0.0.0/8).
    let wide = shop_mapping("https://crm.example/x", 5).replace("[127.0.0.0/8]", "[10.0.0.0/8]");
    let (status, err) =
        aws.admin("POST", "/admin/mappings", &json!({"files": {"shop.yaml": wide}}).to_string()).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_mapping")), "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("shop.yaml:") && msg.contains("10.0.0.0/8") && msg.contains("AllowNets"), "{msg}");
    assert_eq!(repo.current_version().await.expect("version"), 2, "nothing pushed");
}

#[tokio::test]
async fn aws_unknown_sources_and_unsigned_requests_are_refused_without_the_table() {
    let Some(clients) = clients().await else { return };
    let aws = Aws::deploy(clients, &shop_mapping("https://crm.example/x", 5), 5).await;
    // The table goes away: whatever is refused from the mapping set in memory is still refused
    // the same way (a flood of garbage costs no table access), a valid webhook cannot be stored.
    aws.clients.dynamodb.delete_table().table_name(&aws.table).send().await.expect("delete table");
    let app = || hub_lambda::ingest_app(aws.shell.clone());
    let (status, err) = Aws::invoke(app(), "apigw-v2-post.json", "POST", "/hooks/nope", "{}", &[]).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("unknown_source")), "{err}");
    let (status, err) = Aws::invoke(app(), "apigw-v2-post.json", "POST", "/hooks/shop", "{}", &[]).await;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("signature_missing")), "{err}");
    let body = order("o-x");
    let (status, err) = aws.webhook("apigw-v2-post.json", &body, &sign(body.as_bytes())).await;
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("store_unavailable")), "{err}");
}

#[tokio::test]
async fn aws_split_secrets_ingest_verifies_and_deliver_sends_credentials_each_holding_only_its_own() {
    let Some(clients) = clients().await else { return };
    let dest = Destination::start().await;
    let mapping = shop_mapping(&dest.url("/crm"), 5)
        .replace("      url: ", "      auth: {bearer: env:CRM_TOKEN}\n      url: ");
    // The deployment's secret holds SHOP_SECRET (inbound); CRM_TOKEN lives in a second one.
    let aws = Aws::deploy(clients, &mapping.replace("env:CRM_TOKEN", "env:SHOP_SECRET"), 5).await;
    let outbound = aws
        .clients
        .secrets
        .create_secret()
        .name(unique("hub/outbound"))
        .secret_string(json!({"CRM_TOKEN": "crm-token"}).to_string())
        .send()
        .await
        .expect("secret")
        .arn
        .expect("arn");
    let repo = MappingRepo::new(aws.clients.dynamodb.clone(), &aws.table);
    repo.push(&[("shop.yaml".into(), mapping)], 0).await.expect("push");
    // Holding all references strictly, the inbound secret alone cannot compile the set.
    let err = format!("{:#}", aws.cold_start(aws.settings.clone()).await.err().expect("fails"));
    assert!(err.contains("CRM_TOKEN"), "{err}");
    let mut ingest = aws.settings.clone();
    (ingest.secrets_id, ingest.inbound_secrets_id, ingest.secrets_held_some) =
        (None, Some(aws.secret.clone()), true);
    let mut deliver = aws.settings.clone();
    (deliver.secrets_id, deliver.secrets_held_some) = (Some(outbound), true);
    let (ingest, _) = Aws::shell(&aws.clients, ingest).await;
    let (deliver, _) = Aws::shell(&aws.clients, deliver).await;
    let body = order("o-split");
    let app = hub_lambda::ingest_app(ingest);
    let hdr = [("x-shop-signature", sign(body.as_bytes()))];
    let hdr: Vec<(&str, &str)> = hdr.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, resp) =
        Aws::invoke(app.clone(), "apigw-v2-post.json", "POST", "/hooks/shop", &body, &hdr).await;
    assert_eq!(status, 200, "{resp}");
    // What stands in for a secret the function does not hold verifies nothing.
    let forged = sign_with("", body.as_bytes());
    let (status, _) = Aws::invoke(
        app,
        "apigw-v2-post.json",
        "POST",
        "/hooks/shop",
        &order("o-f"),
        &[("x-shop-signature", &forged)],
    )
    .await;
    assert_eq!(status, 401);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dest.received().is_empty() {
        assert!(Instant::now() < deadline, "not delivered");
        aws.pump_once_with(&deliver).await;
    }
    assert_eq!(dest.received()[0].header("authorization").as_deref(), Some("Bearer crm-token"));
}
