//! Throughput of the hot paths, compared within one run (the machine is shared; ratios are what
//! to read): rendering a real mapping, and accepting webhooks into the embedded store one commit
//! at a time versus concurrently (group commit).
//!
//! Run: `cargo bench -p hub-cli --bench pipeline` (release build).

use hub_core::evaluate::Verified;
use hub_core::ids::{DeliveryId, EventId, SourceId};
use hub_core::mapping::compile_file;
use hub_core::ports::NewEvent;
use hub_core::ports::commit::{Change, Commit, Committer};
use hub_core::request::{Headers, RawRequest};
use hub_core::secret::MapSecrets;
use hub_core::time::UnixMillis;
use hub_store_redb::RedbStore;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    render_bench(&root);
    facts_bench(&root);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(store_bench());
}

/// Verify + parse + evaluate + render the Typeform → HubSpot mapping on its demo request.
fn render_bench(root: &Path) {
    let dir = root.join("mappings/typeform-hubspot");
    let text = std::fs::read_to_string(dir.join("mapping.yaml")).expect("mapping");
    let body = std::fs::read(dir.join("examples/demo_request.json")).expect("body");
    let secrets = MapSecrets(
        [("TYPEFORM_SECRET", "bench"), ("HUBSPOT_TOKEN", "bench")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let (source, _) = compile_file("mapping.yaml", &text, &secrets).expect("compiles");
    let mut headers = Headers::new();
    headers.push("content-type", "application/json");
    let (h, v) = source.verifier.sign(&body).expect("signable");
    headers.push(&h, v);
    let req = RawRequest {
        method: "POST".into(),
        path: "/hooks/typeform-hubspot".into(),
        query: None,
        headers,
        body: bytes::Bytes::from(body),
        received_at: UnixMillis(1_700_000_000_000),
        remote_addr: None,
    };
    let id = EventId::new("evt_bench");
    let run = || {
        let checked = Verified::check(&source, req.clone()).expect("admitted");
        let out = checked.plan(&id, &mut || DeliveryId::new("dlv_bench")).expect("within limits").rendered;
        assert!(out.iter().all(|r| r.result.is_ok()));
        black_box(out);
    };
    for _ in 0..200 {
        run();
    }
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        run();
    }
    let per = t.elapsed() / n;
    println!(
        "render  typeform-hubspot (verify+parse+when+map, {} B body): {:>8.1} µs/event, {:>8.0} events/s",
        req.body.len(),
        per.as_secs_f64() * 1e6,
        1.0 / per.as_secs_f64()
    );

    let t = Instant::now();
    for _ in 0..n {
        black_box(Verified::check(&source, req.clone()).expect("admitted"));
    }
    println!(
        "  of which verify+parse:                                    {:>8.1} µs/event",
        (t.elapsed() / n).as_secs_f64() * 1e6
    );

    let t = Instant::now();
    let m = 200;
    for _ in 0..m {
        black_box(compile_file("mapping.yaml", &text, &secrets).expect("compiles"));
    }
    println!(
        "compile typeform-hubspot mapping file:                      {:>8.1} µs/file",
        (t.elapsed() / m).as_secs_f64() * 1e6
    );
}

/// A website page view stating a fact about one of 1,000 contacts (score, counter, journey,
/// two threshold routes) against the same webhook's plain evaluation, side by side: what state
/// evaluation adds to a webhook, in memory (the store's part is in the capacity and store runs).
fn facts_bench(root: &Path) {
    use hub_core::triggers::{Loaded, apply_all, fact_envelope};
    let dir = root.join("mappings");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("mappings dir") {
            let p = e.expect("entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if p.is_dir() && name != "examples" && name != "scenarios" {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") && !p.is_dir() {
                files.push((p.display().to_string(), std::fs::read_to_string(&p).expect("file")));
            }
        }
    }
    let set = hub_core::mapping::MappingSet::compile(
        &files,
        &MapSecrets::or_placeholders([("SITE_EVENTS_TOKEN".to_string(), "bench".to_string())].into()),
    )
    .expect("the shipped mappings compile");
    let source = set.source("site-events").expect("site-events");
    let request = |n: usize| {
        let body = format!(
            r#"{{"event": "page.viewed", "email": "visitor{}@example.com", "path": "/pricing", "url": "https://example.com/pricing?utm_source=google", "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "c{}", "occurred_at": "2026-03-02T09:00:00Z"}}"#,
            n % 1000,
            n % 7
        );
        RawRequest {
            method: "POST".into(),
            path: "/hooks/site-events".into(),
            query: Some("token=bench".into()),
            headers: [("content-type", "application/json")].into_iter().collect(),
            body: bytes::Bytes::from(body),
            received_at: UnixMillis(1_772_442_000_000 + n as u64 * 1000),
            remote_addr: None,
        }
    };
    let n = 20_000;
    let reqs: Vec<RawRequest> = (0..n).map(request).collect();
    let plain = |req: &RawRequest| {
        let checked = Verified::check(source, req.clone()).expect("admitted");
        black_box(
            checked.plan(&EventId::new("evt_bench"), &mut || DeliveryId::new("dlv_bench")).expect("plan"),
        );
    };
    let mut states: std::collections::HashMap<_, hub_core::triggers::state::EntityState> = Default::default();
    let mut fired = 0usize;
    let mut seq = 0usize;
    let mut stateful = |req: &RawRequest| {
        // Each webhook is its own event: its fact has its own id and is applied.
        seq += 1;
        let id = EventId::new(format!("evt_bench_{seq}"));
        let checked = Verified::check(source, req.clone()).expect("admitted");
        let facts: Vec<_> = checked.facts(&id, &set).into_iter().map(|f| f.expect("fact")).collect();
        let mut loaded: Vec<Loaded> = facts
            .iter()
            .map(|f| {
                let key = f.state_key();
                let state = states.remove(&key).unwrap_or_default();
                Loaded { key, state, version: 0, changed: false }
            })
            .collect();
        let base = checked.envelope(&id);
        fired += apply_all(&set, &facts, &mut loaded, &base, checked.request(), req.received_at).len();
        let extra = fact_envelope(&facts, &loaded, &set, req.received_at);
        black_box(checked.plan_with(&id, extra, &mut || DeliveryId::new("dlv_bench")).expect("plan"));
        for l in loaded {
            states.insert(l.key, l.state);
        }
    };
    let t = Instant::now();
    reqs.iter().for_each(plain);
    let plain_t = t.elapsed();
    let t = Instant::now();
    reqs.iter().for_each(&mut stateful);
    let state_t = t.elapsed();
    report("page view, no state (verify+parse+plan)", n, plain_t);
    report("page view with its fact applied (+state, journey, fires)", n, state_t);
    println!(
        "facts applied per core: {:.0}/s; state evaluation keeps {:.0} % of the plain throughput ({fired} fires)",
        n as f64 / state_t.as_secs_f64(),
        100.0 * plain_t.as_secs_f64() / state_t.as_secs_f64()
    );
}

fn event(i: usize) -> NewEvent {
    let mut headers = Headers::new();
    headers.push("content-type", "application/json");
    NewEvent {
        id: EventId::generate(),
        source: SourceId::new("bench"),
        received_at: UnixMillis(1_700_000_000_000),
        method: "POST".into(),
        path: "/hooks/bench".into(),
        query: None,
        headers,
        remote_addr: None,
        body: bytes::Bytes::from(format!(
            "{{\"id\":{i},\"email\":\"a{i}@example.com\",\"pad\":\"{}\"}}",
            "x".repeat(1500)
        )),
        dedup: Some((format!("k{i}"), UnixMillis(1_800_000_000_000))),
        retention: std::time::Duration::from_secs(30 * 24 * 3600),
    }
}

async fn accept(store: &RedbStore, ev: NewEvent) {
    store.commit(Commit::new(ev.received_at).with(Change::Accept(ev))).await.expect("accept");
}

/// Durable accepts (fsync per commit) one at a time vs. 64 senders at once.
async fn store_bench() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 2_000;

    let store = RedbStore::open(dir.path().join("seq.redb")).expect("open");
    let t = Instant::now();
    for i in 0..n {
        accept(&store, event(i)).await;
    }
    let seq = t.elapsed();
    report("accept  1 sender  (one fsync'd commit each)", n, seq);

    let store = Arc::new(RedbStore::open(dir.path().join("par.redb")).expect("open"));
    let senders = 64;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (s..n).step_by(senders) {
                accept(&store, event(i)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let par = t.elapsed();
    report("accept 64 senders (group commit)", n, par);
    println!("group commit speed-up: {:.1}x", seq.as_secs_f64() / par.as_secs_f64());
}

fn report(what: &str, n: usize, d: Duration) {
    println!(
        "{what:<58} {:>8.0} events/s ({n} events in {:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    );
}
