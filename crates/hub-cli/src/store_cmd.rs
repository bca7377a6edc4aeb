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
/// `hub state show ENTITY KEY`: the entity's state explained (fields, scores with their ledger,
/// counters, journeys, each route armed or not), read from the store, or from the running
/// `hub serve` that holds it.
pub async fn state_show(
    store: &Path,
    server: Option<&str>,
    mappings: &Path,
    entity: &str,
    key: &str,
    out: &mut dyn Write,
) -> Result<()> {
    use hub_core::ports::state::{StateKey, StateStore};
    use hub_core::triggers::StateLookup;
    let st = match open(store, server)? {
        Target::Local(st) => st,
        Target::Server(admin) => {
            let path = format!("/admin/state/{}/{}", path_segment(entity), path_segment(key));
            let v = admin.send(reqwest::Method::GET, &path).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            return Ok(());
        }
    };
    let paths =
        crate::files::mapping_files(mappings).with_context(|| format!("reading {}", mappings.display()))?;
    let set = hub_core::mapping::MappingSet::compile(
        &crate::files::read_all(&paths)?,
        &crate::mappings_cmd::EnvOrPlaceholder,
    )
    .map_err(|d| {
        anyhow::anyhow!(
            "the mappings do not compile:\n{}",
            d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        )
    })?;
    let stored = st.load(&[StateKey::new(entity, key)]).await?.pop().flatten();
    match hub_core::triggers::describe(&set, entity, key, stored.as_ref(), SystemClock.now())? {
        StateLookup::Found(v) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        StateLookup::UnknownEntity => {
            bail!("no entity file under {} declares `entity: {entity}`", mappings.display())
        }
        StateLookup::NotStored => {
            bail!("nothing is stored for {entity}/{key} (no fact about it was applied)")
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use hub_core::ports::state::StateKey;
    use hub_core::triggers::state::{EntityState, Points};

    /// `hub state show` reads a contact's state from the store and explains it with the shipped
    /// entity file; an unknown entity or key is an error that says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_show_explains_a_stored_contact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.redb");
        let mappings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings");
        {
            let st = RedbStore::open(&path).unwrap();
            let mut state = EntityState::default();
            let now = SystemClock.now().0;
            state.scores.insert(
                "lead_score".into(),
                vec![Points {
                    fact: "evt_1/0".into(),
                    points: 7.0,
                    at: now,
                    expires: Some(now + 86_400_000),
                }],
            );
            let change = Change::PutState {
                key: StateKey::new("contact", "ann@example.com"),
                value: state.to_json(),
                read_version: 0,
            };
            st.commit(Commit::new(hub_core::time::UnixMillis(now)).with(change)).await.unwrap();
        }
        let out = show(&path, &mappings, "contact", "ann@example.com").await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["view"]["lead_score"], 7);
        assert_eq!(v["ledger"]["lead_score"][0]["live"], true);
        assert_eq!(v["triggers"]["contact.hot-lead-to-sales"]["armed"], true);
        let err = show(&path, &mappings, "contact", "bob@example.com").await.unwrap_err();
        assert!(err.to_string().contains("nothing is stored for contact/bob@example.com"), "{err:#}");
        let err = show(&path, &mappings, "lead", "x").await.unwrap_err();
        assert!(err.to_string().contains("declares `entity: lead`"), "{err:#}");
    }

    /// `state_show` once the store's file is free (the writer thread of the last handle lets it
    /// go a moment after the handle is dropped).
    async fn show(path: &Path, mappings: &Path, entity: &str, key: &str) -> Result<Vec<u8>> {
        for _ in 0..100 {
            let mut out = Vec::new();
            match state_show(path, None, mappings, entity, key, &mut out).await {
                Err(e) if e.to_string().contains("admin token") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                other => return other.map(|()| out),
            }
        }
        bail!("the store stayed locked")
    }
}
