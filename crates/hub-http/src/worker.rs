//! The local delivery worker: takes due jobs from the store and runs them on the core, with
//! bounded concurrency. Jobs stay in the store until their outcome is recorded, so a crash only
//! means they run again after restart. It also purges expired events in bounded passes.
//!
//! A job that fails on the store moves back in the queue (1 s, doubling up to 10 min), so
//! failing jobs never hold the head of the queue; after [`MAX_JOB_FAILURES`] failures in a row
//! its dispatch or delivery is recorded dead with the reason.

use async_trait::async_trait;
use hub_core::pipeline::Hub;
use hub_core::ports::{Job, JobFailed, JobFailure, Queue, QueueError};
use hub_core::time::UnixMillis;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tracing::{error, info, warn};

/// How often the worker looks at the queue even when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often expired events and dedup keys are purged, and how many per pass (one commit).
const PURGE_EVERY: Duration = Duration::from_secs(60);
const PURGE_BATCH: usize = 256;
/// A job that failed on the store this many times in a row is given up.
pub const MAX_JOB_FAILURES: u32 = 10;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// When a job that failed `failures` times in a row runs again.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

/// The local queue: wakes the worker, which reads due jobs from the store.
#[derive(Default)]
pub struct WakeQueue(pub Arc<Notify>);

#[async_trait]
impl Queue for WakeQueue {
    async fn enqueue(&self, _jobs: &[(Job, UnixMillis)], _now: UnixMillis) -> Result<(), QueueError> {
        self.0.notify_one();
        Ok(())
    }
}

pub struct Worker {
    hub: Arc<Hub>,
    wake: Arc<Notify>,
    concurrency: usize,
}

impl Worker {
    pub fn new(hub: Arc<Hub>, wake: Arc<Notify>, concurrency: usize) -> Self {
        Self { hub, wake, concurrency: concurrency.max(1) }
    }

    /// Runs until `shutdown` resolves. In-flight jobs are left to finish or, if the process
    /// dies, to run again: nothing is lost either way.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let in_flight: Arc<Mutex<HashSet<Job>>> = Arc::default();
        let _purger = AbortOnDrop(tokio::spawn(purge_loop(self.hub.clone())));
        let failures: Arc<Mutex<HashMap<Job, u32>>> = Arc::default();
        loop {
            let now = self.hub.now();
            let batch = self.concurrency * 4;
            match self.hub.due_jobs(batch).await {
                Ok(jobs) => {
                    for job in jobs {
                        if !lock(&in_flight).insert(job.clone()) {
                            continue;
                        }
                        let Ok(permit) = permits.clone().acquire_owned().await else { return };
                        let hub = self.hub.clone();
                        let in_flight = in_flight.clone();
                        let wake = self.wake.clone();
                        let failures = failures.clone();
                        tokio::spawn(async move {
                            match hub.run_job(&job).await {
                                Ok(_) => {
                                    lock(&failures).remove(&job);
                                }
                                Err(e) => job_failed(&hub, &job, &e.to_string(), &failures).await,
                            }
                            lock(&in_flight).remove(&job);
                            drop(permit);
                            // A finished job may have queued the next one (dispatch → attempts).
                            wake.notify_one();
                        });
                    }
                }
                Err(e) => error!(error = %e, "cannot read the job queue"),
            }
            let wait = match self.hub.next_due().await {
                Ok(Some(due)) if due > now => Duration::from_millis(due.0 - now.0).min(IDLE_POLL),
                Ok(Some(_)) => Duration::from_millis(50),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Records a failed run of `job` in the store: back-off, or dead after too many.
async fn job_failed(hub: &Hub, job: &Job, reason: &str, failures: &Mutex<HashMap<Job, u32>>) {
    let n = {
        let mut f = lock(failures);
        let n = f.entry(job.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let now = hub.now();
    let failure = JobFailure {
        reason: reason.to_string(),
        at: now,
        retry_at: now.plus(backoff(n)),
        max_failures: MAX_JOB_FAILURES,
    };
    match hub.job_failed(job, &failure).await {
        Ok(JobFailed::Deferred { failures }) => {
            warn!(job = ?job, error = reason, failures, retry_at = %failure.retry_at.to_rfc3339(), "job failed on the store; it runs again later");
        }
        Ok(JobFailed::Dead { failures: n }) => {
            lock(failures).remove(job);
            error!(job = ?job, error = reason, failures = n, "job failed too often; recorded dead");
        }
        Ok(JobFailed::Gone) => {
            lock(failures).remove(job);
        }
        Err(e) => {
            // The store cannot even record the failure (it is down): the job stays due; wait a
            // little before it is picked again.
            error!(job = ?job, error = reason, record_error = %e, "job failed; it stays queued");
            tokio::time::sleep(backoff(n).min(IDLE_POLL * 5)).await;
        }
    }
}

/// Purges expired events and dedup keys: one bounded pass per commit, passes back to back
/// while more is due, then a pause. Ingest commits interleave with the passes.
async fn purge_loop(hub: Arc<Hub>) {
    loop {
        let mut total = (0, 0);
        loop {
            match hub.purge(PURGE_BATCH).await {
                Ok(p) => {
                    total.0 += p.events;
                    total.1 += p.dedup_keys;
                    if !p.more {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    error!(error = %e, "purge failed");
                    break;
                }
            }
        }
        if total != (0, 0) {
            info!(events = total.0, dedup_keys = total.1, "expired events and dedup keys purged");
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}

/// Stops a background task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_ten_minutes() {
        let got: Vec<u64> = [1, 2, 3, 10, 11, 40].iter().map(|n| backoff(*n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 512, 600, 600]);
    }
}
