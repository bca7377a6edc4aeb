//! The local mapping store: the set `hub serve` starts with is recorded as a version in the
//! store file, and `POST /admin/mappings` (what `hub mappings push --store local` calls) compiles
//! a new set, stores it as the next version and puts it in force at once, as the AWS admin
//! function does. `GET /admin/mappings` answers the version in force.

use crate::files;
use anyhow::{Context, Result};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hub_core::error::{ErrorCode, PublicError};
use hub_core::mapping::MappingSet;
use hub_core::pipeline::Hub;
use hub_core::ports::commit::CommitError;
use hub_core::ports::mappings::MappingStore;
use hub_core::secret::{EnvSecrets, SecretSource};
use hub_core::time::{Clock, SystemClock};
use hub_http::router::error_response;
use hub_store_redb::RedbStore;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tracing::{error, info};

/// What the push route needs.
pub struct LocalPush {
    pub hub: Arc<Hub>,
    pub store: RedbStore,
    /// `--allow-net`: what routes may ask to reach.
    pub allow_nets: Vec<ipnet::IpNet>,
    /// `--dev`: unset secrets compile as placeholders.
    pub dev: bool,
}

impl LocalPush {
    pub fn routes(self) -> axum::Router {
        axum::Router::new().route("/admin/mappings", get(current).post(push)).with_state(Arc::new(self))
    }
}

/// Records the files `hub serve` starts with as the version in force: the current one when they
/// are the same, else the next. Returns that version.
pub async fn record_start_set(store: &RedbStore, dir: &Path) -> Result<u64> {
    let paths =
        files::mapping_files(dir).with_context(|| format!("reading mappings from {}", dir.display()))?;
    let mut named = files::relative_names(dir, &paths, files::read_all(&paths)?);
    named.sort();
    if let Some(cur) = store.current().await?
        && cur.files == named
    {
        return Ok(cur.version);
    }
    store
        .push(&named, None, SystemClock.now())
        .await
        .map_err(|e| anyhow::anyhow!("recording the mapping set: {e}"))
}

async fn current(State(p): State<Arc<LocalPush>>) -> Response {
    match p.store.current_version().await {
        Ok(v) => Json(json!({"version": v})).into_response(),
        Err(e) => {
            error!(error = %e, "mapping version not read");
            error_response(&PublicError::new(ErrorCode::StoreUnavailable, "the store could not be read"))
        }
    }
}

#[derive(serde::Deserialize)]
struct PushBody {
    /// File name → YAML text.
    files: BTreeMap<String, String>,
    /// The version the files were written against: refused (409) when another push came first.
    #[serde(default)]
    expected: Option<u64>,
}

fn invalid(list: Vec<String>) -> Response {
    let e = PublicError::new(ErrorCode::InvalidMapping, list.join("\n"));
    let mut body = e.to_json();
    body["error"]["diagnostics"] = json!(list);
    (axum::http::StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

async fn push(State(p): State<Arc<LocalPush>>, body: axum::body::Bytes) -> Response {
    let push: PushBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(&PublicError::new(
                ErrorCode::InvalidBody,
                format!("expected {{\"files\": {{\"name.yaml\": \"text\", ...}}}}: {e}"),
            ));
        }
    };
    let files: Vec<(String, String)> = push.files.into_iter().collect();
    let dev = crate::dev_secrets::DevSecrets::default();
    let secrets: &dyn SecretSource = if p.dev { &dev } else { &EnvSecrets };
    let set = match MappingSet::compile(&files, secrets) {
        Ok(set) => set,
        Err(diags) => return invalid(diags.iter().map(ToString::to_string).collect()),
    };
    if let Err(diags) = set.check_reach(&p.allow_nets) {
        return invalid(diags.iter().map(ToString::to_string).collect());
    }
    match p.store.push(&files, push.expected, SystemClock.now()).await {
        Ok(version) => {
            p.hub.set_mappings(Arc::new(set));
            info!(version, files = files.len(), "mapping set pushed");
            Json(json!({"status": "pushed", "version": version, "files": files.len()})).into_response()
        }
        Err(CommitError::Conflict(_)) => error_response(&PublicError::new(
            ErrorCode::Conflict,
            "another push came first: the version in force is not the one expected",
        )),
        Err(CommitError::Store(e)) => {
            error!(error = %e, "mapping push failed");
            error_response(&PublicError::new(
                ErrorCode::StoreUnavailable,
                "the mapping set could not be stored",
            ))
        }
    }
}
