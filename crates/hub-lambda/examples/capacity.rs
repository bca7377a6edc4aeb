//! Measures the DynamoDB capacity one webhook consumes in the AWS shell: the functions run
//! in-process against DynamoDB Local and moto (`scripts/capacity` starts them), every DynamoDB
//! call asks for `ReturnConsumedCapacity=INDEXES`, and the units reported are added up per
//! table and per index, reads and writes apart, then divided by the webhooks sent.
//!
//! Run: `scripts/capacity` (or, with the emulators' variables set, `cargo run -p hub-lambda
//! --example capacity`).

use anyhow::{Context as _, bail};
use hub_aws::capacity::{CapacityMeter, Tally};
use hub_core::event::EventStatus;
use hub_core::ids::EventId;
use hub_core::ports::{Forwarder, SendOutcome, SendPolicy};
use hub_core::time::SystemClock;
use hub_lambda::emulated::{APIGW_V2_POST, Deployment, invoke};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers 500 to the first `fail` attempts of each delivery (by its `Idempotency-Key`), then 200.
#[derive(Default)]
struct FailFirst {
    fail: u32,
    seen: Mutex<HashMap<String, u32>>,
}

#[async_trait::async_trait]
impl Forwarder for FailFirst {
    async fn send(&self, request: &hub_core::event::OutgoingRequest, _policy: SendPolicy<'_>) -> SendOutcome {
        let key = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let status = if n <= self.fail { 500 } else { 200 };
        SendOutcome::Response { status, retry_after: None, body_snippet: String::new() }
    }
}

struct Scenario {
    name: &'static str,
    routes: usize,
    /// Items of one `for_each` route (instead of `routes` plain routes).
    for_each: Option<usize>,
    /// Failed attempts before each delivery succeeds.
    failures: u32,
    /// Measure a repeat of an already delivered webhook.
    duplicate: bool,
    /// Each webhook also states a fact about a new contact, whose score crosses a threshold:
    /// its state item is written and an entity route fires (one more delivery).
    fact: bool,
    webhooks: usize,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "1 route, delivered first try",
        routes: 1,
        for_each: None,
        failures: 0,
        duplicate: false,
        fact: false,
        webhooks: 10,
    },
    Scenario {
        name: "1 route, 3 failed attempts",
        routes: 1,
        for_each: None,
        failures: 3,
        duplicate: false,
        fact: false,
        webhooks: 4,
    },
    Scenario {
        name: "10 routes",
        routes: 10,
        for_each: None,
        failures: 0,
        duplicate: false,
        fact: false,
        webhooks: 5,
    },
    Scenario {
        name: "for_each over 100 items",
        routes: 1,
        for_each: Some(100),
        failures: 0,
        duplicate: false,
        fact: false,
        webhooks: 2,
    },
    Scenario {
        name: "duplicate webhook",
        routes: 1,
        for_each: None,
        failures: 0,
        duplicate: true,
        fact: false,
        webhooks: 5,
    },
    Scenario {
        name: "1 route + a fact that fires an entity route",
        routes: 1,
        for_each: None,
        failures: 0,
        duplicate: false,
        fact: true,
        webhooks: 10,
    },
];

/// The entity of the fact scenario: a point per lead, a route at one point.
const CONTACT: &str = "entity: contact\nscores:\n  lead_score:\n    rules:\n      - {on: lead.received, points: 1}\nroutes:\n  - id: new-lead\n    on: {crosses: lead_score, above: 1}\n    map: {lead: $.entity.contact.id}\n    to: {url: \"https://sales.example/leads\"}\n";

fn mapping(s: &Scenario) -> String {
    let mut out = String::from(
        "source:\n  id: leads\n  description: capacity meter sender (a signature costs no DynamoDB capacity)\n  verify: none\n  dedup: {path: $.body.id}\n",
    );
    if s.fact {
        out.push_str("  facts:\n    - {entity: contact, key: $.body.id, name: lead.received}\n");
    }
    out.push_str("routes:\n");
    let retry =
        "    retry: {initial_delay: 1s, max_delay: 1s, jitter: false, max_attempts: 6, timeout: 2s}\n";
    match s.for_each {
        Some(_) => out.push_str(&format!(
            "  - id: items\n    for_each: $.body.items[*]\n    map: {{lead: \"{{{{body.id}}}}\", sku: \"{{{{item.sku}}}}\"}}\n    to: {{url: \"https://crm.example/items\"}}\n{retry}"
        )),
        None => {
            for r in 0..s.routes {
                out.push_str(&format!(
                    "  - id: crm{r}\n    map:\n      email: \"{{{{normalize_email body.email}}}}\"\n      first_name: \"{{{{word body.name 0}}}}\"\n      last_name: \"{{{{word body.name 1 rest=true}}}}\"\n      utm_source: {{path: $.body.utm_source, default: direct}}\n      lead: \"{{{{body.id}}}}\"\n    to: {{url: \"https://crm{r}.example/contacts\"}}\n{retry}"
                ));
            }
        }
    }
    out
}

/// A form lead of about 1.7 KB (the size of a typical form webhook).
fn lead(id: &str, items: Option<usize>) -> String {
    let mut body = json!({
        "id": id,
        "email": "  Ann.Lee@Example.COM ",
        "name": "Ann Marie Lee",
        "phone": "+1 (415) 555-0100",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "winter-launch",
        "message": "I would like a demo of the product for our sales team of twelve people. ".repeat(12),
        "page": "https://www.example.com/pricing?plan=team&ref=nav",
        "consent": true,
    });
    if let Some(n) = items {
        body["items"] =
            json!((0..n).map(|i| json!({"sku": format!("SKU-{i:04}"), "qty": 1})).collect::<Vec<_>>());
    }
    body.to_string()
}

async fn measure(clients: &hub_aws::Clients, s: &Scenario) -> anyhow::Result<Tally> {
    let mut files = vec![("leads.yaml".to_string(), mapping(s))];
    if s.fact {
        files.push(("contact.yaml".to_string(), CONTACT.to_string()));
    }
    // The mapping pointer is read at most once an hour: its cost is per instance, not per webhook.
    let dep =
        Deployment::create(clients.clone(), &files, &json!({}), 15, &[("HUB_MAPPINGS_REFRESH_SECS", "3600")])
            .await?;
    let meter = CapacityMeter::new();
    let conf = clients.dynamodb.config().to_builder().interceptor(meter.clone()).build();
    let metered = hub_aws::Clients { dynamodb: aws_sdk_dynamodb::Client::from_conf(conf), ..clients.clone() };
    let metered_dep = Deployment { clients: metered, ..dep.clone() };
    let forwarder = Arc::new(FailFirst { fail: s.failures, ..FailFirst::default() });
    let shell = metered_dep.shell(forwarder, Arc::new(SystemClock)).await?;
    let watcher = dep.shell(Arc::new(FailFirst::default()), Arc::new(SystemClock)).await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let post = |id: String| {
        let shell = shell.clone();
        let items = s.for_each;
        async move {
            let body = lead(&id, items);
            let (status, ack) =
                invoke(hub_lambda::ingest_app(shell), APIGW_V2_POST, "POST", "/hooks/leads", &body, &[])
                    .await?;
            if status != 202 && status != 200 {
                bail!("ingest answered {status}: {ack}");
            }
            ack["event_id"].as_str().map(EventId::new).context("event id")
        }
    };
    let mut ids = BTreeSet::new();
    if s.duplicate {
        for n in 0..s.webhooks {
            ids.insert(post(format!("{run}-{n}")).await?);
        }
        drain(&dep, &shell, &watcher, &ids, s).await?;
        meter.take();
        for n in 0..s.webhooks {
            post(format!("{run}-{n}")).await?;
        }
        drain(&dep, &shell, &watcher, &ids, s).await?;
    } else {
        meter.take();
        for n in 0..s.webhooks {
            ids.insert(post(format!("{run}-{n}")).await?);
        }
        drain(&dep, &shell, &watcher, &ids, s).await?;
    }
    let tally = meter.take();
    // How many deliveries each webhook made and how many attempts they took, as a check.
    let ev = watcher.hub().event(ids.first().context("an event")?).await?.context("stored")?;
    let want = s.for_each.unwrap_or(s.routes) + usize::from(s.fact);
    let got = ev.current_deliveries().len();
    let attempts: u32 = ev.current_deliveries().iter().map(|d| d.attempts).sum();
    if got != want || attempts != u32::try_from(want)? * (s.failures + 1) {
        bail!(
            "{}: expected {want} deliveries of {} attempts, got {got} with {attempts}",
            s.name,
            s.failures + 1
        );
    }
    Ok(tally.per(s.webhooks as f64))
}

/// Runs the queue until every event is delivered and no message is left.
async fn drain(
    dep: &Deployment,
    shell: &hub_lambda::Shell,
    watcher: &hub_lambda::Shell,
    ids: &BTreeSet<EventId>,
    s: &Scenario,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let handed = dep.pump_once(shell).await?;
        if handed == 0 {
            let mut done = true;
            for id in ids {
                let ev = watcher.hub().event(id).await?.context("stored")?;
                done &= ev.status() == EventStatus::Delivered;
            }
            if done {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{}: not delivered within two minutes", s.name);
        }
    }
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("HUB_TEST_DYNAMODB").is_none() {
        bail!("the emulators are not running: use scripts/capacity, which starts them");
    }
    let clients = hub_aws::Clients::from_env().await;
    let mut rows = Vec::new();
    for s in &SCENARIOS {
        let t = measure(&clients, s).await.with_context(|| s.name)?;
        rows.push((s, t));
    }
    let indexes: BTreeSet<String> = rows.iter().flat_map(|(_, t)| t.indexes.keys().cloned()).collect();
    println!("DynamoDB capacity units per webhook (DynamoDB Local, ReturnConsumedCapacity=INDEXES)\n");
    let mut header = vec!["scenario".to_string(), "webhooks".into(), "table R".into(), "table W".into()];
    for i in &indexes {
        header.push(format!("{i} W"));
    }
    header.extend(["reads".into(), "writes".into(), "refused writes".into()]);
    println!("| {} |", header.join(" | "));
    println!("|{}|", header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for (s, t) in &rows {
        let mut cells =
            vec![s.name.to_string(), s.webhooks.to_string(), fmt(t.table.read), fmt(t.table.write)];
        for i in &indexes {
            cells.push(fmt(t.indexes.get(i).map_or(0.0, |u| u.write)));
        }
        cells.extend([
            fmt(t.read_units()),
            fmt(t.write_units()),
            fmt(t.refused_writes as f64 / s.webhooks as f64),
        ]);
        println!("| {} |", cells.join(" | "));
    }
    let base = &rows[0].1;
    println!();
    println!(
        "calls per webhook (1 route, delivered first try): {}",
        base.calls
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt(*v as f64 / rows[0].0.webhooks as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("write units per webhook (1 route, delivered first try): {}", fmt(base.write_units()));
    Ok(())
}
