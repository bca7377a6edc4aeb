//! CloudWatch metrics as Embedded Metric Format (EMF) log lines: one JSON object per line on
//! stdout, which Lambda ships to CloudWatch Logs and CloudWatch turns into a metric. No SDK
//! call and no permission beyond writing logs.
//!
//! Every event the hub observes becoming dead is reported this way (a delivery recorded `dead`,
//! a dispatch that failed), so that one alarm covers the deaths that never reach the
//! dead-letter queue: permanent failures (401, 404, a blocked destination, a failed render) and
//! dispatch errors.

use serde_json::json;
use std::sync::{Arc, Mutex};

/// The metric counting dead deliveries and failed dispatches.
pub const DEAD_METRIC: &str = "DeadEvents";
/// The metric namespace when `HUB_METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "hub";

/// Where metric lines go.
#[derive(Clone, Default)]
pub struct Metrics {
    sink: Sink,
    namespace: String,
}

#[derive(Clone, Default)]
enum Sink {
    /// Not reported (tests of other things, the CLI).
    #[default]
    None,
    Stdout,
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<String>>>),
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// What became dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dead {
    Delivery,
    Dispatch,
}

impl Metrics {
    /// Lines on stdout (Lambda).
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self { sink: Sink::Stdout, namespace: namespace.into() }
    }

    /// Lines kept in memory, returned by the second value.
    pub fn memory(namespace: impl Into<String>) -> (Self, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Self { sink: Sink::Memory(lines.clone()), namespace: namespace.into() }, lines)
    }

    /// Counts one dead delivery or failed dispatch; `reason` is cut to 300 bytes.
    pub fn dead(&self, kind: Dead, event: &str, source: &str, route: Option<&str>, reason: &str) {
        if matches!(self.sink, Sink::None) {
            return;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let line = dead_line(&self.namespace, kind, now_ms, event, source, route, reason);
        match &self.sink {
            Sink::None => {}
            Sink::Stdout => {
                use std::io::Write as _;
                // One write per line: lines of concurrent jobs never interleave.
                let _ = std::io::stdout().lock().write_all(format!("{line}\n").as_bytes());
            }
            Sink::Memory(lines) => lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line),
        }
    }
}

/// One EMF line: the metric (no dimensions, so one alarm sees every death) and the event's
/// details as plain properties for CloudWatch Logs Insights.
pub fn dead_line(
    namespace: &str,
    kind: Dead,
    now_ms: u64,
    event: &str,
    source: &str,
    route: Option<&str>,
    reason: &str,
) -> String {
    let mut cut = reason.len().min(300);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[]],
                "Metrics": [{"Name": DEAD_METRIC, "Unit": "Count"}],
            }],
        },
        DEAD_METRIC: 1,
        "kind": match kind { Dead::Delivery => "delivery", Dead::Dispatch => "dispatch" },
        "event": event,
        "source": source,
        "route": route,
        "reason": &reason[..cut],
    })
    .to_string()
}

/// Dead deliveries and failed dispatches, as the hub observes them, become `DeadEvents`.
impl hub_core::ports::observe::Observer for Metrics {
    fn observe(&self, event: &hub_core::ports::observe::HubEvent) {
        if let hub_core::ports::observe::HubEvent::Dead { event, source, route, reason } = event {
            let kind = if route.is_some() { Dead::Delivery } else { Dead::Dispatch };
            self.dead(kind, event.as_str(), source.as_str(), route.as_ref().map(|r| r.as_str()), reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_dead_line_is_an_emf_count_with_the_event_details() {
        let (m, lines) = Metrics::memory("hub/prod");
        m.dead(Dead::Delivery, "evt_1", "shop", Some("crm"), &"é".repeat(400));
        let lines = lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(lines.len(), 1);
        let v: Value = serde_json::from_str(&lines[0]).expect("JSON");
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert!(v["_aws"]["Timestamp"].as_u64().expect("timestamp") > 1_700_000_000_000);
        assert_eq!(cw["Namespace"], json!("hub/prod"));
        assert_eq!(cw["Dimensions"], json!([[]]));
        assert_eq!(cw["Metrics"], json!([{"Name": "DeadEvents", "Unit": "Count"}]));
        assert_eq!(v["DeadEvents"], json!(1));
        assert_eq!(
            (v["kind"].as_str(), v["source"].as_str(), v["route"].as_str()),
            (Some("delivery"), Some("shop"), Some("crm"))
        );
        assert!(v["reason"].as_str().expect("reason").len() <= 300);
        assert!(!lines[0].contains('\n'));
    }
}
