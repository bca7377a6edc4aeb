//! `hub mappings validate|test|render`.

use crate::files;
use anyhow::{Context, Result, bail};
use hub_core::evaluate::Verified;
use hub_core::golden::ExampleSpec;
use hub_core::ids::{DeliveryId, EventId};
use hub_core::mapping::{MappingSet, compile_file};
use hub_core::request::{Headers, RawRequest};
use hub_core::secret::{EnvSecrets, PlaceholderSecrets, Secret, SecretRef, SecretSource};
use hub_core::time::{Clock, SystemClock};
use std::path::{Path, PathBuf};

/// Environment first; unset references become `<env:NAME>` placeholders, so files can be checked
/// on machines that do not hold production secrets.
pub struct EnvOrPlaceholder;

impl SecretSource for EnvOrPlaceholder {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        // An empty value is as good as unset here; `--require-secrets` and `serve` refuse it.
        EnvSecrets
            .resolve(r)
            .filter(|s| hub_core::secret::is_usable(s.expose()))
            .or_else(|| PlaceholderSecrets.resolve(r))
    }
}

/// Compiles every file under `dir`; prints each problem as `file:line:col: reason`.
/// Returns the number of files and sources on success.
pub fn validate(dir: &Path, require_secrets: bool, out: &mut dyn std::io::Write) -> Result<bool> {
    let paths = files::mapping_files(dir).with_context(|| format!("reading {}", dir.display()))?;
    let texts = files::read_all(&paths)?;
    let secrets: &dyn SecretSource = if require_secrets { &EnvSecrets } else { &EnvOrPlaceholder };
    match MappingSet::compile(&texts, secrets) {
        Ok(set) => {
            let routes: usize = set.sources.values().map(|s| s.routes.len()).sum();
            let entity_routes: usize = set.entities.values().map(|e| e.routes.len()).sum();
            writeln!(
                out,
                "ok: {} files, {} sources, {} routes, {} entities with {} routes",
                texts.len(),
                set.sources.len(),
                routes,
                set.entities.len(),
                entity_routes
            )?;
            for s in set.sources.values().filter(|s| s.is_unverified()) {
                writeln!(out, "unverified: source `{}` ({}): {}", s.id, s.file, s.openness())?;
            }
            Ok(true)
        }
        Err(diags) => {
            for d in &diags {
                writeln!(out, "{d}")?;
            }
            writeln!(out, "{} error(s)", diags.len())?;
            Ok(false)
        }
    }
}

/// Outcome of `hub mappings test`.
#[derive(Debug, Default)]
pub struct TestReport {
    pub passed: usize,
    pub failed: usize,
}

/// Runs every golden example under `dir`, printing a diff for each mismatch.
pub fn test(dir: &Path, out: &mut dyn std::io::Write) -> Result<TestReport> {
    let paths = files::mapping_files(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut report = TestReport::default();
    for mapping in &paths {
        let mapping_text = std::fs::read_to_string(mapping)?;
        let mapping_name = mapping.display().to_string();
        for ex in files::examples_of(mapping)? {
            let name = ex.display().to_string();
            let diffs = run_example(&ex, &mapping_name, &mapping_text);
            if diffs.is_empty() {
                report.passed += 1;
                writeln!(out, "ok   {name}")?;
            } else {
                report.failed += 1;
                writeln!(out, "FAIL {name}")?;
                for d in diffs {
                    for line in d.lines() {
                        writeln!(out, "     {line}")?;
                    }
                }
            }
        }
    }
    let scenarios = files::scenario_files(dir)?;
    if !scenarios.is_empty() {
        let texts = files::read_all(&paths)?;
        for path in &scenarios {
            let name = path.display().to_string();
            match run_scenario(path, &texts) {
                Ok(()) => {
                    report.passed += 1;
                    writeln!(out, "ok   {name}")?;
                }
                Err(e) => {
                    report.failed += 1;
                    writeln!(out, "FAIL {name}")?;
                    for line in e.lines() {
                        writeln!(out, "     {line}")?;
                    }
                }
            }
        }
    }
    writeln!(out, "{} passed, {} failed", report.passed, report.failed)?;
    Ok(report)
}

/// Runs one scenario against the whole set, compiled with the scenario's `env` (other secrets
/// are placeholders).
fn run_scenario(path: &Path, texts: &[(String, String)]) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let spec: hub_core::triggers::scenario::ScenarioSpec =
        hub_core::mapping::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let secrets = hub_core::secret::MapSecrets::or_placeholders(
        spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    );
    let set = MappingSet::compile(texts, &secrets)
        .map_err(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("{f}: {e}"));
    hub_core::triggers::scenario::run(&set, &spec, &read)
}

fn run_example(path: &Path, mapping_name: &str, mapping_text: &str) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let spec = match ExampleSpec::parse(&path.display().to_string(), &text) {
        Ok(s) => s,
        Err(d) => return vec![d.to_string()],
    };
    let body = match &spec.request.body_file {
        Some(f) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(f);
            match std::fs::read(&p) {
                Ok(b) => Some(bytes::Bytes::from(b)),
                Err(e) => return vec![format!("{}: body_file {}: {e}", path.display(), p.display())],
            }
        }
        None => None,
    };
    spec.run(mapping_name, mapping_text, body)
}

/// `hub mappings render`: what the routes would send for this input, without sending it.
pub fn render(
    file: &Path,
    input: &Path,
    headers: &[String],
    verify: bool,
    out: &mut dyn std::io::Write,
) -> Result<bool> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let source = match compile_file(&name, &text, &EnvOrPlaceholder) {
        Ok((s, _)) => s,
        Err(diags) => {
            for d in diags {
                writeln!(out, "{d}")?;
            }
            return Ok(false);
        }
    };
    let body = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let mut hs = Headers::new();
    for h in headers {
        let Some((k, v)) = h.split_once(':') else { bail!("--header takes 'Name: value', got `{h}`") };
        hs.push(k.trim(), v.trim());
    }
    if hs.get("content-type").is_none() {
        let ct = match input.extension().and_then(|e| e.to_str()) {
            Some("json") => "application/json",
            _ => "application/x-www-form-urlencoded",
        };
        hs.push("content-type", ct);
    }
    let req = RawRequest {
        method: "POST".into(),
        path: format!("/hooks/{}", source.id),
        query: None,
        headers: hs,
        body: bytes::Bytes::from(body),
        received_at: SystemClock.now(),
        remote_addr: None,
    };
    // Without verification (a sample captured without its signature) the request is taken
    // as a stored event is: parsed, not checked.
    let checked = if verify { Verified::check(&source, req) } else { Verified::from_store(&source, req) };
    let checked = match checked {
        Ok(v) => v,
        Err(e) => {
            writeln!(out, "rejected ({}): {e}", e.public().code.as_str())?;
            return Ok(false);
        }
    };
    let id = EventId::new("evt_dry_run");
    if let Some(t) = checked.envelope(&id).pointer("/event/type").and_then(|t| t.as_str()) {
        writeln!(out, "event type: {t}")?;
    }
    if let Some((k, _)) = checked.dedup(&id) {
        writeln!(out, "dedup key: {k}")?;
    }
    // Routes render from the stored copy, credentials redacted, as a dispatch does.
    let stored = match checked.redacted() {
        Ok(x) => x,
        Err(e) => {
            writeln!(out, "rejected ({}): {e}", e.public().code.as_str())?;
            return Ok(false);
        }
    };
    let rendered = match stored.plan(&id, &mut DeliveryId::generate) {
        Ok(plan) => plan.rendered,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(false);
        }
    };
    if rendered.is_empty() {
        writeln!(out, "no route fired")?;
    }
    let mut ok = true;
    for r in rendered {
        writeln!(out, "--- route {}", r.route)?;
        match r.result {
            Ok(mut o) => {
                if let Some(h) = source.route(&r.route).and_then(|rt| rt.redacted_auth_header()) {
                    o.headers.push(h);
                }
                writeln!(out, "{} {}", o.method, o.url)?;
                for (k, v) in &o.headers {
                    writeln!(out, "{k}: {v}")?;
                }
                writeln!(out)?;
                match serde_json::from_slice::<serde_json::Value>(&o.body) {
                    Ok(v) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
                    Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&o.body))?,
                }
            }
            Err(e) => {
                ok = false;
                writeln!(out, "error: {e}")?;
            }
        }
    }
    Ok(ok)
}

/// Default mappings directory.
pub fn default_dir() -> PathBuf {
    PathBuf::from("mappings")
}

/// Where `hub mappings push` stores a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PushStore {
    /// The AWS deployment's table (`--table`).
    Dynamodb,
    /// A running `hub serve` (found through the files next to `--hub-store`), which puts the set
    /// in force at once.
    Local,
}

/// Where a push goes.
pub enum PushTarget<'a> {
    Dynamodb { table: &'a str },
    Local { store: &'a Path, server: Option<&'a str> },
}

/// `hub mappings push`: compiles every file under `dir` (secrets live in the deployment, so
/// unset ones compile as placeholders here; the functions compile again with the real ones)
/// and stores the set as the next version. Nothing is stored when a file does not compile.
pub async fn push(
    dir: &Path,
    target: PushTarget<'_>,
    retention: Option<std::time::Duration>,
    out: &mut dyn std::io::Write,
) -> Result<bool> {
    let paths = files::mapping_files(dir).with_context(|| format!("reading {}", dir.display()))?;
    if paths.is_empty() {
        bail!("no mapping files (*.yaml) under {}", dir.display());
    }
    let texts = files::read_all(&paths)?;
    let set = match MappingSet::compile(&texts, &EnvOrPlaceholder) {
        Ok(set) => set,
        Err(diags) => {
            for d in &diags {
                writeln!(out, "{d}")?;
            }
            writeln!(out, "{} error(s); nothing pushed", diags.len())?;
            return Ok(false);
        }
    };
    // Stored under their path relative to the directory: stable wherever the push runs from.
    let named = files::relative_names(dir, &paths, texts);
    let table = match target {
        PushTarget::Dynamodb { table } => table,
        PushTarget::Local { store, server } => return push_local(&named, store, server, out).await,
    };
    // The same check the admin function makes before it stores a set (which also checks the
    // networks routes ask for against the deployment's `AllowNets`).
    let limits = hub_aws::mappings::Limits {
        retention,
        dlq_retention: hub_aws::mappings::DLQ_RETENTION,
        allow_nets: None,
    };
    if let Err(m) = limits.check(&set) {
        writeln!(out, "{m}")?;
        writeln!(out, "nothing pushed")?;
        return Ok(false);
    }
    let clients = hub_aws::Clients::from_env().await;
    let repo = hub_aws::mappings::MappingRepo::new(clients.dynamodb.clone(), table);
    let version =
        repo.push(&named, SystemClock.now().0).await.with_context(|| format!("pushing to table {table}"))?;
    writeln!(out, "pushed mapping set version {version} ({} files) to {table}", named.len())?;
    Ok(true)
}

/// Sends the set to a running `hub serve`'s admin listener, which compiles it with its own
/// secrets, stores it as the next version and puts it in force.
async fn push_local(
    named: &[(String, String)],
    store: &Path,
    server: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<bool> {
    let base = crate::admin_access::server_url(store, server);
    let token = crate::admin_access::read_token(store)?;
    let files: std::collections::BTreeMap<&str, &str> =
        named.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let resp = reqwest::Client::new()
        .post(format!("{base}/admin/mappings"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"files": files}))
        .send()
        .await
        .with_context(|| {
            format!("the hub's admin listener at {base} did not answer (is `hub serve` running?)")
        })?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.context("the admin listener answered non-JSON")?;
    if !status.is_success() {
        match v["error"]["diagnostics"].as_array() {
            Some(list) => {
                for d in list {
                    writeln!(out, "{}", d.as_str().unwrap_or_default())?;
                }
            }
            None => writeln!(out, "{}", v["error"]["message"].as_str().unwrap_or("push refused"))?,
        }
        writeln!(out, "nothing pushed")?;
        return Ok(false);
    }
    writeln!(
        out,
        "pushed mapping set version {} ({} files) to the hub at {base}; in force now",
        v["version"].as_u64().unwrap_or(0),
        named.len()
    )?;
    Ok(true)
}
