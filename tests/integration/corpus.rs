//! Conformance with the webhook corpus kept in `tests/corpus/` (`manifest.json`): every
//! signature case gives its expected verdict through the provider presets, and every payload
//! case parses. Case data is read from the manifest; nothing here names a case.

use bytes::Bytes;
use hub_core::body::{BodyFormat, BodyLimits, parse_body};
use hub_core::request::{Headers, RawRequest};
use hub_core::secret::Secret;
use hub_core::time::UnixMillis;
use hub_core::verify::presets;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(corpus().join("manifest.json")).expect("tests/corpus/manifest.json");
    let m: Value = serde_json::from_str(&text).expect("manifest JSON");
    m["cases"].as_array().expect("cases").clone()
}

fn headers_of(case: &Value) -> Headers {
    let mut h = Headers::new();
    if let Some(obj) = case["headers"].as_object() {
        for (k, v) in obj {
            h.push(k, v.as_str().unwrap_or_default());
        }
    }
    if h.get("content-type").is_none()
        && let Some(ct) = case["content_type"].as_str()
    {
        h.push("content-type", ct);
    }
    h
}

fn body_of(case: &Value) -> Bytes {
    let f = case["body_file"].as_str().expect("body_file");
    Bytes::from(std::fs::read(corpus().join(f)).expect("body file"))
}

/// The manifest's secret; a key file is named by its path (Paddle Classic's PEM).
fn secret_of(case: &Value) -> Secret {
    let s = case["secret"].as_str().unwrap_or_default();
    let first = s.split_whitespace().next().unwrap_or_default();
    let path = corpus().join(first);
    if first.ends_with(".pem") && path.is_file() {
        return Secret::new(std::fs::read_to_string(path).expect("key file"));
    }
    Secret::new(s)
}

#[derive(Default, Debug)]
struct Tally {
    pass: usize,
    fail: Vec<String>,
}

#[test]
fn every_signature_case_gives_its_expected_verdict() {
    let mut per: BTreeMap<String, Tally> = BTreeMap::new();
    let mut policy = Vec::new();
    for case in manifest().iter().filter(|c| c["kind"] == "signature") {
        let provider = case["provider"].as_str().expect("provider");
        let id = case["id"].as_str().unwrap_or("?");
        let verdict = case["expected"]["verdict"].as_str().unwrap_or_default();
        let preset =
            presets::preset(provider).unwrap_or_else(|| panic!("no preset for provider `{provider}`"));
        // `verify_options.tolerance: null` means the upstream test checked only the MAC; so does
        // a case with no verifier clock (`now`): its timestamp says nothing about today.
        let tolerance = match case.get("verify_options").and_then(|o| o.get("tolerance")) {
            Some(Value::Null) => None,
            Some(v) => v.as_u64().map(Duration::from_secs),
            None if case.get("now").is_none() => None,
            None => preset.tolerance,
        };
        // The corpus checks the signature math of every version a provider has, the older
        // timestamp-less ones too (a source opts in to those with `allow_legacy_signatures`).
        let verifier = preset.legacy_verifier(vec![secret_of(case)], tolerance).expect("preset builds");
        let now = case["now"].as_u64().map(UnixMillis::from_secs).unwrap_or_else(|| {
            UnixMillis(
                u64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0),
                )
                .unwrap_or(0),
            )
        });
        let req = RawRequest {
            method: case["method"].as_str().unwrap_or("POST").to_string(),
            path: "/hooks/x".into(),
            query: None,
            headers: headers_of(case),
            body: body_of(case),
            received_at: now,
            remote_addr: None,
        };
        let got = verifier.verify_with(&req, case["request_url"].as_str(), now);
        let ok = match verdict {
            "valid" => got.is_ok(),
            "invalid" => got.is_err(),
            _ => {
                policy
                    .push(format!("{id}: {verdict} → {}", if got.is_ok() { "accepted" } else { "rejected" }));
                continue;
            }
        };
        let t = per.entry(provider.to_string()).or_default();
        if ok {
            t.pass += 1;
        } else {
            t.fail.push(format!("{id}: expected {verdict}, got {got:?}"));
        }
    }
    let mut total = 0;
    for (p, t) in &per {
        println!("signature {p:<18} {:>3}/{:<3}", t.pass, t.pass + t.fail.len());
        total += t.pass + t.fail.len();
    }
    for p in &policy {
        println!("policy case (not counted): {p}");
    }
    let failures: Vec<&String> = per.values().flat_map(|t| &t.fail).collect();
    assert!(failures.is_empty(), "{} of {total} signature cases wrong:\n{failures:#?}", failures.len());
    assert!(total >= 100, "expected the corpus's signature cases, found {total}");
}

#[test]
fn every_payload_case_parses_and_matches_its_expected_values() {
    let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in manifest().iter().filter(|c| c["kind"] == "payload") {
        let provider = case["provider"].as_str().unwrap_or("?").to_string();
        let id = case["id"].as_str().unwrap_or("?");
        let parsed = parse_body(BodyFormat::Auto, &headers_of(case), &body_of(case), &BodyLimits::default());
        let entry = per.entry(provider).or_default();
        match parsed {
            Err(e) => failures.push(format!("{id}: {e}")),
            Ok(p) => {
                entry.0 += 1;
                // Expected values are given as `dotted.path: value` pairs into the parsed body.
                if let Some(exp) = case["expected"].as_object() {
                    for (path, want) in exp {
                        let got = path.split('.').try_fold(&p.value, |v, seg| match v {
                            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                            _ => v.get(seg),
                        });
                        entry.1 += 1;
                        if got != Some(want) {
                            failures.push(format!("{id}: `{path}` expected {want}, got {got:?}"));
                        }
                    }
                }
            }
        }
    }
    for (p, (n, checks)) in &per {
        println!("payload   {p:<18} {n:>3} parsed, {checks} expected values checked");
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(per.values().map(|(n, _)| n).sum::<usize>() >= 80);
}
