//! Where a workload keeps its pod in the request's JSON, and the edits every policy makes
//! there: a container's field removed, a pod annotation set. Containers are moved as they
//! are, keys the user did not touch stay as written, and nothing is defaulted, so the diff
//! an admission engine computes from the original touches only what changed. (A typed
//! round trip through k8s-openapi structs would add and drop fields and turn every policy
//! into a mutating one.)

use serde::Serialize;
use serde_json::{Map, Value};

use crate::json::{Node, Object};
use crate::kube::error::ModelError;
use crate::kube::lifecycle_type::ContainerList;
use crate::kube::pod::PodModel;
use crate::kube::workload::WorkloadKind;

/// What a mutation did, for messages and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "change",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Change {
    /// A legacy sidecar moved from `containers` to `initContainers` as a native sidecar.
    ConvertedToNativeSidecar {
        container: String,
        from: String,
        to: String,
        /// What else changed on it: fields a native sidecar has no use for, and what its
        /// mesh gives a native proxy.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        also: Vec<String>,
    },
    /// An optional native sidecar's readinessProbe was removed.
    RemovedReadinessProbe { container: String },
    /// A list was put into a new order.
    Reordered {
        list: ContainerList,
        before: Vec<String>,
        after: Vec<String>,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::ConvertedToNativeSidecar {
                container,
                from,
                to,
                also,
            } => {
                write!(
                    f,
                    "{container}: moved from {from} to {to} with restartPolicy: Always (native sidecar)"
                )?;
                if !also.is_empty() {
                    write!(f, "; {}", also.join(", "))?;
                }
                Ok(())
            }
            Change::RemovedReadinessProbe { container } => write!(
                f,
                "removed the readinessProbe of optional sidecar {container:?} so its failures do not take the pod out of service"
            ),
            Change::Reordered {
                list,
                before,
                after,
            } => write!(
                f,
                "{}: [{}] → [{}]",
                list.field(),
                before.join(", "),
                after.join(", ")
            ),
        }
    }
}

pub(crate) fn spec_mut<'n, 'a>(
    object: &'n mut Node<'a>,
    kind: WorkloadKind,
) -> Result<&'n mut Object<'a>, ModelError> {
    let lists = [ContainerList::Containers, ContainerList::InitContainers].map(|l| l.field());
    object
        .object_at(kind.pod_spec_pointer(), &lists)?
        .ok_or_else(|| ModelError::Malformed(format!("no pod spec at {}", kind.pod_spec_pointer())))
}

pub(crate) fn list_mut<'n, 'a>(
    spec: &'n mut Object<'a>,
    list: ContainerList,
) -> Result<&'n mut Vec<Node<'a>>, ModelError> {
    spec.entry_or(list.field(), || Node::Value(Value::Array(Vec::new())))
        .as_array_mut()?
        .ok_or_else(|| ModelError::Malformed(format!("{} is not a list", list.field())))
}

/// The object of `model.containers[i]` in the document.
pub(crate) fn container_mut<'n, 'a>(
    spec: &'n mut Object<'a>,
    model: &PodModel,
    i: usize,
) -> Result<&'n mut Object<'a>, ModelError> {
    let info = &model.containers[i];
    let missing = || ModelError::Malformed(format!("{} is missing", info.location()));
    list_mut(spec, info.list)?
        .get_mut(info.index)
        .ok_or_else(missing)?
        .as_object_mut()?
        .ok_or_else(missing)
}

/// Removes `field` from `model.containers[i]` in the object. Returns whether it was there.
pub fn remove_container_field(
    object: &mut Node,
    model: &PodModel,
    i: usize,
    field: &str,
) -> Result<bool, ModelError> {
    let spec = spec_mut(object, model.workload.kind)?;
    Ok(container_mut(spec, model, i)?.remove(field))
}
pub(crate) fn empty_object<'a>() -> Node<'a> {
    Node::Value(Value::Object(Map::new()))
}

/// Sets a pod annotation (the template's, for workloads), creating the maps it needs.
/// Returns whether anything changed.
pub fn set_pod_annotation(
    object: &mut Node,
    kind: WorkloadKind,
    key: &str,
    value: &str,
) -> Result<bool, ModelError> {
    let metadata_pointer = kind.pod_metadata_pointer();
    let (parent_pointer, field) = metadata_pointer
        .rsplit_once('/')
        .unwrap_or(("", "metadata"));
    let not_object = |at: &str| ModelError::Malformed(format!("{at} is not an object"));
    let metadata = object
        .pointer_mut(parent_pointer)?
        .ok_or_else(|| ModelError::Malformed(format!("no object at {parent_pointer}")))?
        .as_object_mut()?
        .ok_or_else(|| not_object(parent_pointer))?
        .entry_or(field, empty_object)
        .as_object_mut()?
        .ok_or_else(|| not_object(metadata_pointer))?;
    let annotations = metadata
        .entry_or("annotations", empty_object)
        .as_object_mut()?
        .ok_or_else(|| not_object(&format!("{metadata_pointer}/annotations")))?;
    if annotations.get(key).and_then(Node::as_string).as_deref() == Some(value) {
        return Ok(false);
    }
    annotations.insert(key, Node::Value(Value::String(value.into())));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::edit_value;
    use crate::kube::lifecycle_type::KnownSidecars;
    use serde_json::json;

    fn model(object: &Value) -> PodModel {
        PodModel::of(object, &KnownSidecars::default())
    }

    /// Removes `readinessProbe` from container `i` of `object`: whether it was there.
    fn remove_probe(object: &mut Value, m: &PodModel, i: usize) -> bool {
        edit_value(object, |d| {
            remove_container_field(d, m, i, "readinessProbe")
        })
        .unwrap()
    }

    #[test]
    fn removing_a_field_touches_only_that_field() {
        let mut object = json!({"kind": "Pod", "spec": {"initContainers": [
            {"name": "logs", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["true"]}}, "image": "x"}
        ], "containers": [{"name": "app"}]}});
        let m = model(&object);
        assert!(remove_probe(&mut object, &m, 0));
        assert_eq!(
            object["spec"]["initContainers"][0],
            json!({"name": "logs", "restartPolicy": "Always", "image": "x"})
        );
        assert!(!remove_probe(&mut object, &m, 0));
    }

    #[test]
    fn annotations_are_created_where_missing() {
        let annotate = |object: &mut Value, kind, key, value| {
            edit_value(object, |d| set_pod_annotation(d, kind, key, value)).unwrap()
        };
        let mut pod = json!({"kind": "Pod", "spec": {"containers": []}});
        assert!(annotate(&mut pod, WorkloadKind::Pod, "a/b", "c"));
        assert_eq!(pod["metadata"]["annotations"]["a/b"], "c");
        assert!(!annotate(&mut pod, WorkloadKind::Pod, "a/b", "c"));
        let mut cron = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        assert!(annotate(&mut cron, WorkloadKind::CronJob, "k", "v"));
        assert_eq!(
            cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]["k"],
            "v"
        );
    }
}
