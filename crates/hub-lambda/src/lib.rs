//! The AWS Lambda shell: what each function does with the event it is handed.
//!
//! A [`Shell`] is built once per cold start (settings, SDK clients, secrets, the mapping set,
//! the forwarder); a bad configuration fails the cold start. The handlers translate one Lambda
//! event into calls of the core's use cases:
//!
//! - `ingest-http`: the same axum router as `hub serve` ([`ingest_app`]), behind `lambda_http`
//!   (API Gateway HTTP API v2 and Function URL events), so both shells answer identically.
//! - `deliver-sqs`: [`deliver`] runs each message's job and reports partial batch failures;
//!   retries are the message's visibility timeout, exhausted ones go to the dead-letter queue.
//! - `schedule-tick`: [`tick`] sends jobs the queue missed or could not delay long enough.
//! - `admin-http`: [`admin_app`], the admin routes plus mapping pushes, behind an
//!   IAM-authenticated Function URL.

pub mod emulated;

use anyhow::Context as _;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hub_aws::mappings::{DLQ_RETENTION, Limits, LiveMappings, MappingRepo, SecretRefresh};
use hub_aws::metrics::Metrics;
use hub_aws::sqs::{JobMessage, MAX_VISIBILITY_SECS, SqsQueue, secs_until};
use hub_aws::storage::DynamoStorage;
use hub_aws::{AwsError, Clients, Settings};
use hub_core::error::{ErrorCode, PublicError};
use hub_core::pipeline::{DUE_TOLERANCE_MS, Hub, JobOutcome, RunOptions};
use hub_core::ports::schedule::{Scheduler as _, TimerKey};
use hub_core::ports::{Forwarder, Job, Queue as _};
use hub_core::time::{Clock, SystemClock, UnixMillis};
use hub_http::router::{AppState, admin_routes, error_response, router};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::{error, info, warn};

/// What the handlers of one function instance share. Cheap to clone.
#[derive(Clone)]
pub struct Shell {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<Hub>,
    live: LiveMappings,
    repo: MappingRepo,
    /// The storage the hub runs on, for what only this shell does with it (claims of overdue
    /// and redelivered jobs).
    store: DynamoStorage,
    settings: Settings,
    queue: SqsQueue,
    dlq: Option<SqsQueue>,
}

/// Said in the record of a delivery whose retries ran out in this shell.
const DEAD_LETTER_NOTE: &str = "moved to the dead-letter queue";

impl Shell {
    /// Builds everything from the environment the SAM template sets. Any error fails the cold
    /// start: Lambda reports it and retries the start, no request is half-served.
    pub async fn from_env() -> anyhow::Result<Self> {
        let settings = Settings::from_env()?;
        let clients = Clients::from_env().await;
        let forwarder = hub_http::forwarder::HttpForwarder::new(hub_http::forwarder::ForwarderConfig {
            allow_nets: settings.allow_nets.clone(),
            ..Default::default()
        })
        .context("building the outbound HTTP client")?;
        Self::build(settings, &clients, Arc::new(forwarder), Arc::new(SystemClock)).await
    }

    pub async fn build(
        settings: Settings,
        clients: &Clients,
        forwarder: Arc<dyn Forwarder>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::stdout(settings.metrics_namespace.clone());
        Self::build_with(settings, clients, metrics, forwarder, clock).await
    }

    /// As [`Shell::build`], with the metrics sink given (tests keep the lines in memory).
    pub async fn build_with(
        settings: Settings,
        clients: &Clients,
        metrics: Metrics,
        forwarder: Arc<dyn Forwarder>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let store = clients.storage(&settings);
        let queue = SqsQueue::new(clients.sqs.clone(), settings.queue_url()?);
        let secrets = clients.secrets(&settings).await.context("loading secrets from Secrets Manager")?;
        let ids = settings.secret_ids();
        let refresh = (!ids.is_empty()).then(|| SecretRefresh {
            client: clients.secrets.clone(),
            ids,
            held_some: settings.secrets_held_some,
            every: settings.secrets_refresh,
        });
        let limits = Limits {
            retention: settings.retention,
            dlq_retention: DLQ_RETENTION,
            allow_nets: Some(settings.allow_nets.clone()),
        };
        let repo = MappingRepo::new(clients.dynamodb.clone(), settings.table.clone());
        let (live, set) =
            LiveMappings::load(repo.clone(), secrets, refresh, limits, settings.mappings_refresh)
                .await
                .context("loading the mapping set")?;
        let dlq = settings.dlq_url.as_ref().map(|u| SqsQueue::new(clients.sqs.clone(), u.clone()));
        let hub = Arc::new(
            Hub::new(Arc::new(set), Arc::new(store.clone()), forwarder, clock, Arc::new(queue.clone()))
                .with_observer(Arc::new(metrics)),
        );
        Ok(Self { inner: Arc::new(Inner { hub, live, repo, store, settings, queue, dlq }) })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Puts a newly pushed mapping set in force (checked at most every refresh interval).
    pub async fn refresh(&self) {
        self.inner.live.refresh(&self.inner.hub).await;
    }

    pub fn mappings_version(&self) -> u64 {
        self.inner.live.version()
    }
}

/// Logs as JSON lines (CloudWatch adds the time); `RUST_LOG` sets the level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().json().with_env_filter(filter).without_time().with_target(false).try_init();
}

/// The client address API Gateway saw, as the connection address the router reads (for
/// `ip_allow`), and a check for a newer mapping set before the request is served.
async fn lambda_request_layer(
    State(shell): State<Shell>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use lambda_http::RequestExt as _;
    let ip = request.request_context_ref().and_then(|ctx| match ctx {
        lambda_http::request::RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    });
    if let Some(ip) = ip.and_then(|s| s.parse::<IpAddr>().ok()) {
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 0)));
    }
    shell.refresh().await;
    next.run(request).await
}

/// The ingest function's HTTP surface: exactly `hub serve`'s router.
pub fn ingest_app(shell: Shell) -> axum::Router {
    router(AppState::new(shell.hub().clone()))
        .layer(axum::middleware::from_fn_with_state(shell, lambda_request_layer))
}

/// The admin function's HTTP surface: events (list, show, replay) and mapping sets.
pub fn admin_app(shell: Shell) -> axum::Router {
    let mappings = axum::Router::new()
        .route("/admin/mappings", get(mappings_show).post(mappings_push))
        .with_state(shell.clone());
    admin_routes(AppState::new(shell.hub().clone()))
        .merge(mappings)
        .fallback(|uri: axum::http::Uri| async move {
            error_response(&PublicError::new(ErrorCode::NotFound, format!("no route for {}", uri.path())))
        })
        .layer(axum::middleware::from_fn_with_state(shell, lambda_request_layer))
}

async fn mappings_show(State(shell): State<Shell>) -> Response {
    let set = shell.hub().mappings();
    let sources: Vec<_> = set.sources.values().map(|s| json!({"id": s.id, "file": s.file})).collect();
    Json(json!({"version": shell.mappings_version(), "sources": sources})).into_response()
}

#[derive(serde::Deserialize)]
struct PushBody {
    /// File name → YAML text.
    files: BTreeMap<String, String>,
}

/// Compiles the pushed files with this deployment's secrets, stores them as the next version
/// and puts it in force here at once (other instances follow within the refresh interval).
async fn mappings_push(State(shell): State<Shell>, body: axum::body::Bytes) -> Response {
    let push: PushBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error_response(&PublicError::new(
                ErrorCode::InvalidBody,
                format!("expected {{\"files\": {{\"name.yaml\": \"text\", ...}}}}: {e}"),
            ));
        }
    };
    let files: Vec<(String, String)> = push.files.into_iter().collect();
    let secrets = shell.inner.live.secrets();
    let set = match hub_core::mapping::MappingSet::compile(&files, secrets.as_ref()) {
        Ok(set) => set,
        Err(diags) => {
            let list: Vec<String> = diags.iter().map(ToString::to_string).collect();
            let e = PublicError::new(ErrorCode::InvalidMapping, list.join("\n"));
            let mut body = e.to_json();
            body["error"]["diagnostics"] = json!(list);
            return (axum::http::StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
        }
    };
    if let Err(m) = shell.inner.live.limits().check(&set).map_err(|e| e.to_string()) {
        let e = PublicError::new(ErrorCode::InvalidMapping, m.clone());
        let mut body = e.to_json();
        body["error"]["diagnostics"] = json!([m]);
        return (axum::http::StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    match shell.inner.repo.push(&files, shell.hub().now().0).await {
        Ok(version) => {
            shell.inner.live.install(shell.hub(), version, set);
            info!(version, files = files.len(), "mapping set pushed");
            Json(json!({"status": "pushed", "version": version, "files": files.len()})).into_response()
        }
        Err(e @ AwsError::PushConflict { .. }) => {
            error_response(&PublicError::new(ErrorCode::Conflict, e.to_string()))
        }
        Err(e @ AwsError::MappingFileTooLarge { .. }) => {
            error_response(&PublicError::new(ErrorCode::InvalidMapping, e.to_string()))
        }
        Err(e) => {
            error!(error = %e, "mapping push failed");
            error_response(&PublicError::new(
                ErrorCode::StoreUnavailable,
                "the mapping set could not be stored",
            ))
        }
    }
}

/// Handles one SQS batch: each message's job runs concurrently; the response lists the
/// messages that must come back (partial batch failure), never the whole batch.
///
/// Dispatch jobs of a batch run one at a time: a dispatch holds its parsed body and the
/// rendered requests (a 6 MB body can take a few hundred MB), while an attempt holds one
/// rendered request; so the function's memory needs to fit one dispatch, not a batch of them.
pub async fn deliver(shell: &Shell, event: SqsEvent) -> SqsBatchResponse {
    shell.refresh().await;
    let dispatches = Arc::new(tokio::sync::Semaphore::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for msg in event.records {
        let shell = shell.clone();
        let dispatches = dispatches.clone();
        tasks.spawn(async move {
            let id = msg.message_id.clone().unwrap_or_default();
            (id, deliver_one(&shell, msg, &dispatches).await)
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, MessageResult::Done)) => {}
            Ok((id, MessageResult::Again)) => failures.push(id),
            // A panicked task cannot say which message it had; a panic is a bug we must see,
            // but the other messages' results still count.
            Err(e) => error!(error = %e, "a message handler panicked"),
        }
    }
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    resp
}

/// Whether the queue deletes a message or hands it over again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MessageResult {
    Done,
    Again,
}

async fn deliver_one(shell: &Shell, msg: SqsMessage, dispatches: &tokio::sync::Semaphore) -> MessageResult {
    let body = msg.body.clone().unwrap_or_default();
    let job = match JobMessage::parse(&body) {
        Ok(j) => j,
        Err(e) => {
            // It will never parse: the redrive policy moves it to the DLQ after its receives.
            error!(message = msg.message_id.as_deref().unwrap_or(""), error = %e, "unreadable message");
            return MessageResult::Again;
        }
    };
    let _permit = match job {
        Job::Dispatch(_) => dispatches.acquire().await.ok(),
        Job::Attempt(..) => None,
    };
    let settings = shell.settings();
    let now = shell.hub().now();
    let receives: u32 =
        msg.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1);
    if receives > 1 {
        // The last receive of this message ended without an outcome (the function crashed,
        // timed out or ran out of memory, or the store failed): that run is counted on the
        // job's timer, and a job whose runs keep ending so is recorded dead.
        let lease = UnixMillis(
            now.0.saturating_add(u64::try_from(settings.job_lease.as_millis()).unwrap_or(u64::MAX)),
        );
        match shell
            .inner
            .store
            .claim(&TimerKey::of_job(&job), UnixMillis(now.0.saturating_add(DUE_TOLERANCE_MS)), lease)
            .await
        {
            Ok(Some(claimed)) if claimed.failures > settings.max_runs => {
                let reason = format!(
                    "{} runs ended without an outcome (the function crashed, timed out or ran out of memory on this job)",
                    claimed.failures - 1
                );
                return match record_dead(shell, &job, reason).await {
                    Ok(()) => MessageResult::Done,
                    Err(e) => {
                        error!(job = ?job, error = %e, "could not record a job that cannot be processed");
                        MessageResult::Again
                    }
                };
            }
            Ok(Some(_)) => {}
            // Done, or due later (its own message or the tick brings it then).
            Ok(None) => return MessageResult::Done,
            Err(e) => {
                error!(job = ?job, error = %e, "job not started: the store failed; the message comes back");
                return MessageResult::Again;
            }
        }
    }
    let receipt = msg.receipt_handle.as_deref();
    let last_chance = receives >= settings.max_receive;
    let mut opts = RunOptions {
        last_chance,
        dead_letter_note: Some(DEAD_LETTER_NOTE.into()),
        report_missing_mappings: true,
    };
    let mut outcome = shell.hub().run_job_with(&job, &opts).await;
    if let Ok(JobOutcome::MappingsMissing) = outcome {
        // Pushed a moment ago and not loaded here yet? Load the newest set before calling the
        // job's source or route gone.
        shell.inner.live.refresh_forced(shell.hub()).await;
        opts.report_missing_mappings = false;
        outcome = shell.hub().run_job_with(&job, &opts).await;
    }
    match outcome {
        Ok(JobOutcome::Done | JobOutcome::MappingsMissing) => MessageResult::Done,
        Ok(JobOutcome::RetryAt(at)) => {
            // A new message delayed until the retry is due (up to SQS's 15 minutes; later ones
            // the tick sends when they are due): a waiting retry is never a message in flight.
            match shell.inner.queue.enqueue(&[(job.clone(), at)], shell.hub().now()).await {
                Ok(()) => MessageResult::Done,
                Err(e) => {
                    warn!(error = %e, "could not queue the retry; this message comes back instead");
                    if let Some(r) = receipt
                        && let Err(e) = shell
                            .inner
                            .queue
                            .retry_after(r, secs_until(at, shell.hub().now()).min(MAX_VISIBILITY_SECS))
                            .await
                    {
                        warn!(error = %e, "could not delay the message either; it comes back after the queue's visibility timeout");
                    }
                    MessageResult::Again
                }
            }
        }
        Ok(JobOutcome::Exhausted) if last_chance => {
            // The queue's redrive policy moves it to the DLQ on its next receive: now.
            if let Some(r) = receipt
                && let Err(e) = shell.inner.queue.retry_after(r, 0).await
            {
                warn!(error = %e, "could not release the message; the redrive happens after its visibility timeout");
            }
            MessageResult::Again
        }
        Ok(JobOutcome::Exhausted) => match &shell.inner.dlq {
            // The route gave up before the queue's receive limit: move it as the redrive would.
            Some(dlq) => match dlq.send_raw(&body).await {
                Ok(()) => MessageResult::Done,
                Err(e) => {
                    error!(error = %e, job = ?job, "could not move an exhausted message to the DLQ");
                    MessageResult::Again
                }
            },
            None => MessageResult::Done,
        },
        Err(e) => {
            error!(job = ?job, error = %e, "job failed on the store; the message comes back");
            MessageResult::Again
        }
    }
}

/// Records a job that cannot be processed as dead: a dispatch as failed, a delivery as dead,
/// both with `reason` (the store counts it in the dead-events metric).
async fn record_dead(shell: &Shell, job: &Job, reason: String) -> Result<(), hub_core::ports::StoreError> {
    error!(job = ?job, reason = %reason, "job recorded dead");
    shell.hub().give_up(job, reason).await
}

/// What one schedule tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TickReport {
    /// Overdue jobs sent to the queue.
    pub swept: usize,
}

/// Most jobs one tick sends.
const SWEEP_LIMIT: usize = 1_000;

/// Sends jobs that are overdue by more than the grace period (their message was lost, could
/// not be sent, or was due later than SQS can delay). Each job sent is claimed for the sweep
/// lease first, so that later ticks do not send it again while its message waits in a backlog.
/// Expired items need nothing: DynamoDB's TTL deletes them, and an expired dedup key is free.
pub async fn tick(shell: &Shell) -> anyhow::Result<TickReport> {
    shell.refresh().await;
    let hub = shell.hub();
    let now = hub.now();
    let settings = shell.settings();
    let grace = u64::try_from(settings.sweep_grace.as_millis()).unwrap_or(u64::MAX);
    let cutoff = UnixMillis(now.0.saturating_sub(grace));
    let lease = u64::try_from(settings.sweep_lease.as_millis()).unwrap_or(u64::MAX);
    let until = UnixMillis(now.0.saturating_add(lease));
    let store = &shell.inner.store;
    let due = store.due(cutoff, SWEEP_LIMIT).await?;
    // Claimed concurrently: a claim is one conditional write.
    let claims = due.iter().map(|t| store.claim(&t.key, cutoff, until));
    let mut jobs: Vec<(Job, UnixMillis)> = Vec::new();
    for claimed in futures_util::future::join_all(claims).await {
        let Some(claimed) = claimed? else { continue };
        let Some(job) = claimed.timer.as_job().cloned() else { continue };
        if claimed.failures > settings.max_runs {
            let reason = format!(
                "{} runs ended without an outcome (the function crashed, timed out or ran out of memory on this job, or its messages were lost)",
                claimed.failures - 1
            );
            record_dead(shell, &job, reason).await?;
            continue;
        }
        jobs.push((job, now));
    }
    if !jobs.is_empty() {
        shell.inner.queue.enqueue(&jobs, now).await.map_err(|e| anyhow::anyhow!(e))?;
        info!(swept = jobs.len(), "overdue jobs sent to the queue");
    }
    Ok(TickReport { swept: jobs.len() })
}

/// Runs a `lambda_runtime` handler for SQS batches.
pub async fn run_deliver(shell: Shell) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<SqsEvent>| {
        let shell = shell.clone();
        async move { Ok::<_, lambda_runtime::Error>(deliver(&shell, ev.payload).await) }
    }))
    .await
}

/// Runs a `lambda_runtime` handler for EventBridge schedule events.
pub async fn run_tick(shell: Shell) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let shell = shell.clone();
            async move { tick(&shell).await.map_err(|e| lambda_runtime::Error::from(format!("{e:#}"))) }
        },
    ))
    .await
}
