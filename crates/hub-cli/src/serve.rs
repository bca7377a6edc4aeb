//! `hub serve`: ingest, worker and scheduler in one process on the embedded store.

use crate::files;
use anyhow::{Context, Result};
use hub_core::mapping::MappingSet;
use hub_core::pipeline::Hub;
use hub_core::secret::{EnvSecrets, Secret, SecretRef, SecretSource};
use hub_core::time::SystemClock;
use hub_http::forwarder::{ForwarderConfig, HttpForwarder};
use hub_http::router::{AppState, admin_router, router};
use hub_http::worker::{WakeQueue, Worker};
use hub_store_redb::RedbStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub store: PathBuf,
    pub mappings: PathBuf,
    /// Destination networks exempt from the private-address guard (e.g. 127.0.0.0/8 in tests).
    pub allow_nets: Vec<ipnet::IpNet>,
    pub concurrency: usize,
    /// Unset secrets resolve to placeholders instead of failing the start.
    pub dev: bool,
}

/// Loads mappings (secrets from the environment; any problem fails the start), opens the store.
pub fn build_hub(cfg: &ServeConfig, wake: Arc<Notify>) -> Result<Arc<Hub>> {
    let paths = files::mapping_files(&cfg.mappings)
        .with_context(|| format!("reading mappings from {}", cfg.mappings.display()))?;
    let texts = files::read_all(&paths)?;
    let dev = DevSecrets::default();
    let secrets: &dyn SecretSource = if cfg.dev { &dev } else { &EnvSecrets };
    let set = MappingSet::compile(&texts, secrets).map_err(|diags| {
        let list: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("mappings do not compile:\n{}", list.join("\n"))
    })?;
    let store = RedbStore::open(&cfg.store)?;
    let forwarder =
        HttpForwarder::new(ForwarderConfig { allow_nets: cfg.allow_nets.clone(), ..Default::default() })?;
    for s in set.sources.values() {
        info!(source = %s.id, routes = s.routes.len(), file = %s.file, "source loaded");
        if s.is_unverified() {
            warn!(source = %s.id, file = %s.file, "source is unverified (`verify: none`): {}", s.openness());
        }
    }
    Ok(Arc::new(Hub::new(
        Arc::new(set),
        Arc::new(store),
        Arc::new(forwarder),
        Arc::new(SystemClock),
        Arc::new(WakeQueue(wake)),
    )))
}

/// `--dev`: environment first, then a placeholder, with one warning per unset reference.
#[derive(Default)]
struct DevSecrets(std::sync::Mutex<std::collections::HashSet<SecretRef>>);

impl SecretSource for DevSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        EnvSecrets.resolve(r).filter(|s| hub_core::secret::is_usable(s.expose())).or_else(|| {
            let mut warned = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if warned.insert(r.clone()) {
                warn!(secret = %r, "secret not set; --dev uses the placeholder `<{r}>`");
            }
            crate::mappings_cmd::EnvOrPlaceholder.resolve(r)
        })
    }
}

pub async fn serve(cfg: ServeConfig) -> Result<()> {
    let wake = Arc::new(Notify::new());
    let hub = build_hub(&cfg, wake.clone())?;
    let state = AppState { hub: hub.clone() };
    let app = router(state.clone()).merge(admin_router(state));
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, store = %cfg.store.display(), sources = hub.mappings().sources.len(), "hub listening");
    // Printed for scripts and tests that start on port 0.
    println!("listening on http://{addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = Worker::new(hub.clone(), wake, cfg.concurrency);
    let mut worker_stop = stop_rx.clone();
    let worker_task = tokio::spawn(worker.run(async move {
        let _ = worker_stop.wait_for(|s| *s).await;
    }));
    let mut server_stop = stop_rx;
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|s| *s).await;
        });
    let server_task = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    server_task.await??;
    worker_task.await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
