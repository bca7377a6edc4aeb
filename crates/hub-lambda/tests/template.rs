//! Properties of `infra/template.yaml` the functions rely on, read from the template itself
//! (`infra/check` lints it; this checks what a linter cannot know). Intrinsic functions
//! (`!Ref`, `!GetAtt`, `!Sub`, `!If`) read as their plain argument here.

use serde_json::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml");
    serde_saphyr::from_str(&text).expect("the template parses as YAML")
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["Resources"].get(name).unwrap_or_else(|| panic!("resource {name}"))
}

/// The statements of a role's inline policy.
fn statements(t: &Value, role: &str) -> Vec<Value> {
    resource(t, role)["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements")
        .clone()
}

fn actions(st: &Value) -> Vec<String> {
    match &st["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn functions_that_parse_bodies_have_memory_for_the_largest_body() {
    let t = template();
    for f in ["IngestHttpFunction", "DeliverSqsFunction"] {
        let mb = resource(&t, f)["Properties"]["MemorySize"].as_u64().unwrap_or(0);
        assert!(mb >= 1024, "{f}: {mb} MB");
    }
}

#[test]
fn only_the_admin_role_can_write_the_mapping_set() {
    let t = template();
    let writes =
        ["dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"];
    for (role, allowed) in [
        ("IngestHttpRole", vec!["e#*", "k#*"]),
        ("DeliverSqsRole", vec!["e#*"]),
        ("ScheduleTickRole", vec!["e#*", "t#*"]),
    ] {
        for st in statements(&t, role) {
            let acts = actions(&st);
            if !acts.iter().any(|a| writes.contains(&a.as_str()) || a == "dynamodb:*") {
                continue;
            }
            let keys = &st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            let keys: Vec<&str> =
                keys.as_array().map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            assert_eq!(keys, allowed, "{role}: {acts:?} must be limited to event (and dedup) items");
            assert!(keys.iter().all(|k| !"mappings".starts_with(k.trim_end_matches('*'))), "{role}");
        }
    }
}

#[test]
fn deliver_sqs_holds_only_the_table_actions_it_uses() {
    let t = template();
    let all: Vec<String> = statements(&t, "DeliverSqsRole").iter().flat_map(actions).collect();
    assert!(!all.iter().any(|a| a == "dynamodb:DeleteItem" || a == "dynamodb:Scan"), "{all:?}");
}

#[test]
fn dead_events_raise_an_alarm_on_the_metric_the_functions_write() {
    let t = template();
    let alarm = &resource(&t, "DeadEventsAlarm")["Properties"];
    assert_eq!(alarm["MetricName"].as_str(), Some(hub_aws::metrics::DEAD_METRIC));
    // The namespace the alarm watches is the one the functions are told to write to.
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(alarm["Namespace"], env["HUB_METRICS_NAMESPACE"]);
    assert_eq!(
        (alarm["Threshold"].as_f64(), alarm["ComparisonOperator"].as_str()),
        (Some(0.0), Some("GreaterThanThreshold"))
    );
}

#[test]
fn events_are_kept_at_least_as_long_as_default_retries_and_the_dead_letter_queue() {
    let t = template();
    let min = t["Parameters"]["RetentionDays"]["MinValue"].as_u64().expect("MinValue");
    let dlq_days =
        resource(&t, "DeadLetterQueue")["Properties"]["MessageRetentionPeriod"].as_u64().expect("retention")
            / 86_400;
    let default_max_age = hub_core::retry::RetryPolicy::default().max_age.as_secs() / 86_400;
    assert!(min >= default_max_age + dlq_days, "RetentionDays MinValue {min}");
    assert_eq!(dlq_days, hub_aws::mappings::DLQ_RETENTION.as_secs() / 86_400);
    // Large bodies in S3 live at least as long as the items that point to them.
    let rule = &resource(&t, "BodiesBucket")["Properties"]["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(rule["ExpirationInDays"].as_str(), Some("RetentionDays"));
}

#[test]
fn with_two_secrets_the_ingest_function_cannot_read_destination_credentials() {
    let t = template();
    // (condition, secret) of each statement that reads a secret: `!If [cond, statement, NoValue]`
    let reads = |role: &str| -> Vec<(String, String)> {
        statements(&t, role)
            .into_iter()
            .filter_map(|st| {
                let (cond, st) = match st.as_array() {
                    Some(a) => (a[0].as_str().unwrap_or("").to_string(), a[1].clone()),
                    None => (String::new(), st),
                };
                let secret = actions(&st).iter().any(|a| a.starts_with("secretsmanager:"));
                secret.then(|| (cond, st["Resource"].as_str().unwrap_or("").to_string()))
            })
            .collect()
    };
    let pair = |c: &str, r: &str| (c.to_string(), r.to_string());
    assert_eq!(
        reads("IngestHttpRole"),
        vec![pair("IngestReadsSecrets", "SecretsArn"), pair("HasInboundSecrets", "InboundSecretsArn")]
    );
    let cond = &t["Conditions"]["IngestReadsSecrets"];
    assert!(cond.to_string().contains("HasInboundSecrets"), "only without an inbound secret: {cond}");
    assert_eq!(reads("DeliverSqsRole"), vec![pair("HasSecrets", "SecretsArn")]);
    assert!(reads("ScheduleTickRole").is_empty());
    assert_eq!(reads("AdminHttpRole").len(), 2);
    let env = |f: &str| resource(&t, f)["Properties"]["Environment"]["Variables"].clone();
    assert_eq!(
        env("IngestHttpFunction")["HUB_SECRETS_ID"],
        serde_json::json!(["HasInboundSecrets", "", "SecretsArn"])
    );
    assert_eq!(
        env("IngestHttpFunction")["HUB_SECRETS_HELD"],
        serde_json::json!(["HasInboundSecrets", "some", "all"])
    );
    assert_eq!(env("ScheduleTickFunction")["HUB_SECRETS_HELD"], serde_json::json!("some"));
}
