//! Every golden example under `mappings/` runs here, so `cargo test` fails on a mapping change
//! that alters what is sent.

use std::path::PathBuf;

fn mappings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../mappings")
}

#[test]
fn shipped_mappings_validate() {
    let mut out = Vec::new();
    let ok = hub_cli::mappings_cmd::validate(&mappings_dir(), false, &mut out).expect("validate runs");
    assert!(ok, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn shipped_golden_examples_pass() {
    let mut out = Vec::new();
    let report = hub_cli::mappings_cmd::test(&mappings_dir(), &mut out).expect("test runs");
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    assert_eq!(report.failed, 0, "{text}");
    assert!(report.passed >= 8, "expected the shipped examples to run, got {}: {text}", report.passed);
}

#[test]
fn validate_reports_file_line_and_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "source:\n  id: bad\n  description: unsigned\n  verify: none\nroutes:\n  - id: r\n    map: {a: \"{{shout body.x}}\"}\n    to: {url: \"https://x.test\"}\n",
    )
    .expect("write");
    let mut out = Vec::new();
    let ok = hub_cli::mappings_cmd::validate(dir.path(), false, &mut out).expect("runs");
    let text = String::from_utf8_lossy(&out);
    assert!(!ok);
    assert!(text.contains("bad.yaml:7:14: unknown helper `shout`"), "{text}");
    let (code, _) = crate::support::hub_cli(&["mappings", "validate", dir.path().to_str().expect("utf8")]);
    assert_eq!(code, 1);
}

#[test]
fn validate_lists_unverified_sources_and_refuses_an_undeclared_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let route = "routes:\n  - id: r\n    map: {a: $.body.a}\n    to: {url: \"https://x.test\"}\n";
    std::fs::write(
        dir.path().join("open.yaml"),
        format!("source:\n  id: open\n  description: the lab printer cannot sign\n  verify: none\n{route}"),
    )
    .expect("write");
    let mut out = Vec::new();
    assert!(hub_cli::mappings_cmd::validate(dir.path(), false, &mut out).expect("runs"));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("unverified: source `open`"), "{text}");
    assert!(text.contains("accepts requests from anyone"), "{text}");

    std::fs::write(dir.path().join("forgot.yaml"), format!("source:\n  id: forgot\n{route}")).expect("write");
    let mut out = Vec::new();
    assert!(!hub_cli::mappings_cmd::validate(dir.path(), false, &mut out).expect("runs"));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("forgot.yaml:2:7: source has no verification"), "{text}");
}

/// `hub mappings push` refuses, before it reaches the table, a set whose routes retry longer than
/// the deployment keeps events (retries of 3 days + the dead-letter queue's 14 > 10 days).
#[test]
fn push_refuses_a_set_that_retries_longer_than_the_deployment_keeps_events() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    crate::support::lead_mappings(&dir, "https://crm.example.com/contacts", "");
    let d = dir.to_str().expect("utf8");
    let env = [("AWS_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")];
    let (code, out, err) = crate::support::hub_cli_env(
        &["mappings", "push", d, "--table", "no-such-table", "--retention-days", "10"],
        &env,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("more than the deployment keeps events"), "{out}{err}");
    assert!(out.contains("nothing pushed"), "{out}{err}");
}
