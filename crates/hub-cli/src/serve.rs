//! `hub serve`: ingest, worker and scheduler in one process on the embedded store.

use crate::{admin_access, files};
use anyhow::{Context, Result};
use hub_core::mapping::MappingSet;
use hub_core::pipeline::Hub;
use hub_core::secret::{EnvSecrets, SecretSource};
use hub_core::time::SystemClock;
use hub_http::admin::AdminGuard;
use hub_http::forwarder::{ForwarderConfig, HttpForwarder};
use hub_http::router::{AppState, admin_router, router};
use hub_http::server::{self, Limits};
use hub_http::worker::{WakeQueue, Worker};
use hub_store_redb::RedbStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The public listener: `/hooks/...` and `/healthz` only.
    pub listen: SocketAddr,
    /// The admin listener (events, replay); must be a loopback address.
    pub admin_listen: SocketAddr,
    /// `HUB_ADMIN_TOKEN`; `None` uses (or creates) the token file next to the store.
    pub admin_token: Option<String>,
    /// Timeouts and caps of both listeners.
    pub limits: Limits,
    /// Where `--dev` starts the catcher that prints what it receives.
    pub catcher_listen: SocketAddr,
    pub store: PathBuf,
    pub mappings: PathBuf,
    /// Private networks routes may be allowed to reach with `to.allow_net` (e.g. 127.0.0.0/8
    /// in tests); a route asking for anything outside them fails the start.
    pub allow_nets: Vec<ipnet::IpNet>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub concurrency: usize,
    /// Unset secrets resolve to placeholders instead of failing the start.
    pub dev: bool,
}

/// Loads mappings (secrets from the environment; any problem fails the start), opens the store.
/// `catcher` is the `--dev` catcher's address: the one loopback destination let through.
pub fn build_hub(
    cfg: &ServeConfig,
    wake: Arc<Notify>,
    catcher: Option<SocketAddr>,
    observer: Arc<dyn hub_core::ports::observe::Observer>,
) -> Result<(Arc<Hub>, RedbStore)> {
    let paths = files::mapping_files(&cfg.mappings)
        .with_context(|| format!("reading mappings from {}", cfg.mappings.display()))?;
    let texts = files::read_all(&paths)?;
    let dev = crate::dev_secrets::DevSecrets::default();
    let secrets: &dyn SecretSource = if cfg.dev { &dev } else { &EnvSecrets };
    let set = MappingSet::compile(&texts, secrets).map_err(|diags| {
        let list: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("mappings do not compile:\n{}", list.join("\n"))
    })?;
    set.check_reach(&cfg.allow_nets).map_err(|diags| {
        let list: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("mappings ask for networks this hub does not allow:\n{}", list.join("\n"))
    })?;
    let redb = RedbStore::open(&cfg.store)?;
    let forwarder = HttpForwarder::new(ForwarderConfig {
        allow_nets: cfg.allow_nets.clone(),
        allow_addrs: catcher.into_iter().collect(),
        ..Default::default()
    })?;
    for s in set.sources.values() {
        info!(source = %s.id, routes = s.routes.len(), file = %s.file, "source loaded");
        if s.is_unverified() {
            warn!(source = %s.id, file = %s.file, "source is unverified (`verify: none`): {}", s.openness());
        }
    }
    let hub = Arc::new(
        Hub::new(
            Arc::new(set),
            Arc::new(redb.clone()),
            Arc::new(forwarder),
            Arc::new(SystemClock),
            Arc::new(WakeQueue(wake)),
        )
        .with_observer(observer),
    );
    Ok((hub, redb))
}

/// A write past a file-size limit (`ulimit -f`) raises SIGXFSZ, whose default action kills the
/// process. Caught, the write fails with EFBIG instead, which the store treats like a full disk:
/// it answers 503 and recovers by itself once the limit allows the write.
#[cfg(unix)]
fn catch_file_size_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut s) => {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    warn!("a write went past the process's file-size limit");
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot catch SIGXFSZ; a file-size limit would stop the process"),
    }
}

pub async fn serve(cfg: ServeConfig) -> Result<()> {
    #[cfg(unix)]
    catch_file_size_signal();
    if !cfg.admin_listen.ip().to_canonical().is_loopback() {
        anyhow::bail!(
            "--admin-listen {} is not a loopback address; the admin listener serves this machine only",
            cfg.admin_listen
        );
    }
    let catcher = if cfg.dev { start_catcher(cfg.catcher_listen).await } else { None };
    let wake = Arc::new(Notify::new());
    let counters = Arc::new(hub_http::metrics::Counters::default());
    let (hub, store) = build_hub(&cfg, wake.clone(), catcher, counters.clone())?;
    let version = crate::mappings_push::record_start_set(&store, &cfg.mappings).await?;
    info!(version, "mapping set in force");
    let state = AppState { hub: hub.clone(), trusted_proxies: Arc::new(cfg.trusted_proxies.clone()) };
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {} (--admin-listen)", cfg.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let token = match &cfg.admin_token {
        Some(t) => t.clone(),
        None => admin_access::load_or_create_token(&cfg.store)?,
    };
    admin_access::write_addr(&cfg.store, admin_addr)?;
    let guard = Arc::new(AdminGuard::new(token, admin_addr));
    let app = server::with_limits(router(state.clone()), &cfg.limits);
    let push = crate::mappings_push::LocalPush {
        hub: hub.clone(),
        store: store.clone(),
        allow_nets: cfg.allow_nets.clone(),
        dev: cfg.dev,
    };
    let extra = push.routes().merge(counters.routes());
    let admin_app = server::with_limits(admin_router(state, guard, extra), &cfg.limits);
    info!(%addr, store = %cfg.store.display(), sources = hub.mappings().sources.len(), "hub listening");
    let token_from = match cfg.admin_token {
        Some(_) => "HUB_ADMIN_TOKEN".to_string(),
        None => admin_access::token_path(&cfg.store).display().to_string(),
    };
    info!(addr = %admin_addr, token = %token_from, "admin listening (bearer token required)");
    // Printed for scripts and tests that start on port 0.
    println!("listening on http://{addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker = Worker::new(hub.clone(), wake, cfg.concurrency);
    let worker_task = tokio::spawn(worker.run(stopped(stop_rx.clone())));
    let limits = cfg.limits;
    let public = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move { server::serve(listener, app, &limits, stop).await }
    });
    let admin = tokio::spawn({
        let stop = stopped(stop_rx);
        async move { server::serve(admin_listener, admin_app, &limits, stop).await }
    });
    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    public.await??;
    admin.await??;
    worker_task.await?;
    Ok(())
}

/// Starts the `--dev` catcher; a busy port only costs the catcher, not the start.
async fn start_catcher(listen: SocketAddr) -> Option<SocketAddr> {
    match crate::catcher::start(listen).await {
        Ok(addr) => {
            info!(%addr, "dev catcher listening; it prints every request it receives");
            Some(addr)
        }
        Err(e) => {
            warn!(%listen, error = %e, "dev catcher not started (--catcher-listen to pick another address)");
            None
        }
    }
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
