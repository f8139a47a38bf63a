//! Which pods a set's label selector picks, and the checks the API server makes of a
//! selector, so that a set is refused with the reason when settings are validated.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_core::SelectorExt;
use std::collections::BTreeMap;

pub(super) fn validate_selector(s: &LabelSelector) -> Result<(), String> {
    for r in s.match_expressions.iter().flatten() {
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!("{} {} needs values", r.key, r.operator));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!("{} {} takes no values", r.key, r.operator));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                ));
            }
        }
    }
    Ok(())
}

/// Whether `labels` match `s` (an empty selector matches everything), as kube-rs
/// matches them. A selector `validate_selector` refused matches nothing.
pub fn selector_matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    kube_core::Selector::try_from(s.clone()).is_ok_and(|s| s.matches(labels))
}
