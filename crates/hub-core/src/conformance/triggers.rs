//! Conformance of a storage under the triggers: facts about one entity applied by many
//! dispatches at once, through [`Hub`] on the storage under test.

use crate::event::DeliveryStatus;
use crate::ids::EventId;
use crate::mapping::MappingSet;
use crate::pipeline::Hub;
use crate::ports::{Job, Storage};
use crate::request::{Headers, RawRequest};
use crate::secret::MapSecrets;
use crate::testing::{ManualClock, RecordingQueue, ScriptedForwarder};
use crate::time::UnixMillis;
use crate::triggers::state::EntityState;
use bytes::Bytes;
use std::sync::Arc;

const ENTITY: &str = r#"entity: contact
scores:
  lead_score:
    rules:
      - {on: email.opened, points: 1}
routes:
  - id: hot
    on: {crosses: lead_score, above: 150}
    map: {email: $.entity.contact.id, score: $.trigger.value}
    to: {url: "https://crm.test/hot"}
"#;

const SOURCE: &str = r#"source:
  id: opens
  description: test source
  verify: none
  facts:
    - {entity: contact, key: $.body.email, name: email.opened}
routes:
  - id: log
    map: {score: $.state.contact.lead_score}
    to: {url: "https://log.test/opens"}
"#;

const T0: UnixMillis = UnixMillis(1_750_000_000_000);

fn hub<S: Storage + 'static>(s: Arc<S>) -> (Hub, Arc<ScriptedForwarder>) {
    let files =
        [("contact.yaml".to_string(), ENTITY.to_string()), ("opens.yaml".to_string(), SOURCE.to_string())];
    let set = MappingSet::compile(&files, &MapSecrets::default()).expect("the test mappings compile");
    let dest = Arc::new(ScriptedForwarder::default());
    let hub = Hub::new(
        Arc::new(set),
        s,
        dest.clone(),
        Arc::new(ManualClock::at(T0)),
        Arc::new(RecordingQueue::default()),
    );
    (hub, dest)
}

fn opened(n: usize) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        path: "/hooks/opens".into(),
        query: None,
        headers: Headers(vec![("content-type".into(), "application/json".into())]),
        body: Bytes::from(format!(r#"{{"email": "ann@example.com", "n": {n}}}"#)),
        received_at: T0,
        remote_addr: None,
    }
}

/// 200 facts about one contact, dispatched all at once by two hubs on the same storage (two
/// processes: their commits race on the entity's version), and each dispatch run twice: the
/// score is exactly 200 and the threshold at 150 fired exactly once.
pub async fn two_hundred_concurrent_facts_add_two_hundred_points_and_fire_once<S: Storage + 'static>(
    s: Arc<S>,
) {
    let hubs = [Arc::new(hub(s.clone()).0), Arc::new(hub(s.clone()).0)];
    let mut ids: Vec<EventId> = Vec::new();
    for n in 0..200 {
        ids.push(hubs[n % 2].ingest("opens", opened(n)).await.expect("accepted").event_id);
    }
    // A dispatch whose entity kept moving under it fails with a store conflict and stays
    // queued; shells run it again later. Here: again at once, until every dispatch is done.
    for round in 0..2 {
        let mut pending = ids.clone();
        for pass in 0..200 {
            if pending.is_empty() {
                break;
            }
            let runs = pending.iter().enumerate().map(|(n, id)| {
                let hub = hubs[(n + round + pass) % 2].clone();
                let job = Job::Dispatch(id.clone());
                async move { (id.clone(), hub.run_job(&job).await) }
            });
            let mut again = Vec::new();
            for (id, r) in futures_util::future::join_all(runs).await {
                match r {
                    Ok(_) => {}
                    Err(crate::ports::StoreError::Conflict(_)) => again.push(id),
                    Err(e) => panic!("dispatch round {round} failed: {e}"),
                }
            }
            pending = again;
        }
        assert!(pending.is_empty(), "{} dispatches never committed", pending.len());
    }
    let key = crate::ports::state::StateKey::new("contact", "ann@example.com");
    let stored = s.load(&[key]).await.expect("load").pop().flatten().expect("state stored");
    let state = EntityState::from_json(&stored.value).expect("state parses");
    assert_eq!(state.facts, 200, "each fact applied once");
    let points: f64 = state.scores["lead_score"].iter().map(|p| p.points).sum();
    assert_eq!(points, 200.0, "exactly 200 points");
    let mut hot = 0;
    let mut logged = 0;
    for id in &ids {
        let ev = s.event(id).await.expect("read").expect("stored");
        for d in &ev.deliveries {
            assert_eq!(d.status, DeliveryStatus::Pending, "{}", d.route);
            match d.route.as_str() {
                "contact.hot" => hot += 1,
                "log" => logged += 1,
                other => panic!("unexpected route {other}"),
            }
        }
    }
    assert_eq!(logged, 200, "each webhook's own route once");
    assert_eq!(hot, 1, "the crossing fired once");
    assert_eq!(state.triggers["contact.hot"].fires, 1);
}
