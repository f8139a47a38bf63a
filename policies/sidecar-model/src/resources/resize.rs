//! In-place resize (`pods/resize`, KEP-1287; pod-level resources KEP-5419): what a resize
//! may change, checked as the kubelet and API server decide it, so a resize the cluster
//! would refuse or fail is refused at admission with the reason.

use serde::Serialize;
use std::fmt;

use crate::kube::{Feature, KubeVersion};
use crate::resources::effective::{QosClass, Role};
use crate::resources::findings::Accounting;

/// A resize that may not be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ResizeProblem {
    /// A regular init container resized on a version that cannot (before 1.36 only
    /// sidecars among init containers may be).
    InitStepResized { container: String, version: String },
    /// A regular init container whose resize policy restarts it: the API server refuses
    /// to resize it (and, from 1.36, a new one with that policy).
    InitStepRestartsOnResize { container: String },
    /// A resize never changes the pod's QoS class.
    QosChanged { from: QosClass, to: QosClass },
    /// A resize changes resources, not which containers the pod has.
    ContainersChanged,
    /// Pod-level resources resized on a version that cannot.
    PodLevelNeedsVersion { version: String },
}

impl fmt::Display for ResizeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResizeProblem::InitStepResized { container, version } => write!(
                f,
                "the resize changes the resources of init container {container:?}: on Kubernetes {version} only native sidecars among init containers may be resized (regular init containers from {})",
                Feature::InitContainerResize.since()
            ),
            ResizeProblem::InitStepRestartsOnResize { container } => write!(
                f,
                "the resize changes the resources of init container {container:?}, whose resizePolicy says RestartContainer: a regular init container is resized only without a restart"
            ),
            ResizeProblem::QosChanged { from, to } => write!(
                f,
                "the resize would make the pod {} (it is {}), and a resize may never change a pod's QoS class; keep requests equal to limits (Guaranteed) or keep them apart (Burstable) as they are",
                to.as_str(),
                from.as_str()
            ),
            ResizeProblem::ContainersChanged => f.write_str(
                "the resize adds, removes or renames containers; a resize may only change their resources",
            ),
            ResizeProblem::PodLevelNeedsVersion { version } => write!(
                f,
                "the resize changes pod-level resources (spec.resources), which Kubernetes {version} cannot resize in place (from {})",
                Feature::PodLevelResize.since()
            ),
        }
    }
}

/// What is wrong with resizing the pod of `old` into the pod of `new`.
pub fn check(old: &Accounting, new: &Accounting, version: KubeVersion) -> Vec<ResizeProblem> {
    let mut out = Vec::new();
    let same_containers = old.containers.len() == new.containers.len()
        && old
            .containers
            .iter()
            .zip(&new.containers)
            .all(|(a, b)| a.name == b.name && a.role == b.role);
    if !same_containers {
        out.push(ResizeProblem::ContainersChanged);
        return out;
    }
    for (a, b) in old.containers.iter().zip(&new.containers) {
        if a.role != Role::Init || a.resources == b.resources {
            continue;
        }
        if !version.supports(Feature::InitContainerResize) {
            out.push(ResizeProblem::InitStepResized {
                container: a.name.clone(),
                version: version.to_string(),
            });
        } else if b.restarts_on_resize {
            out.push(ResizeProblem::InitStepRestartsOnResize {
                container: a.name.clone(),
            });
        }
    }
    if old.pod_level != new.pod_level && !version.supports(Feature::PodLevelResize) {
        out.push(ResizeProblem::PodLevelNeedsVersion {
            version: version.to_string(),
        });
    }
    let (from, to) = (old.pod().qos_class, new.pod().qos_class);
    if from != to {
        out.push(ResizeProblem::QosChanged { from, to });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::KnownSidecars;
    use crate::kube::PodModel;
    use serde_json::{Value, json};

    fn accounting(object: Value) -> Accounting {
        let model = PodModel::from_json(&object.to_string(), &KnownSidecars::default())
            .unwrap()
            .unwrap();
        Accounting::of(&model, KubeVersion::parse("1.35").unwrap()).unwrap()
    }

    fn pod(proxy_cpu: &str, init_cpu: &str, app_limit: &str) -> Accounting {
        let fixed = |cpu: &str| json!({"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}});
        accounting(json!({"kind": "Pod", "spec": {
            "initContainers": [
                {"name": "setup", "resources": fixed(init_cpu)},
                {"name": "proxy", "restartPolicy": "Always", "resources": fixed(proxy_cpu)}],
            "containers": [{"name": "app", "resources":
                {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"cpu": app_limit, "memory": "64Mi"}}}]}}))
    }

    #[test]
    fn sidecars_and_apps_resize_init_steps_and_classes_do_not_change() {
        let v = KubeVersion::parse("1.35").unwrap();
        let before = pod("100m", "50m", "1");
        assert!(check(&before, &pod("200m", "50m", "1"), v).is_empty());
        let said: Vec<String> = check(&before, &pod("100m", "80m", "2"), v)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("init container \"setup\""), "{said:?}");
        assert!(
            said[1].starts_with("the resize would make the pod Burstable (it is Guaranteed)"),
            "{said:?}"
        );
    }
}
