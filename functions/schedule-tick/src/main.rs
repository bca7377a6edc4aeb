//! `schedule-tick`: on an EventBridge schedule, sends overdue jobs to the queue and forgets
//! expired dedup keys.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub_lambda::init_tracing();
    let shell = hub_lambda::Shell::from_env().await.map_err(|e| format!("cold start failed: {e:#}"))?;
    hub_lambda::run_tick(shell).await
}
