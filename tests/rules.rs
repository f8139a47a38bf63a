//! Each rule is declared once, in the model (`declare_rules!`): its name, its default level
//! and its summary. The policies' documents follow the declaration: the README names every
//! rule with its default level, and `questions-ui.yml` offers every rule, and no other, with
//! its default and its summary.

use serde_json::Value;
use sidecar_model::rule::Rule;
use std::path::Path;

fn check<R: Rule>(policy: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(policy);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let questions: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("questions-ui.yml")).unwrap())
            .unwrap();
    let offered: Vec<&Value> = questions["questions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| {
            q["variable"]
                .as_str()
                .is_some_and(|v| v.starts_with("rules."))
        })
        .collect();
    assert_eq!(
        offered
            .iter()
            .map(|q| q["variable"].as_str().unwrap())
            .collect::<Vec<_>>(),
        R::ALL
            .iter()
            .map(|r| format!("rules.{}", r.name()))
            .collect::<Vec<_>>(),
        "{policy}: questions-ui.yml offers the rules in their order"
    );
    for (&rule, question) in R::ALL.iter().zip(offered) {
        let (name, level) = (rule.name(), rule.default_level().as_str());
        assert_eq!(question["default"], level, "{policy}: {name}");
        assert_eq!(
            question["label"],
            format!("{name} ({})", rule.summary()),
            "{policy}: {name}"
        );
        // A table row (`| `name` | deny |`) or a list entry (`**`name`** (deny`).
        let documented = [
            format!("| `{name}` | {level} |"),
            format!("**`{name}`** ({level}"),
        ];
        assert!(
            documented.iter().any(|d| readme.contains(d.as_str())),
            "{policy}: README.md does not give {name} its default level {level}"
        );
    }
}

#[test]
fn the_lifecycle_policy_documents_its_rules_as_declared() {
    check::<sidecar_model::lifecycle::Rule>("sidecar-lifecycle-policy");
}

#[test]
fn the_resources_policy_documents_its_rules_as_declared() {
    check::<sidecar_model::resources::Rule>("sidecar-resources-policy");
}
