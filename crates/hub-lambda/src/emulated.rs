//! A deployment on the emulators (DynamoDB Local, moto), driven in-process the way Lambda
//! drives the functions: HTTP invocations built from API Gateway / Function URL event fixtures,
//! and SQS batches played from the queue the way the event source mapping hands them over. For
//! the end-to-end tests and the capacity meter (`scripts/capacity`), never for production.

use crate::Shell;
use anyhow::Context as _;
use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use hub_aws::Clients;
use hub_aws::mappings::MappingRepo;
use hub_aws::testing::unique;
use hub_core::ports::Forwarder;
use hub_core::time::Clock;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt as _;

/// An API Gateway HTTP API (v2) request, as `ingest-http` receives it.
pub const APIGW_V2_POST: &str = include_str!("../../../tests/fixtures/lambda/apigw-v2-post.json");
/// A Function URL request signed with IAM, as `admin-http` receives it.
pub const FUNCTION_URL_IAM_ADMIN: &str =
    include_str!("../../../tests/fixtures/lambda/function-url-iam-admin.json");
/// One SQS record, as `deliver-sqs` receives it.
pub const SQS_RECORD: &str = include_str!("../../../tests/fixtures/lambda/sqs-record.json");

/// The resources of one deployment: table, bodies bucket, queue with its dead-letter queue,
/// the secret, and the mapping set pushed as version 1.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub clients: Clients,
    pub table: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub secret_arn: String,
    /// The environment the template would give the functions.
    pub env: HashMap<String, String>,
}

impl Deployment {
    /// Creates the resources (the queue redrives to the DLQ after `max_receive` receives),
    /// stores `secrets` (a JSON object) and pushes `files`; `env` adds to or overrides the
    /// functions' environment.
    pub async fn create(
        clients: Clients,
        files: &[(String, String)],
        secrets: &Value,
        max_receive: u32,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let table = unique("hub-e2e");
        hub_aws::storage::create_table(&clients.dynamodb, &table).await.context("table")?;
        let bucket = unique("hub-e2e-bodies");
        clients.s3.create_bucket().bucket(&bucket).send().await.context("bucket")?;
        let dlq_url = clients
            .sqs
            .create_queue()
            .queue_name(unique("hub-dlq"))
            .send()
            .await
            .context("dlq")?
            .queue_url
            .context("dlq url")?;
        let dlq_arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("dlq arn")?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .context("dlq arn")?;
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}).to_string();
        let queue_url = clients
            .sqs
            .create_queue()
            .queue_name(unique("hub-queue"))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .attributes(QueueAttributeName::VisibilityTimeout, "30")
            .send()
            .await
            .context("queue")?
            .queue_url
            .context("queue url")?;
        let secret_arn = clients
            .secrets
            .create_secret()
            .name(unique("hub/secrets"))
            .secret_string(secrets.to_string())
            .send()
            .await
            .context("secret")?
            .arn
            .context("secret arn")?;
        MappingRepo::new(clients.dynamodb.clone(), &table)
            .push(files, hub_core::time::SystemClock.now().0)
            .await
            .context("mapping push")?;
        let mut vars: HashMap<String, String> = [
            ("HUB_TABLE", table.clone()),
            ("HUB_BODIES_BUCKET", bucket),
            ("HUB_QUEUE_URL", queue_url.clone()),
            ("HUB_DLQ_URL", dlq_url.clone()),
            ("HUB_MAX_RECEIVE_COUNT", max_receive.to_string()),
            ("HUB_SECRETS_ID", secret_arn.clone()),
            ("HUB_MAPPINGS_REFRESH_SECS", "0".into()),
            ("HUB_SWEEP_GRACE_SECS", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Ok(Self { clients, table, queue_url, dlq_url, secret_arn, env: vars })
    }

    /// The functions' settings, from [`Deployment::env`].
    pub fn settings(&self) -> anyhow::Result<hub_aws::Settings> {
        Ok(hub_aws::Settings::from_lookup(|k| self.env.get(k).cloned())?)
    }

    /// A cold start of the functions, sending with `forwarder` by `clock`.
    pub async fn shell(&self, forwarder: Arc<dyn Forwarder>, clock: Arc<dyn Clock>) -> anyhow::Result<Shell> {
        Shell::build(self.settings()?, &self.clients, forwarder, clock).await
    }

    /// One round of the SQS event source mapping: receives a batch, hands it to `deliver-sqs`
    /// (`shell`), deletes what it did not report as failed. Returns how many messages it
    /// handed over (0: the queue had nothing visible within a second).
    pub async fn pump_once(&self, shell: &Shell) -> anyhow::Result<usize> {
        let out = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .context("receive")?;
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            return Ok(0);
        }
        let template: Value = serde_json::from_str(SQS_RECORD)?;
        let records: Vec<Value> = msgs
            .iter()
            .map(|m| {
                let mut r = template.clone();
                r["messageId"] = json!(m.message_id());
                r["receiptHandle"] = json!(m.receipt_handle());
                r["body"] = json!(m.body());
                let attrs: HashMap<String, String> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
                    .unwrap_or_default();
                r["attributes"] = json!(attrs);
                r
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({"Records": records}))?;
        let resp = crate::deliver(shell, event).await;
        let failed: Vec<&str> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        for m in &msgs {
            if !failed.iter().any(|f| Some(*f) == m.message_id()) {
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .context("delete")?;
            }
        }
        Ok(msgs.len())
    }
}

/// Invokes an HTTP function the way `lambda_http::run` does: the event `fixture` (JSON) with
/// its method, path, body and extra headers set. Returns (statusCode, body as JSON, or as a
/// JSON string when it is not JSON).
pub async fn invoke(
    app: axum::Router,
    fixture: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Value)> {
    let mut ev: Value = serde_json::from_str(fixture)?;
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["body"] = json!(body);
    ev["headers"]["content-length"] = json!(body.len().to_string());
    for (k, v) in headers {
        ev["headers"][k.to_ascii_lowercase()] = json!(v);
    }
    let req: LambdaRequest = serde_json::from_value(ev).context("a Lambda HTTP event")?;
    let adapter = lambda_http::Adapter::from(app);
    let resp =
        adapter.oneshot(LambdaEvent::new(req, Context::default())).await.map_err(|e| anyhow::anyhow!(e))?;
    let resp = serde_json::to_value(&resp)?;
    let status = resp["statusCode"].as_u64().and_then(|s| u16::try_from(s).ok()).context("statusCode")?;
    let body =
        resp["body"].as_str().map(|b| serde_json::from_str(b).unwrap_or(json!(b))).unwrap_or(Value::Null);
    Ok((status, body))
}
