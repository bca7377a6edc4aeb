//! `deliver-sqs`: runs the jobs of an SQS batch (dispatch, delivery attempts) and reports
//! partial batch failures.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub_lambda::init_tracing();
    let shell = hub_lambda::Shell::from_env().await.map_err(|e| format!("cold start failed: {e:#}"))?;
    hub_lambda::run_deliver(shell).await
}
