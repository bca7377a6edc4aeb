//! `hub events list|show` and `hub replay` on the local store.

use anyhow::{Context, Result, bail};
use hub_core::event::{EventRecord, EventStatus};
use hub_core::ids::{EventId, SourceId};
use hub_core::ports::{EventQuery, Store};
use hub_core::time::{Clock, SystemClock};
use hub_store_redb::RedbStore;
use std::io::Write;
use std::path::Path;

fn open(path: &Path) -> Result<RedbStore> {
    if !path.exists() {
        bail!("no store at {} (start `hub serve` first, or pass --store)", path.display());
    }
    RedbStore::open(path).with_context(|| {
        format!("opening {} (a running `hub serve` holds the store; stop it first)", path.display())
    })
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

pub async fn list(
    store: &Path,
    source: Option<String>,
    status: Option<String>,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let st = open(store)?;
    let q = EventQuery {
        source: source.map(SourceId::new),
        status: status.as_deref().map(parse_status).transpose()?,
        limit,
        before: None,
    };
    let events = st.list_events(&q).await?;
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

pub async fn show(store: &Path, id: &str, with_body: bool, out: &mut dyn Write) -> Result<()> {
    let st = open(store)?;
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

pub async fn replay(store: &Path, id: &str, out: &mut dyn Write) -> Result<()> {
    let st = open(store)?;
    let id = EventId::new(id);
    if !st.requeue(&id, SystemClock.now()).await? {
        bail!("no event {id}");
    }
    writeln!(out, "queued {id} for dispatch; `hub serve` delivers it with the current mappings")?;
    Ok(())
}
