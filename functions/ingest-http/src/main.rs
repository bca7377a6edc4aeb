//! `ingest-http`: webhooks from API Gateway (HTTP API, payload v2) or a Function URL, answered
//! by the same router as `hub serve`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub_lambda::init_tracing();
    let shell = hub_lambda::Shell::from_env().await.map_err(|e| format!("cold start failed: {e:#}"))?;
    lambda_http::run(hub_lambda::ingest_app(shell)).await
}
