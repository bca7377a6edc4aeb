//! `hub events list|show` and `hub replay` on the local store.

use crate::admin_access;
use anyhow::{Context, Result, bail};
use hub_core::event::{EventRecord, EventStatus, EventSummary};
use hub_core::ids::{EventId, SourceId};
use hub_core::ports::EventQuery;
use hub_core::ports::commit::{Change, Commit, CommitError, Committer, Conflict};
use hub_core::ports::log::EventLog;
use hub_core::time::{Clock, SystemClock};
use hub_store_redb::RedbStore;
use std::io::Write;
use std::path::Path;

/// Where `events` and `replay` act: the store file, or, while `hub serve` holds it, that
/// server's admin listener (found and authenticated through the files next to the store).
enum Target {
    Local(RedbStore),
    Server(Admin),
}

/// A running server's admin listener.
struct Admin {
    base: String,
    token: String,
}

impl Admin {
    async fn send(&self, method: reqwest::Method, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let resp = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| {
                format!(
                    "the store is held by a running `hub serve`, and its admin listener at {} did not answer \
                     (pass --server with its --admin-listen address)",
                    self.base
                )
            })?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.context("admin listener answered non-JSON")?;
        if !status.is_success() {
            bail!(
                "{} ({})",
                v["error"]["message"].as_str().unwrap_or("admin request failed"),
                v["error"]["code"].as_str().unwrap_or("error")
            );
        }
        Ok(v)
    }
}

fn open(path: &Path, server: Option<&str>) -> Result<Target> {
    if !path.exists() {
        bail!("no store at {} (start `hub serve` first, or pass --store)", path.display());
    }
    match RedbStore::open(path) {
        Ok(s) => Ok(Target::Local(s)),
        Err(e) if e.is_locked() => Ok(Target::Server(Admin {
            base: admin_access::server_url(path, server),
            token: admin_access::read_token(path)?,
        })),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
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

pub async fn list(store: &Path, server: Option<&str>, args: ListArgs, out: &mut dyn Write) -> Result<()> {
    let status = args.status.as_deref().map(parse_status).transpose()?;
    let events: Vec<EventSummary> = match open(store, server)? {
        Target::Local(st) => {
            let q = EventQuery {
                source: args.source.map(SourceId::new),
                status,
                limit: args.limit,
                before: None,
            };
            st.page(&q).await?.events.iter().map(EventRecord::summary).collect()
        }
        Target::Server(admin) => {
            let mut path = format!("/admin/events?limit={}", args.limit);
            if let Some(s) = &args.source {
                path.push_str(&format!("&source={}", path_segment(s)));
            }
            if let Some(s) = status {
                path.push_str(&format!("&status={}", s.as_str()));
            }
            serde_json::from_value(admin.send(reqwest::Method::GET, &path).await?)?
        }
    };
    let json = args.json;
    if json {
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<20}  {:<24}  {:<9}  {:>8}  LAST ERROR",
        "EVENT", "SOURCE", "RECEIVED", "STATUS", "ATTEMPTS"
    )?;
    for e in &events {
        let err: String = e.last_error.as_deref().unwrap_or("").chars().take(80).collect();
        writeln!(
            out,
            "{:<36}  {:<20}  {:<24}  {:<9}  {:>8}  {}",
            e.id,
            e.source,
            e.received_at,
            e.status.as_str(),
            e.attempts,
            err
        )?;
    }
    Ok(())
}

pub async fn show(
    store: &Path,
    server: Option<&str>,
    id: &str,
    with_body: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let st = match open(store, server)? {
        Target::Local(st) => st,
        Target::Server(admin) => {
            let path = format!("/admin/events/{}?body={with_body}", path_segment(id));
            let v = admin.send(reqwest::Method::GET, &path).await?;
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

pub async fn replay(store: &Path, server: Option<&str>, id: &str, out: &mut dyn Write) -> Result<()> {
    let st = match open(store, server)? {
        Target::Local(st) => st,
        Target::Server(admin) => {
            admin.send(reqwest::Method::POST, &format!("/admin/events/{}/replay", path_segment(id))).await?;
            writeln!(out, "queued {id} for dispatch; the running `hub serve` delivers it now")?;
            return Ok(());
        }
    };
    let id = EventId::new(id);
    match st.commit(Commit::new(SystemClock.now()).with(Change::Replay { event: id.clone() })).await {
        Ok(()) => {}
        Err(CommitError::Conflict(Conflict::NoSuchEvent(_))) => bail!("no event {id}"),
        Err(e) => return Err(e.into()),
    }
    writeln!(out, "queued {id} for dispatch; `hub serve` delivers it with the current mappings")?;
    Ok(())
}

/// A value as one URL path segment or query value (ids are `evt_...`; anything else is
/// percent-encoded, never read as more path or another parameter).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
