//! The `retention` key of a source: its default, an override, and the compile errors that keep
//! an event (and its dedup key) from being deleted while it can still be retried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hub_core::mapping::{DEFAULT_RETENTION, compile_file};
use hub_core::secret::PlaceholderSecrets;
use std::time::Duration;

fn file(source_extra: &str, retry: &str) -> String {
    format!(
        "source:\n  id: shop\n  description: test source\n  verify: none\n{source_extra}routes:\n  - id: crm\n    map: {{a: \"{{{{body.a}}}}\"}}\n    to: {{url: \"https://crm.example/x\"}}\n{retry}"
    )
}

#[test]
fn retention_defaults_to_thirty_days_and_can_be_set_per_source() {
    let (src, _) = compile_file("a.yaml", &file("", ""), &PlaceholderSecrets).unwrap();
    assert_eq!(src.retention, DEFAULT_RETENTION);
    assert_eq!(DEFAULT_RETENTION, Duration::from_secs(30 * 86_400));
    let (src, _) = compile_file("a.yaml", &file("  retention: 10d\n", ""), &PlaceholderSecrets).unwrap();
    assert_eq!(src.retention, Duration::from_secs(10 * 86_400));
}

#[test]
fn retention_shorter_than_max_age_plus_margin_is_a_located_error() {
    // max_age 3d (the default) + 1d margin > 2d.
    let text = file("  retention: 2d\n", "");
    let diags = compile_file("a.yaml", &text, &PlaceholderSecrets).unwrap_err();
    assert_eq!(diags.len(), 1, "{diags:?}");
    let d = &diags[0];
    assert_eq!((d.file.as_str(), d.line, d.col), ("a.yaml", 5, 14), "{d}");
    assert!(d.message.contains("max_age 3d") && d.message.contains("at least 4d"), "{d}");

    // Exactly max_age + margin is enough.
    let text = file("  retention: 4d\n", "");
    assert!(compile_file("a.yaml", &text, &PlaceholderSecrets).is_ok());

    // Without `retention`, a long max_age points at the max_age itself.
    let text = file("", "    retry: {max_age: 40d}\n");
    let diags = compile_file("a.yaml", &text, &PlaceholderSecrets).unwrap_err();
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].line, diags[0].col), (9, 22), "{}", diags[0]);
    assert!(
        diags[0].message.contains("route `crm`'s max_age 40d") && diags[0].message.contains("at least 41d"),
        "{}",
        diags[0]
    );
}

#[test]
fn retention_bad_values_and_dedup_window_longer_than_retention_are_errors() {
    let diags = compile_file("a.yaml", &file("  retention: soon\n", ""), &PlaceholderSecrets).unwrap_err();
    assert_eq!((diags[0].line, diags[0].col), (5, 14), "{}", diags[0]);
    let diags = compile_file("a.yaml", &file("  retention: 0s\n", ""), &PlaceholderSecrets).unwrap_err();
    assert!(diags[0].message.contains("positive"), "{}", diags[0]);
    let text = file("  retention: 10d\n  dedup: {path: $.body.id, window: 20d}\n", "");
    let diags = compile_file("a.yaml", &text, &PlaceholderSecrets).unwrap_err();
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].line, diags[0].col), (6, 36), "{}", diags[0]);
    assert!(diags[0].message.contains("outlive"), "{}", diags[0]);
}
