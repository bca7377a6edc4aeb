//! `admin-http`: events (list, show, replay) and mapping pushes, behind an IAM-authenticated
//! Function URL.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub_lambda::init_tracing();
    let shell = hub_lambda::Shell::from_env().await.map_err(|e| format!("cold start failed: {e:#}"))?;
    lambda_http::run(hub_lambda::admin_app(shell)).await
}
