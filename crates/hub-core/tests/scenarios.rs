//! Every scenario file shipped under `mappings/` passes against the whole shipped mapping set
//! (the same run `hub mappings test` makes).

use hub_core::mapping::{MappingSet, from_yaml};
use hub_core::secret::MapSecrets;
use hub_core::triggers::scenario::{ScenarioSpec, run};
use std::path::{Path, PathBuf};

fn yaml_under(dir: &Path, scenarios: bool, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if path.is_dir() {
            match (name.as_str(), scenarios) {
                ("examples", _) => {}
                ("scenarios", true) => yaml_under(&path, false, out),
                ("scenarios", false) => {}
                _ => yaml_under(&path, scenarios, out),
            }
        } else if path.extension().is_some_and(|e| e == "yaml") && (!scenarios || dir.ends_with("scenarios"))
        {
            out.push(path);
        }
    }
}

#[test]
fn shipped_scenarios_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings");
    let mut mappings = Vec::new();
    yaml_under(&root, false, &mut mappings);
    let texts: Vec<(String, String)> = mappings
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).expect("readable")))
        .collect();
    let mut scenarios = Vec::new();
    yaml_under(&root, true, &mut scenarios);
    scenarios.retain(|p| p.parent().is_some_and(|d| d.ends_with("scenarios")));
    assert!(scenarios.len() >= 5, "the shipped scenarios are found: {scenarios:?}");
    let mut failures = Vec::new();
    for path in &scenarios {
        let spec: ScenarioSpec =
            from_yaml(&std::fs::read_to_string(path).expect("readable")).expect("parses");
        let secrets =
            MapSecrets::or_placeholders(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let set = MappingSet::compile(&texts, &secrets).expect("the shipped mappings compile");
        let dir = path.parent().expect("dir").to_path_buf();
        let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| e.to_string());
        if let Err(e) = run(&set, &spec, &read) {
            failures.push(format!("{}:\n{e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A scenario whose expectation is wrong fails, and says where.
#[test]
fn a_wrong_expectation_fails_with_the_step_and_the_difference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings");
    let mut mappings = Vec::new();
    yaml_under(&root, false, &mut mappings);
    let texts: Vec<(String, String)> =
        mappings.iter().map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap())).collect();
    let set = MappingSet::compile(&texts, &MapSecrets::or_placeholders(Default::default())).unwrap();
    let spec: ScenarioSpec = from_yaml(
        "clock: 2026-03-02T09:00:00Z\nentity: contact\nsteps:\n  - fact: {name: email.clicked, key: a@example.com}\n  - expect: {deliveries: [{route: hot-lead-to-sales}], state: {contact/a@example.com: {lead_score: 4}}}\n",
    )
    .unwrap();
    let err = run(&set, &spec, &|_| Err("no files".into())).expect_err("the expectation is wrong");
    assert!(err.contains("step 2: expected 1 deliveries, got 0"), "{err}");
    assert!(err.contains("$.lead_score: expected 4, got 3"), "{err}");
}
