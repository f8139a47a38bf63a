//! Where the pod spec lives in each kind of object, and reading it.

use crate::spec::PodSpec;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::error::ModelError;

/// The kinds whose pods (or pod templates) the policies look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 8] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::ReplicaSet,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
        WorkloadKind::ReplicationController,
    ];

    /// The kind named by an object's `kind` field; `None` for anything else.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicationController => "ReplicationController",
        }
    }

    /// JSON pointer of the pod's metadata (the pod template's, for workloads).
    pub fn pod_metadata_pointer(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "/metadata",
            WorkloadKind::CronJob => "/spec/jobTemplate/spec/template/metadata",
            _ => "/spec/template/metadata",
        }
    }

    /// JSON pointer of the pod spec (the pod template's, for workloads).
    pub fn pod_spec_pointer(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "/spec",
            WorkloadKind::CronJob => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        }
    }

    /// Jobs and CronJobs run their pods to completion whatever the pod's restart policy says.
    pub fn runs_to_completion(self) -> bool {
        matches!(self, WorkloadKind::Job | WorkloadKind::CronJob)
    }
}

/// A pod, or a workload's pod template, read from an admission object.
#[derive(Debug, Clone)]
pub struct PodView {
    pub kind: WorkloadKind,
    /// The object's own name (or `generateName`), for messages.
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// The pod's annotations (the template's, for workloads).
    pub annotations: BTreeMap<String, String>,
    /// The pod's labels (the template's, for workloads).
    pub labels: BTreeMap<String, String>,
    pub spec: PodSpec,
}

impl PodView {
    /// Reads the pod of `object`. `Ok(None)` for kinds that hold no pod (they are accepted
    /// untouched); an error for a supported kind that is malformed.
    pub fn from_object(object: &Value) -> Result<Option<PodView>, ModelError> {
        let Some(kind) = object.get("kind").and_then(Value::as_str) else {
            return Ok(None);
        };
        let Some(kind) = WorkloadKind::from_kind(kind) else {
            return Ok(None);
        };
        Self::from_object_of_kind(object, kind).map(Some)
    }

    pub fn from_object_of_kind(object: &Value, kind: WorkloadKind) -> Result<PodView, ModelError> {
        let spec_value = object.pointer(kind.pod_spec_pointer()).ok_or_else(|| {
            ModelError::Malformed(format!(
                "{} has no pod spec at {}",
                kind.as_str(),
                kind.pod_spec_pointer()
            ))
        })?;
        // Deserialized from the borrowed value: no copy of the spec.
        let spec = PodSpec::deserialize(spec_value).map_err(|e| {
            ModelError::Malformed(format!(
                "the pod spec at {} of this {} is not valid: {e}",
                kind.pod_spec_pointer(),
                kind.as_str()
            ))
        })?;
        let metadata = object.pointer(kind.pod_metadata_pointer());
        let string_map = |field: &str| -> Result<BTreeMap<String, String>, ModelError> {
            match metadata.and_then(|m| m.get(field)) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(v) => BTreeMap::<String, String>::deserialize(v).map_err(|e| {
                    ModelError::Malformed(format!(
                        "{}/{field} must map strings to strings: {e}",
                        kind.pod_metadata_pointer()
                    ))
                }),
            }
        };
        let meta_str = |field: &str| {
            object
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(PodView {
            kind,
            name: meta_str("name").or_else(|| meta_str("generateName")),
            namespace: meta_str("namespace"),
            annotations: string_map("annotations")?,
            labels: string_map("labels")?,
            spec,
        })
    }

    /// A pod whose containers are expected to finish: a Job's or CronJob's, or one with
    /// `restartPolicy` `Never` or `OnFailure`.
    pub fn runs_to_completion(&self) -> bool {
        self.kind.runs_to_completion()
            || matches!(
                self.spec.restart_policy.as_deref(),
                Some("Never") | Some("OnFailure")
            )
    }

    /// Name and kind, for messages: `Job/pi`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => format!("{}/{n}", self.kind.as_str()),
            None => self.kind.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    #[test]
    fn finds_the_pod_spec_of_every_kind() {
        let objects = [
            json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {"a": "b"}}, "spec": pod_spec()}),
            json!({"kind": "Deployment", "spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}),
            json!({"kind": "ReplicaSet", "spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}),
            json!({"kind": "StatefulSet", "spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}),
            json!({"kind": "DaemonSet", "spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}),
            json!({"kind": "Job", "spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}}}),
            json!({"kind": "ReplicationController", "spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": pod_spec()}}}),
        ];
        for object in &objects {
            let view = PodView::from_object(object).unwrap().unwrap();
            assert_eq!(view.spec.containers[0].name, "app");
            assert_eq!(view.annotations["a"], "b", "{}", view.kind.as_str());
            assert_eq!(
                view.kind.runs_to_completion(),
                matches!(view.kind, WorkloadKind::Job | WorkloadKind::CronJob)
            );
        }
    }

    #[test]
    fn other_kinds_are_not_pods() {
        assert!(
            PodView::from_object(&json!({"kind": "ConfigMap", "data": {}}))
                .unwrap()
                .is_none()
        );
        assert!(
            PodView::from_object(&json!({"spec": {}}))
                .unwrap()
                .is_none()
        );
        assert!(PodView::from_object(&Value::Null).unwrap().is_none());
    }

    #[test]
    fn malformed_pods_are_errors_not_panics() {
        let cases = [
            json!({"kind": "Pod"}),
            json!({"kind": "Pod", "spec": {"containers": "nope"}}),
            json!({"kind": "Deployment", "spec": {"template": {}}}),
            json!({"kind": "Pod", "metadata": {"annotations": {"a": 1}}, "spec": pod_spec()}),
        ];
        for case in cases {
            assert!(PodView::from_object(&case).is_err(), "{case}");
        }
    }

    #[test]
    fn run_to_completion_follows_restart_policy() {
        for (policy, expected) in [
            (Some("Never"), true),
            (Some("OnFailure"), true),
            (Some("Always"), false),
            (None, false),
        ] {
            let mut spec = pod_spec();
            if let Some(p) = policy {
                spec["restartPolicy"] = json!(p);
            }
            let view = PodView::from_object(&json!({"kind": "Pod", "spec": spec}))
                .unwrap()
                .unwrap();
            assert_eq!(view.runs_to_completion(), expected, "{policy:?}");
        }
    }
}
