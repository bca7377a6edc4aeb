//! The queue port on SQS: one message per job, delayed with `DelaySeconds` when due later.

use crate::{AwsError, Service};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use hub_core::ids::{DeliveryId, EventId};
use hub_core::ports::{Job, Queue, QueueError};
use hub_core::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// SQS delays a message at most this long; later jobs wait in the store's due index for the
/// `schedule-tick` sweep.
pub const MAX_DELAY_SECS: u64 = 900;
/// A received message stays invisible at most this long (SQS limit: 12 hours).
pub const MAX_VISIBILITY_SECS: u64 = 12 * 3600;

/// A job as an SQS message body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum JobMessage {
    Dispatch { event: String },
    Attempt { event: String, delivery: String },
}

impl JobMessage {
    pub fn of(job: &Job) -> Self {
        match job {
            Job::Dispatch(e) => JobMessage::Dispatch { event: e.to_string() },
            Job::Attempt(e, d) => JobMessage::Attempt { event: e.to_string(), delivery: d.to_string() },
        }
    }

    pub fn job(&self) -> Job {
        match self {
            JobMessage::Dispatch { event } => Job::Dispatch(EventId::new(event.clone())),
            JobMessage::Attempt { event, delivery } => {
                Job::Attempt(EventId::new(event.clone()), DeliveryId::new(delivery.clone()))
            }
        }
    }

    pub fn parse(body: &str) -> Result<Job, BadJobMessage> {
        serde_json::from_str::<JobMessage>(body).map(|m| m.job()).map_err(BadJobMessage)
    }

    pub fn body(job: &Job) -> String {
        serde_json::to_string(&JobMessage::of(job)).unwrap_or_default()
    }
}

/// A message body that is not a job: it will never run, whoever receives it.
#[derive(Debug, thiserror::Error)]
#[error("not a job message: {0}")]
pub struct BadJobMessage(#[source] serde_json::Error);

impl BadJobMessage {
    /// A stable name of the kind, for logs and metrics (renaming it is a breaking change).
    pub fn code(&self) -> &'static str {
        "bad_job_message"
    }

    /// Never: the same body fails the same way on every receive.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Seconds from `now` until `due`, rounded up (SQS counts whole seconds).
pub fn secs_until(due: UnixMillis, now: UnixMillis) -> u64 {
    due.0.saturating_sub(now.0).div_ceil(1000)
}

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Makes a received message visible again after `secs` (its retry delay).
    pub async fn retry_after(&self, receipt: &str, secs: u64) -> Result<(), QueueError> {
        let secs = i32::try_from(secs.min(MAX_VISIBILITY_SECS)).unwrap_or(i32::MAX);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| AwsError::call(Service::Sqs, "ChangeMessageVisibility", &e))?;
        Ok(())
    }

    /// Sends a message body as it is (moving a message to a dead-letter queue).
    pub async fn send_raw(&self, body: &str) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| AwsError::call(Service::Sqs, "SendMessage", &e))?;
        Ok(())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn enqueue(&self, jobs: &[(Job, UnixMillis)], now: UnixMillis) -> Result<(), QueueError> {
        let soon: Vec<_> = jobs.iter().filter(|(_, due)| secs_until(*due, now) <= MAX_DELAY_SECS).collect();
        for chunk in soon.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (job, due))| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(JobMessage::body(job))
                        .delay_seconds(i32::try_from(secs_until(*due, now)).unwrap_or(0))
                        .build()
                        .map_err(|e| QueueError::Invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| AwsError::call(Service::Sqs, "SendMessageBatch", &e))?;
            if let Some(f) = out.failed.first() {
                return Err(QueueError::Partial {
                    failed: out.failed.len(),
                    sent: chunk.len(),
                    reason: f.message().unwrap_or(f.code()).to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_messages_round_trip() {
        let jobs = [
            Job::Dispatch(EventId::new("evt_1")),
            Job::Attempt(EventId::new("evt_1"), DeliveryId::new("dlv_2")),
        ];
        for j in jobs {
            assert_eq!(JobMessage::parse(&JobMessage::body(&j)).ok(), Some(j));
        }
        assert_eq!(
            JobMessage::body(&Job::Dispatch(EventId::new("evt_1"))),
            r#"{"job":"dispatch","event":"evt_1"}"#
        );
        assert!(JobMessage::parse("{}").is_err());
        let bad = JobMessage::parse("not json").unwrap_err();
        assert_eq!((bad.code(), bad.is_retryable()), ("bad_job_message", false));
        assert!(bad.to_string().starts_with("not a job message: "), "{bad}");
    }

    #[test]
    fn delays_round_up_to_whole_seconds() {
        assert_eq!(secs_until(UnixMillis(1_000), UnixMillis(1_000)), 0);
        assert_eq!(secs_until(UnixMillis(1_001), UnixMillis(1_000)), 1);
        assert_eq!(secs_until(UnixMillis(500), UnixMillis(1_000)), 0);
        assert_eq!(secs_until(UnixMillis(61_000), UnixMillis(1_000)), 60);
    }
}
