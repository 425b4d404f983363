//! The shipped rules: they load, ops' rule tests pass, and the JSON Schemas
//! editors validate against are the ones the rule types generate.
//!
//! After changing the rule types, `TALLY_UPDATE_SCHEMAS=1 cargo test -p
//! tally-rules --test rules_config` rewrites the committed schemas.

use std::path::{Path, PathBuf};

use tally_core::rules::load::Condition;
use tally_core::rules::unit;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules-config")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_starter_set_has_limits_and_cross_counter_expressions() {
    let rules = tally_rules::bundled::rules();
    let limits = rules
        .rules()
        .iter()
        .filter(|r| matches!(r.condition, Condition::Limit { .. }))
        .count();
    let expressions = rules.rules().len() - limits;
    assert!(
        limits >= 2 && expressions >= 2,
        "{limits} limits, {expressions} expressions"
    );
    let counter1 = rules
        .rule("counter1-max")
        .expect("the worked example's rule ships");
    assert!(matches!(
        counter1.condition,
        Condition::Limit {
            max: Some(150_000),
            ..
        }
    ));
}

#[test]
fn every_ops_rule_test_passes() {
    let rules = tally_rules::bundled::rules();
    let files = yaml_files(&config_dir().join("tests"));
    assert!(!files.is_empty(), "rules-config/tests/ has no tests");
    let mut passed = 0;
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = format!(
            "rules-config/tests/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let outcome = unit::run_file(&rules, &name, &text);
        passed += outcome.passed.len();
        failures.extend(outcome.failures.iter().map(ToString::to_string));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed >= 5, "only {passed} rule tests ran");
}

fn check_schema(path: &Path, generated: &str) {
    if std::env::var_os("TALLY_UPDATE_SCHEMAS").is_some() {
        std::fs::write(path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what the rule types generate; run TALLY_UPDATE_SCHEMAS=1 cargo test -p tally-rules --test rules_config",
        path.display()
    );
}

#[test]
fn the_committed_schemas_are_the_generated_ones() {
    check_schema(
        &config_dir().join("rules.schema.json"),
        &tally_core::rules::spec::json_schema(),
    );
    check_schema(
        &config_dir().join("tests/rule-tests.schema.json"),
        &unit::json_schema(),
    );
}

#[test]
fn every_file_points_editors_at_its_schema() {
    for (dir, schema) in [
        (config_dir(), "rules.schema.json"),
        (config_dir().join("tests"), "rule-tests.schema.json"),
    ] {
        for path in yaml_files(&dir) {
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            assert_eq!(
                first,
                format!("# yaml-language-server: $schema={schema}"),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn a_rules_folder_with_a_mistake_cannot_be_bundled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "rules:\n  - name: a\n    counter: X\n    max: 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("typo.yaml"),
        "rules:\n  - name: b\n    counter: X\n    maks: 1\n",
    )
    .unwrap();
    // Tests live in a subfolder and are not rules.
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/t.yaml"), "tests: []\n").unwrap();
    let error = tally_rules::bundle::load_config_dir(dir.path(), "rules-config").unwrap_err();
    assert!(
        error.starts_with(
            "rules-config/typo.yaml:4:5: rule \"b\": unknown key \"maks\" (did you mean `max`?)"
        ),
        "{error}"
    );
    std::fs::remove_file(dir.path().join("typo.yaml")).unwrap();
    let files = tally_rules::bundle::load_config_dir(dir.path(), "rules-config").unwrap();
    assert_eq!(files.len(), 1);
}

#[test]
fn the_shipped_folder_is_what_the_build_bundled() {
    let files = tally_rules::bundle::load_config_dir(&config_dir(), "rules-config").unwrap();
    let bundled: Vec<(&str, &str)> = tally_rules::bundled::FILES.to_vec();
    let read: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, _, text)| (name.as_str(), text.as_str()))
        .collect();
    assert_eq!(read, bundled);
}
