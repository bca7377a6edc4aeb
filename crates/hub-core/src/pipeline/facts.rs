//! The dispatch of a source that states facts: the facts are applied to their entities' state,
//! the source's routes and the entity routes that fire are rendered, and all of it (the
//! deliveries, each entity's new state) is one commit, on condition that every state item is
//! still the version read. When another dispatch changed one first, it is all computed again
//! from the new state: a crossing fires once however many facts arrive together.

use super::records::store_error;
use super::{Hub, JobOutcome, Made};
use crate::evaluate::Verified;
use crate::event::EventRecord;
use crate::ids::DeliveryId;
use crate::mapping::MappingSet;
use crate::ports::StoreError;
use crate::ports::commit::{Change, Commit, CommitError, Conflict};
use crate::ports::state::StateKey;
use crate::time::UnixMillis;
use crate::triggers::Fact;
use crate::triggers::Loaded;
use crate::triggers::state::EntityState;
use tracing::{info, warn};

/// How many times a dispatch is computed again because an entity's state moved under it (in
/// another process) before it fails with a store conflict and its job is left to run later.
pub const MAX_STATE_TRIES: usize = 8;

/// Stripes of the in-process entity locks.
pub(super) const ENTITY_LOCK_STRIPES: usize = 64;

fn stripe(key: &StateKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % ENTITY_LOCK_STRIPES as u64) as usize
}

impl Hub {
    pub(super) async fn dispatch_facts(
        &self,
        ev: &EventRecord,
        stored: &Verified<'_>,
        mappings: &MappingSet,
        now: UnixMillis,
    ) -> Result<JobOutcome, StoreError> {
        let mut facts: Vec<Fact> = Vec::new();
        for f in stored.facts(&ev.id, mappings) {
            match f {
                Ok(f) if mappings.entities.contains_key(&f.entity) => facts.push(f),
                Ok(f) => {
                    warn!(event = %ev.id, entity = %f.entity, "a fact about an entity no file declares; not applied")
                }
                Err(e) => {
                    warn!(event = %ev.id, error = %e, "a fact rule could not state its fact; the others apply")
                }
            }
        }
        let mut keys: Vec<StateKey> = Vec::new();
        for f in &facts {
            let k = f.state_key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let base = stored.envelope(&ev.id);
        // Stripes in ascending order, so two dispatches never wait for each other in a circle.
        let mut stripes: Vec<usize> = keys.iter().map(stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut _turns = Vec::with_capacity(stripes.len());
        for s in stripes {
            _turns.push(self.entity_locks[s].lock().await);
        }
        for _ in 0..MAX_STATE_TRIES {
            let snapshots = self.storage.load(&keys).await?;
            let mut loaded = Vec::with_capacity(keys.len());
            for (key, snap) in keys.iter().zip(snapshots) {
                let (state, version) = match snap {
                    None => (EntityState::default(), 0),
                    Some(v) => (
                        EntityState::from_json(&v.value)
                            .map_err(|e| StoreError::Corrupt(format!("state {key}: {e}")))?,
                        v.version,
                    ),
                };
                loaded.push(Loaded { key: key.clone(), state, version, changed: false });
            }
            let fired =
                crate::triggers::apply_all(mappings, &facts, &mut loaded, &base, stored.request(), now);
            let (mut deliveries, error) = match stored.plan_with(
                &ev.id,
                crate::triggers::fact_envelope(&facts, &loaded, mappings, now),
                &mut DeliveryId::generate,
            ) {
                Ok(plan) => (plan.deliveries(now), None),
                Err(e) => (Vec::new(), Some(e.0)),
            };
            deliveries.extend(fired);
            let made = Made::of(&ev.id, &deliveries, error.clone(), now);
            let mut commit =
                Commit::new(now).with(Change::Dispatch { event: ev.id.clone(), deliveries, error });
            for l in loaded.into_iter().filter(|l| l.changed) {
                commit = commit.with(Change::PutState {
                    key: l.key,
                    value: l.state.to_json(),
                    read_version: l.version,
                });
            }
            match self.storage.commit(commit).await {
                Ok(()) => {
                    info!(event = %ev.id, facts = facts.len(), fired = made.fired, "dispatched");
                    self.announce(&ev.id, &ev.source, made).await;
                    return Ok(JobOutcome::Done);
                }
                Err(CommitError::Conflict(Conflict::StateMoved(key))) => {
                    info!(event = %ev.id, state = %key, "state changed since it was read; computing again");
                }
                Err(CommitError::Conflict(Conflict::AlreadyDone | Conflict::NoSuchEvent(_))) => {
                    info!(event = %ev.id, "dispatched already; this run changed nothing");
                    return Ok(JobOutcome::Done);
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "the state of event {}'s entities changed {MAX_STATE_TRIES} times while it was applied",
            ev.id
        )))
    }
}
