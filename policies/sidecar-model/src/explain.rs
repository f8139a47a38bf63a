//! What the model sees in a pod, for people (`sidecarctl explain`) and for scripts (JSON
//! with stable keys).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::kube::Finding;
use crate::kube::ModelError;
use crate::kube::PodModel;
use crate::kube::{ContainerList, KnownSidecars, KubeVersion, LifecycleType};
use crate::ordering::{self, StartGraph};
use crate::resources::{self, Breakdown, PerResource, Unbounded};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainedContainer {
    pub name: String,
    pub list: ContainerList,
    pub index: usize,
    #[serde(rename = "type")]
    pub lifecycle: LifecycleType,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainedFinding {
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub message: String,
}

impl From<&Finding> for ExplainedFinding {
    fn from(f: &Finding) -> Self {
        ExplainedFinding {
            code: f.code(),
            container: f.container().map(str::to_string),
            message: f.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub runs_to_completion: bool,
    pub containers: Vec<ExplainedContainer>,
    /// How Kubernetes starts the spec as it is.
    pub start_order: Vec<String>,
    pub stop_order: Vec<String>,
    /// The order the declared dependencies ask for, when it differs from `startOrder`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_start_order: Option<Vec<String>>,
    pub effective_requests: BTreeMap<String, String>,
    pub effective_limits: BTreeMap<String, String>,
    pub unbounded_limits: Vec<Unbounded>,
    pub qos_class: String,
    pub requests: PerResource<Breakdown>,
    pub limits: PerResource<Breakdown>,
    pub findings: Vec<ExplainedFinding>,
}

/// Explains `object` as it runs on `version`; `Ok(None)` when it holds no pod.
pub fn explain(
    object: &Value,
    known: &KnownSidecars,
    version: KubeVersion,
) -> Result<Option<Explanation>, ModelError> {
    let Some(model) = PodModel::from_object(object, known)? else {
        return Ok(None);
    };
    explain_model(&model, version).map(Some)
}

/// Explains the pod of `model` as it runs on `version` (which decides how pod-level
/// resources are defaulted and whether they decide the QoS class).
pub fn explain_model(model: &PodModel, version: KubeVersion) -> Result<Explanation, ModelError> {
    let res = resources::compute(&model.workload.spec, version)?;
    let mut findings: Vec<Finding> = model.findings.clone();
    for c in model.legacy_sidecars() {
        findings.push(Finding::LegacySidecar {
            container: c.name.clone(),
            runs_to_completion: model.runs_to_completion(),
        });
    }
    let start = ordering::spec_order(model);
    let graph = StartGraph::build(model, []);
    let required = match graph.order() {
        Ok(order) => {
            for edge in graph
                .violations(&start)
                .into_iter()
                .filter(|e| e.origin.is_explicit())
            {
                findings.push(Finding::OrderViolated {
                    before: model.containers[edge.from].name.clone(),
                    after: model.containers[edge.to].name.clone(),
                    origin: edge.origin.to_string(),
                });
            }
            (order != start).then(|| ordering::names(model, &order))
        }
        Err(cycle) => {
            findings.push(Finding::StartCycle {
                path: ordering::names(model, &cycle.path),
            });
            None
        }
    };
    let stop = ordering::stop_order(model, &start);
    let fmt_map =
        |m: PerResource<crate::Quantity>| m.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    Ok(Explanation {
        kind: model.workload.kind.as_str().into(),
        name: model.workload.name.clone(),
        runs_to_completion: model.runs_to_completion(),
        containers: model
            .containers
            .iter()
            .map(|c| ExplainedContainer {
                name: c.name.clone(),
                list: c.list,
                index: c.index,
                lifecycle: c.lifecycle_type,
                reason: c.reason.to_string(),
            })
            .collect(),
        start_order: ordering::names(model, &start),
        stop_order: ordering::names(model, &stop),
        required_start_order: required,
        effective_requests: fmt_map(res.effective_requests()),
        // As the resources policy's audit annotation says it: a limit some container leaves
        // unset is unbounded.
        effective_limits: {
            let mut limits: BTreeMap<String, String> = fmt_map(res.effective_limits());
            for u in &res.unbounded_limits {
                limits.insert(u.resource.clone(), "unbounded".into());
            }
            limits
        },
        unbounded_limits: res.unbounded_limits.clone(),
        qos_class: res.qos_class.as_str().into(),
        requests: res.requests,
        limits: res.limits,
        findings: findings.iter().map(ExplainedFinding::from).collect(),
    })
}

impl Explanation {
    /// A page a platform engineer reads.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let name = self
            .name
            .as_deref()
            .map(|n| format!("/{n}"))
            .unwrap_or_default();
        let completion = if self.runs_to_completion {
            " (runs to completion)"
        } else {
            ""
        };
        let _ = writeln!(out, "{}{name}{completion}", self.kind);
        let _ = writeln!(out, "containers:");
        let width = self
            .containers
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &self.containers {
            let place = format!("{}[{}]", c.list.field(), c.index);
            let _ = writeln!(
                out,
                "  {place:<18} {:<width$}  {:<11} {}",
                c.name,
                c.lifecycle.as_str(),
                c.reason
            );
        }
        let _ = writeln!(out, "start order: {}", self.start_order.join(" → "));
        if let Some(required) = &self.required_start_order {
            let _ = writeln!(out, "required:    {}", required.join(" → "));
        }
        let _ = writeln!(out, "stop order:  {}", self.stop_order.join(" → "));
        for (title, table) in [("requests", &self.requests), ("limits", &self.limits)] {
            if table.is_empty() {
                let _ = writeln!(out, "{title}: none");
                continue;
            }
            let _ = writeln!(out, "{title}:");
            for (resource, b) in table {
                // A limit some container leaves unset is unbounded, whatever the others
                // add up to: the figure the resources policy reports.
                let unbounded = (title == "limits")
                    .then(|| {
                        self.unbounded_limits
                            .iter()
                            .find(|u| u.resource == *resource)
                    })
                    .flatten();
                if let Some(u) = unbounded {
                    let _ = writeln!(
                        out,
                        "  {resource:<8} {:<8} = no limit on {} (the others: apps {}, sidecars {})",
                        "unbounded",
                        u.containers.join(", "),
                        b.app_sum,
                        b.sidecar_sum
                    );
                    continue;
                }
                let mut parts = vec![
                    format!("apps {}", b.app_sum),
                    format!("sidecars {}", b.sidecar_sum),
                ];
                if !b.init_peak.is_zero() {
                    parts.push(format!("init peak {}", b.init_peak));
                }
                if let Some(p) = b.pod_level {
                    parts.push(format!("pod-level {p} (containers {})", b.aggregate()));
                }
                if !b.overhead.is_zero() {
                    parts.push(format!("overhead {}", b.overhead));
                }
                let _ = writeln!(
                    out,
                    "  {resource:<8} {:<8} = {}",
                    b.effective.to_string(),
                    parts.join(", ")
                );
            }
        }
        for u in &self.unbounded_limits {
            if !self.limits.contains_key(&u.resource) {
                let _ = writeln!(
                    out,
                    "unbounded {} limit: no limit on {}",
                    u.resource,
                    u.containers.join(", ")
                );
            }
        }
        let _ = writeln!(out, "QoS class: {}", self.qos_class);
        if self.findings.is_empty() {
            let _ = writeln!(out, "findings: none");
        } else {
            let _ = writeln!(out, "findings:");
            for f in &self.findings {
                let _ = writeln!(out, "  - [{}] {}", f.code, f.message);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn explains_a_legacy_istio_job() {
        let job = json!({"kind": "Job", "metadata": {"name": "pi"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never",
        "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1"}],
        "containers": [
            {"name": "pi", "image": "perl", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}},
            {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1", "resources": {"requests": {"cpu": "100m"}}}
        ]}}}});
        let e = explain(&job, &KnownSidecars::default(), KubeVersion::DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(e.start_order, ["istio-init", "pi", "istio-proxy"]);
        assert_eq!(
            e.required_start_order.as_deref(),
            Some(&["istio-init".to_string(), "istio-proxy".into(), "pi".into()][..])
        );
        assert_eq!(e.stop_order, ["pi", "istio-proxy"]);
        assert_eq!(e.effective_requests["cpu"], "1100m");
        assert_eq!(e.qos_class, "Burstable");
        assert_eq!(e.findings.len(), 1);
        assert_eq!(e.findings[0].code, "legacySidecar");
        assert!(e.findings[0].message.contains("never completes"));
        let json = serde_json::to_value(&e).unwrap();
        for key in [
            "containers",
            "startOrder",
            "stopOrder",
            "effectiveRequests",
            "effectiveLimits",
            "unboundedLimits",
            "qosClass",
            "findings",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        for key in ["name", "list", "index", "type", "reason"] {
            assert!(json["containers"][0].get(key).is_some(), "{key}");
        }
        let text = e.render_text();
        assert!(text.contains("Job/pi (runs to completion)"), "{text}");
        assert!(text.contains("QoS class: Burstable"), "{text}");
    }

    #[test]
    fn cycles_and_violations_are_findings() {
        let pod = json!({"kind": "Pod", "metadata": {"annotations": {
            "after.sidecars.dev/a": "b", "after.sidecars.dev/b": "a"}},
            "spec": {"initContainers": [{"name": "a", "restartPolicy": "Always"}, {"name": "b", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]}});
        let e = explain(&pod, &KnownSidecars::default(), KubeVersion::DEFAULT)
            .unwrap()
            .unwrap();
        assert!(
            e.findings
                .iter()
                .any(|f| f.code == "startCycle" && f.message.contains("→"))
        );
        let pod = json!({"kind": "Pod", "metadata": {"annotations": {"after.sidecars.dev/a": "b"}},
            "spec": {"initContainers": [{"name": "a", "restartPolicy": "Always"}, {"name": "b", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]}});
        let e = explain(&pod, &KnownSidecars::default(), KubeVersion::DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(e.findings.len(), 1, "{:?}", e.findings);
        assert_eq!(e.findings[0].code, "orderViolated");
        assert_eq!(e.required_start_order.unwrap(), ["b", "a", "app"]);
    }
}
