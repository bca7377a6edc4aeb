//! `hub events list|show` and `hub replay` on the local store.

use anyhow::{Context, Result, bail};
use hub_core::event::{EventRecord, EventStatus};
use hub_core::ids::{EventId, SourceId};
use hub_core::ports::{EventQuery, Store};
use hub_core::time::{Clock, SystemClock};
use hub_store_redb::RedbStore;
use std::io::Write;
use std::path::Path;

/// Where `events` and `replay` act: the store file, or, while `hub serve` holds it, that
/// server's loopback admin routes.
enum Target {
    Local(RedbStore),
    Server(String),
}

fn open(path: &Path, server: &str) -> Result<Target> {
    if !path.exists() {
        bail!("no store at {} (start `hub serve` first, or pass --store)", path.display());
    }
    match RedbStore::open(path) {
        Ok(s) => Ok(Target::Local(s)),
        Err(e) if e.is_locked() => Ok(Target::Server(server.trim_end_matches('/').to_string())),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

async fn admin_get(url: String) -> Result<serde_json::Value> {
    let resp = reqwest::Client::new().get(&url).send().await.with_context(|| {
        format!("the store is held by a running `hub serve`, and its admin routes at {url} did not answer (pass --server)")
    })?;
    admin_json(resp).await
}

async fn admin_json(resp: reqwest::Response) -> Result<serde_json::Value> {
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.context("admin route answered non-JSON")?;
    if !status.is_success() {
        bail!("{}", v["error"]["message"].as_str().unwrap_or("admin request failed"));
    }
    Ok(v)
}

pub fn parse_status(s: &str) -> Result<EventStatus> {
    Ok(match s {
        "received" => EventStatus::Received,
        "filtered" => EventStatus::Filtered,
        "pending" => EventStatus::Pending,
        "retrying" => EventStatus::Retrying,
        "delivered" => EventStatus::Delivered,
        "dead" => EventStatus::Dead,
        other => bail!("unknown status `{other}` (received, filtered, pending, retrying, delivered, dead)"),
    })
}

pub struct ListArgs {
    pub source: Option<String>,
    pub status: Option<String>,
    pub limit: usize,
    pub json: bool,
}

pub async fn list(store: &Path, server: &str, args: ListArgs, out: &mut dyn Write) -> Result<()> {
    let status = args.status.as_deref().map(parse_status).transpose()?;
    let events: Vec<EventRecord> = match open(store, server)? {
        Target::Local(st) => {
            let q = EventQuery {
                source: args.source.map(SourceId::new),
                status,
                limit: args.limit,
                before: None,
            };
            st.list_events(&q).await?
        }
        Target::Server(base) => {
            let mut url = format!("{base}/admin/events?limit={}", args.limit);
            if let Some(s) = &args.source {
                url.push_str(&format!("&source={s}"));
            }
            if let Some(s) = status {
                url.push_str(&format!("&status={}", s.as_str()));
            }
            serde_json::from_value(admin_get(url).await?)?
        }
    };
    let json = args.json;
    if json {
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(&summary(e))?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<20}  {:<24}  {:<9}  {:>8}  LAST ERROR",
        "EVENT", "SOURCE", "RECEIVED", "STATUS", "ATTEMPTS"
    )?;
    for e in &events {
        let err: String = e.last_error().unwrap_or("").chars().take(80).collect();
        writeln!(
            out,
            "{:<36}  {:<20}  {:<24}  {:<9}  {:>8}  {}",
            e.id,
            e.source,
            e.received_at.to_rfc3339(),
            e.status().as_str(),
            e.attempts(),
            err
        )?;
    }
    Ok(())
}

fn summary(e: &EventRecord) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "source": e.source,
        "received_at": e.received_at.to_rfc3339(),
        "status": e.status(),
        "attempts": e.attempts(),
        "last_error": e.last_error(),
    })
}

pub async fn show(store: &Path, server: &str, id: &str, with_body: bool, out: &mut dyn Write) -> Result<()> {
    let st = match open(store, server)? {
        Target::Local(st) => st,
        Target::Server(base) => {
            let v = admin_get(format!("{base}/admin/events/{id}?body={with_body}")).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            return Ok(());
        }
    };
    let id = EventId::new(id);
    let Some(ev) = st.event(&id).await? else { bail!("no event {id}") };
    let mut v = serde_json::to_value(&ev)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), serde_json::to_value(ev.status())?);
        if with_body && let Some(b) = st.body(&id).await? {
            o.insert("body".into(), serde_json::Value::String(String::from_utf8_lossy(&b).into_owned()));
        }
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

pub async fn replay(store: &Path, server: &str, id: &str, out: &mut dyn Write) -> Result<()> {
    let st = match open(store, server)? {
        Target::Local(st) => st,
        Target::Server(base) => {
            let url = format!("{base}/admin/events/{id}/replay");
            let resp =
                reqwest::Client::new().post(&url).send().await.with_context(|| format!("POST {url}"))?;
            admin_json(resp).await?;
            writeln!(out, "queued {id} for dispatch; the running `hub serve` delivers it now")?;
            return Ok(());
        }
    };
    let id = EventId::new(id);
    if !st.requeue(&id, SystemClock.now()).await? {
        bail!("no event {id}");
    }
    writeln!(out, "queued {id} for dispatch; `hub serve` delivers it with the current mappings")?;
    Ok(())
}
