//! Container restart rules (KEP-5307) and the pod-wide restart action (KEP-5532): what a
//! container does when it exits, and the rules checked as the API server checks them, so
//! a pod is refused at admission with a message that says what to do.

use k8s_openapi::api::core::v1::ContainerRestartRule;
use serde::Serialize;
use std::fmt;

use crate::kube::Container;
use crate::kube::{Feature, KubeVersion};

/// The API server's limit on `restartPolicyRules`.
pub const MAX_RULES: usize = 20;
/// The API server's limit on `exitCodes.values`.
pub const MAX_EXIT_CODES: usize = 255;

pub const RESTART: &str = "Restart";
pub const RESTART_ALL_CONTAINERS: &str = "RestartAllContainers";

/// Why a container is started again after it exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum RestartCause {
    /// `restartPolicy: Always` on the container.
    Policy,
    /// The first rule that matches the exit code.
    Rule { index: usize, action: String },
}

impl fmt::Display for RestartCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartCause::Policy => f.write_str("restartPolicy: Always"),
            RestartCause::Rule { index, action } => {
                write!(f, "restartPolicyRules[{index}] ({action})")
            }
        }
    }
}

/// Whether `rule` matches a container that exited with `code`. A rule without
/// `exitCodes` matches nothing (and is refused by [`validate`]).
fn matches(rule: &ContainerRestartRule, code: i32) -> bool {
    let Some(codes) = &rule.exit_codes else {
        return false;
    };
    let listed = codes.values.as_deref().unwrap_or_default().contains(&code);
    match codes.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    }
}

/// What restarts an app container (or a regular init container) after it exited with
/// `code`: the first rule that matches it, else the container's own `restartPolicy`.
/// `None` when the container's fate is the pod's `restartPolicy`, or it stays exited.
pub fn restart_after(c: &Container, code: i32) -> Option<RestartCause> {
    let rules = c.restart_policy_rules.as_deref().unwrap_or_default();
    if let Some((index, rule)) = rules.iter().enumerate().find(|(_, r)| matches(r, code)) {
        return Some(RestartCause::Rule {
            index,
            action: rule.action.clone(),
        });
    }
    match c.restart_policy.as_deref() {
        Some("Always") => Some(RestartCause::Policy),
        _ => None,
    }
}

/// A rule the API server refuses, or one that can never match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RuleError {
    /// Rules without the container's own `restartPolicy`.
    NoRestartPolicy,
    TooManyRules {
        count: usize,
    },
    UnknownAction {
        index: usize,
        action: String,
    },
    /// An action newer than the declared version.
    ActionNeedsVersion {
        index: usize,
        action: String,
        since: String,
        version: String,
    },
    NoExitCodes {
        index: usize,
    },
    UnknownOperator {
        index: usize,
        operator: String,
    },
    TooManyExitCodes {
        index: usize,
        count: usize,
    },
    DuplicateExitCode {
        index: usize,
        code: i32,
    },
    /// Rules on a native sidecar, before the release that allows them.
    OnASidecar {
        since: String,
        version: String,
    },
    /// A process exits with 0–255: any other value never matches.
    ExitCodeOutOfRange {
        index: usize,
        code: i32,
    },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::NoRestartPolicy => f.write_str(
                "restartPolicyRules need the container's own restartPolicy (Always, OnFailure or Never), even when it is the pod's",
            ),
            RuleError::TooManyRules { count } => write!(
                f,
                "restartPolicyRules has {count} rules, at most {MAX_RULES} are allowed"
            ),
            RuleError::UnknownAction { index, action } => write!(
                f,
                "restartPolicyRules[{index}].action {action:?} is not one of {RESTART}, {RESTART_ALL_CONTAINERS}"
            ),
            RuleError::ActionNeedsVersion {
                index,
                action,
                since,
                version,
            } => write!(
                f,
                "restartPolicyRules[{index}].action {action} needs Kubernetes {since} (declared: {version})"
            ),
            RuleError::NoExitCodes { index } => {
                write!(f, "restartPolicyRules[{index}] has no exitCodes")
            }
            RuleError::UnknownOperator { index, operator } => write!(
                f,
                "restartPolicyRules[{index}].exitCodes.operator {operator:?} is not In or NotIn"
            ),
            RuleError::TooManyExitCodes { index, count } => write!(
                f,
                "restartPolicyRules[{index}].exitCodes.values has {count} values, at most {MAX_EXIT_CODES} are allowed"
            ),
            RuleError::DuplicateExitCode { index, code } => write!(
                f,
                "restartPolicyRules[{index}].exitCodes.values lists {code} twice"
            ),
            RuleError::OnASidecar { since, version } => write!(
                f,
                "restartPolicyRules on a native sidecar are refused before Kubernetes {since} (declared: {version}); remove them"
            ),
            RuleError::ExitCodeOutOfRange { index, code } => write!(
                f,
                "restartPolicyRules[{index}].exitCodes.values has {code}, but exit codes are 0 to 255, so it never matches"
            ),
        }
    }
}

/// The container's rules checked as the API server checks them on `version`.
pub fn validate(c: &Container, version: KubeVersion) -> Vec<RuleError> {
    let Some(rules) = &c.restart_policy_rules else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if c.restart_policy.is_none() {
        out.push(RuleError::NoRestartPolicy);
    }
    if rules.len() > MAX_RULES {
        out.push(RuleError::TooManyRules { count: rules.len() });
    }
    for (index, rule) in rules.iter().enumerate() {
        match rule.action.as_str() {
            RESTART => {}
            RESTART_ALL_CONTAINERS if !version.supports(Feature::RestartAllContainers) => {
                out.push(RuleError::ActionNeedsVersion {
                    index,
                    action: rule.action.clone(),
                    since: Feature::RestartAllContainers.since().to_string(),
                    version: version.to_string(),
                })
            }
            RESTART_ALL_CONTAINERS => {}
            other => out.push(RuleError::UnknownAction {
                index,
                action: other.into(),
            }),
        }
        let Some(codes) = &rule.exit_codes else {
            out.push(RuleError::NoExitCodes { index });
            continue;
        };
        if !matches!(codes.operator.as_str(), "In" | "NotIn") {
            out.push(RuleError::UnknownOperator {
                index,
                operator: codes.operator.clone(),
            });
        }
        let values = codes.values.as_deref().unwrap_or_default();
        if values.len() > MAX_EXIT_CODES {
            out.push(RuleError::TooManyExitCodes {
                index,
                count: values.len(),
            });
        }
        let mut seen = [false; 256];
        for &code in values {
            match u8::try_from(code) {
                Err(_) => out.push(RuleError::ExitCodeOutOfRange { index, code }),
                Ok(byte) if seen[usize::from(byte)] => {
                    out.push(RuleError::DuplicateExitCode { index, code })
                }
                Ok(byte) => seen[usize::from(byte)] = true,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides_then_the_policy() {
        let c = container(
            json!({"name": "trainer", "restartPolicy": "Never", "restartPolicyRules": [
                {"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}},
                {"action": "RestartAllContainers", "exitCodes": {"operator": "NotIn", "values": [0, 1]}}
            ]}),
        );
        assert_eq!(
            restart_after(&c, 42),
            Some(RestartCause::Rule {
                index: 0,
                action: "Restart".into()
            })
        );
        assert_eq!(
            restart_after(&c, 7).unwrap().to_string(),
            "restartPolicyRules[1] (RestartAllContainers)"
        );
        assert_eq!(restart_after(&c, 0), None);
        let always = container(json!({"name": "w", "restartPolicy": "Always"}));
        assert_eq!(restart_after(&always, 0), Some(RestartCause::Policy));
    }

    #[test]
    fn rules_are_checked_as_the_api_server_checks_them() {
        let v136 = KubeVersion::parse("1.36").unwrap();
        let mut rules: Vec<_> = (0..21)
            .map(|_| json!({"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}}))
            .collect();
        rules[0] =
            json!({"action": "Retry", "exitCodes": {"operator": "Is", "values": [1, 1, 300, -1]}});
        rules[1] = json!({"action": "Restart"});
        let c = container(json!({"name": "w", "restartPolicyRules": rules}));
        let said: Vec<String> = validate(&c, v136).iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "restartPolicyRules need the container's own restartPolicy (Always, OnFailure or Never), even when it is the pod's",
                "restartPolicyRules has 21 rules, at most 20 are allowed",
                "restartPolicyRules[0].action \"Retry\" is not one of Restart, RestartAllContainers",
                "restartPolicyRules[0].exitCodes.operator \"Is\" is not In or NotIn",
                "restartPolicyRules[0].exitCodes.values lists 1 twice",
                "restartPolicyRules[0].exitCodes.values has 300, but exit codes are 0 to 255, so it never matches",
                "restartPolicyRules[0].exitCodes.values has -1, but exit codes are 0 to 255, so it never matches",
                "restartPolicyRules[1] has no exitCodes",
            ]
        );
        let all = container(
            json!({"name": "w", "restartPolicy": "Never", "restartPolicyRules": [
            {"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [3]}}]}),
        );
        assert!(validate(&all, v136).is_empty());
        let v135 = KubeVersion::parse("1.35").unwrap();
        assert_eq!(
            validate(&all, v135)[0].to_string(),
            "restartPolicyRules[0].action RestartAllContainers needs Kubernetes 1.36 (declared: 1.35)"
        );
    }
}
