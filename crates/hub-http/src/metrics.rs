//! What `hub serve` counts of what the hub does (the observer port), shown on the admin listener
//! as Prometheus text (`GET /admin/metrics`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hub_core::ports::observe::{HubEvent, Observer};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

/// A metric's name and its labels.
type Series = (&'static str, Vec<(&'static str, String)>);

/// Counters by metric name and labels.
#[derive(Debug, Default)]
pub struct Counters(Mutex<BTreeMap<Series, u64>>);

impl Counters {
    fn add(&self, name: &'static str, labels: Vec<(&'static str, String)>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner).entry((name, labels)).or_default() += 1;
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), value) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
        }
        out
    }

    /// `GET /admin/metrics`.
    pub fn routes(self: Arc<Self>) -> axum::Router {
        axum::Router::new().route("/admin/metrics", axum::routing::get(metrics)).with_state(self)
    }
}

async fn metrics(State(c): State<Arc<Counters>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], c.render()).into_response()
}

/// A label value with `\`, `"` and line breaks escaped, as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Observer for Counters {
    fn observe(&self, event: &HubEvent) {
        match event {
            HubEvent::Accepted { source, .. } => {
                self.add("hub_webhooks_accepted_total", vec![("source", source.to_string())])
            }
            HubEvent::Duplicate { source, .. } => {
                self.add("hub_webhooks_duplicate_total", vec![("source", source.to_string())])
            }
            HubEvent::Rejected { source, code } => self.add(
                "hub_webhooks_rejected_total",
                vec![
                    ("source", source.as_ref().map(ToString::to_string).unwrap_or_default()),
                    ("code", code.as_str().to_string()),
                ],
            ),
            HubEvent::Dispatched { .. } => self.add("hub_dispatches_total", Vec::new()),
            HubEvent::Delivered { route, .. } => {
                self.add(
                    "hub_attempts_total",
                    vec![("route", route.to_string()), ("outcome", "delivered".into())],
                );
            }
            HubEvent::Retrying { route, .. } => {
                self.add(
                    "hub_attempts_total",
                    vec![("route", route.to_string()), ("outcome", "retrying".into())],
                );
            }
            HubEvent::Dead { source, route, .. } => self.add(
                "hub_dead_total",
                vec![
                    ("source", source.to_string()),
                    ("route", route.as_ref().map(ToString::to_string).unwrap_or_default()),
                ],
            ),
            HubEvent::StoreFailed { code } => {
                self.add("hub_store_failures_total", vec![("code", (*code).to_string())])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_core::ids::{EventId, RouteId, SourceId};

    #[test]
    fn counts_render_as_prometheus_text_with_escaped_labels() {
        let c = Counters::default();
        let source = SourceId::new("leads");
        c.observe(&HubEvent::Accepted { source: source.clone(), event: EventId::new("evt_1") });
        c.observe(&HubEvent::Accepted { source: source.clone(), event: EventId::new("evt_2") });
        c.observe(&HubEvent::Dead {
            event: EventId::new("evt_2"),
            source,
            route: Some(RouteId::new("c\"rm")),
            reason: "HTTP 410".into(),
        });
        let text = c.render();
        assert!(text.contains("# TYPE hub_webhooks_accepted_total counter\nhub_webhooks_accepted_total{source=\"leads\"} 2\n"), "{text}");
        assert!(text.contains("hub_dead_total{source=\"leads\",route=\"c\\\"rm\"} 1"), "{text}");
    }
}
