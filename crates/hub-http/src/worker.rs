//! The local delivery worker: takes due jobs from the store and runs them on the core, with
//! bounded concurrency. Jobs stay in the store until their outcome is recorded, so a crash only
//! means they run again after restart.

use async_trait::async_trait;
use hub_core::pipeline::Hub;
use hub_core::ports::{Job, Queue, QueueError};
use hub_core::time::UnixMillis;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tracing::{error, info};

/// How often the worker looks at the queue even when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

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
        let mut last_purge = UnixMillis(0);
        loop {
            let now = self.hub.clock.now();
            if now.since(last_purge) >= PURGE_EVERY {
                last_purge = now;
                match self.hub.store.purge_dedup(now).await {
                    Ok(n) if n > 0 => info!(purged = n, "expired dedup keys forgotten"),
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "dedup purge failed"),
                }
            }
            let batch = self.concurrency * 4;
            match self.hub.store.due_jobs(now, batch).await {
                Ok(jobs) => {
                    for job in jobs {
                        if !lock(&in_flight).insert(job.clone()) {
                            continue;
                        }
                        let Ok(permit) = permits.clone().acquire_owned().await else { return };
                        let hub = self.hub.clone();
                        let in_flight = in_flight.clone();
                        let wake = self.wake.clone();
                        tokio::spawn(async move {
                            if let Err(e) = hub.run_job(&job).await {
                                error!(job = ?job, error = %e, "job failed; it stays queued");
                                tokio::time::sleep(IDLE_POLL).await;
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
            let wait = match self.hub.store.next_due().await {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
