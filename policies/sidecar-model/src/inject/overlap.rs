//! Checks across sets: two sets that may select one pod must not inject the same
//! container name, nor one pod annotation with two values; no two sets may define one
//! volume name with two contents.

use super::set::{SetContainer, SidecarSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;
use std::collections::BTreeSet;

/// Two selectors that no set of labels can satisfy at once, as far as their
/// `matchLabels` and `DoesNotExist` expressions show.
pub(super) fn disjoint(a: &LabelSelector, b: &LabelSelector) -> bool {
    let labels = |s: &LabelSelector| s.match_labels.clone().unwrap_or_default();
    let absent = |s: &LabelSelector| -> BTreeSet<String> {
        s.match_expressions
            .iter()
            .flatten()
            .filter(|r| r.operator == "DoesNotExist")
            .map(|r| r.key.clone())
            .collect()
    };
    let (la, lb) = (labels(a), labels(b));
    la.iter().any(|(k, v)| lb.get(k).is_some_and(|w| w != v))
        || la.keys().any(|k| absent(b).contains(k))
        || lb.keys().any(|k| absent(a).contains(k))
}

pub(super) fn namespaces_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter()
        .any(|x| b.iter().any(|y| crate::kube::glob::overlap(x, y)))
}

/// Checks across sets: the same container name injected into pods two sets may both
/// select, or one volume name with two contents.
pub fn validate_sets(sets: &[SidecarSet]) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for set in sets {
        set.validate()?;
        if !names.insert(&set.name) {
            return Err(format!("sidecarSets: {:?} appears twice", set.name));
        }
    }
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            if namespaces_overlap(&a.namespaces, &b.namespaces)
                && !disjoint(&a.selector, &b.selector)
            {
                let shared: Vec<&str> = a
                    .all_containers()
                    .map(SetContainer::name)
                    .filter(|n| b.all_containers().any(|c| c.name() == *n))
                    .collect();
                if !shared.is_empty() {
                    return Err(format!(
                        "sidecarSets {:?} and {:?} both inject {} into the pods they both select; give them disjoint selectors or namespaces",
                        a.name,
                        b.name,
                        shared.join(", ")
                    ));
                }
                // Which value would win depends on the order the sets are applied in, and
                // exported as MutatingAdmissionPolicies that order is the API server's.
                if let Some((key, value)) = a
                    .pod_annotations
                    .iter()
                    .find(|(k, v)| b.pod_annotations.get(*k).is_some_and(|w| w != *v))
                {
                    return Err(format!(
                        "sidecarSets {:?} and {:?} both set pod annotation {key:?} ({value:?} and {:?}) on the pods they both select; give it one value or the sets disjoint selectors or namespaces",
                        a.name, b.name, b.pod_annotations[key]
                    ));
                }
            }
            for va in a.volumes() {
                let name = va.get("name");
                // Value equality ignores key order, which is what differs between
                // two spellings of one volume.
                if let Some(vb) = b.volumes().iter().find(|vb| vb.get("name") == name)
                    && va != vb
                {
                    return Err(format!(
                        "sidecarSets {:?} and {:?} both define volume {} with different contents",
                        a.name,
                        b.name,
                        name.cloned().unwrap_or(Value::Null)
                    ));
                }
            }
        }
    }
    Ok(())
}
