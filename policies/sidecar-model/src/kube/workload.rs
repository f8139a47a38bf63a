//! Where the pod spec lives in each kind of object, and reading it.

use crate::kube::lifecycle_type::ContainerList;
use crate::kube::spec::{Container, PodSpec, null_as_empty};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::kube::error::ModelError;

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

    /// The API server keeps the pod as created: a Pod's containers (but their images), and
    /// a Job's pod template (`field is immutable`; a suspended Job's scheduling fields
    /// aside). An UPDATE can only be judged, never rewritten.
    pub fn pod_is_immutable(self) -> bool {
        matches!(self, WorkloadKind::Pod | WorkloadKind::Job)
    }

    /// Jobs and CronJobs run their pods to completion whatever the pod's restart policy says.
    pub fn runs_to_completion(self) -> bool {
        matches!(self, WorkloadKind::Job | WorkloadKind::CronJob)
    }
}

/// The admission object a pod comes from: a Pod, or a workload with its pod template
/// (its kind, name and namespace, and the pod's metadata and spec). [`PodModel`] is the
/// one pod wrapper: it types this workload's containers.
///
/// [`PodModel`]: crate::PodModel
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// The object's own name (or `generateName`), for messages.
    pub name: Option<String>,
    /// `name` is the `generateName` prefix a workload gives every pod it creates.
    pub name_is_generated: bool,
    pub namespace: Option<String>,
    /// The pod's annotations (the template's, for workloads).
    pub annotations: BTreeMap<String, String>,
    /// The pod's labels (the template's, for workloads).
    pub labels: BTreeMap<String, String>,
    pub spec: PodSpec,
}

impl Workload {
    /// Reads the pod of `object`. `Ok(None)` for kinds that hold no pod (they are accepted
    /// untouched); an error for a supported kind that is malformed.
    pub fn from_object(object: &Value) -> Result<Option<Workload>, ModelError> {
        match ObjectPod::deserialize(object) {
            Ok(read) => Ok(read.0),
            Err(e) => Err(malformed(e, serde_path_to_error::deserialize(object))),
        }
    }

    /// [`Workload::from_object`] straight from the object's JSON text, as it came in the
    /// admission request: one pass that builds only what the model reads, where parsing
    /// the whole object into a `Value` first would cost more than the policy itself.
    pub fn from_json(text: &str) -> Result<Option<Workload>, ModelError> {
        match serde_json::from_str::<ObjectPod>(text) {
            Ok(read) => Ok(read.0),
            Err(e) => Err(malformed(
                e,
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)),
            )),
        }
    }

    /// One of the pod's container lists, to edit (an absent `initContainers` is created).
    pub fn list_mut(&mut self, list: ContainerList) -> &mut Vec<Container> {
        match list {
            ContainerList::InitContainers => self.spec.init_containers.get_or_insert_default(),
            ContainerList::Containers => &mut self.spec.containers,
        }
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
}

/// Why a read failed, with where: the read is done again with the path tracked, so the
/// common case (a valid object) pays nothing for it.
fn malformed(
    first: serde_json::Error,
    again: Result<ObjectPod, serde_path_to_error::Error<serde_json::Error>>,
) -> ModelError {
    let (path, why) = where_and_why(first, again);
    ModelError::Malformed(match path {
        Some(path) => format!("{path}: {why}"),
        None => why,
    })
}

/// Where a failed read went wrong (`None` at the top) and why, from `again`, the same
/// read with the path tracked; `first` when that read did not fail.
pub(crate) fn where_and_why<T>(
    first: serde_json::Error,
    again: Result<T, serde_path_to_error::Error<serde_json::Error>>,
) -> (Option<String>, String) {
    match again {
        Err(e) if e.path().iter().next().is_some() => {
            (Some(e.path().to_string()), crate::json::message(e.inner()))
        }
        Err(e) => (None, crate::json::message(e.inner())),
        Ok(_) => (None, crate::json::message(&first)),
    }
}

/// The pod an object holds, read in one pass over the object. The shapes are chosen by
/// `kind`; an object whose `kind` comes after its `spec` (never from the API server) has
/// its `metadata` and `spec` kept as values until the kind is known.
struct ObjectPod(Option<Workload>);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum ObjectField {
    Kind,
    Metadata,
    Spec,
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    labels: BTreeMap<String, String>,
}

/// `spec.template` of the workloads, and `spec.jobTemplate.spec.template` of a CronJob.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadSpec {
    template: Option<PodTemplate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec {
    job_template: Option<JobTemplate>,
}

#[derive(Deserialize)]
struct JobTemplate {
    spec: Option<WorkloadSpec>,
}

#[derive(Deserialize)]
struct PodTemplate {
    metadata: Option<Metadata>,
    spec: Option<PodSpec>,
}

/// What a kind's `spec` yields: the pod template's metadata (workloads) and the pod spec.
type SpecRead = (Option<Metadata>, Option<PodSpec>);

struct SpecOf(WorkloadKind);

impl<'de> DeserializeSeed<'de> for SpecOf {
    type Value = SpecRead;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SpecRead, D::Error> {
        let template = match self.0 {
            WorkloadKind::Pod => return Ok((None, Option::<PodSpec>::deserialize(d)?)),
            WorkloadKind::CronJob => Option::<CronJobSpec>::deserialize(d)?
                .and_then(|s| s.job_template)
                .and_then(|j| j.spec)
                .and_then(|s| s.template),
            _ => Option::<WorkloadSpec>::deserialize(d)?.and_then(|s| s.template),
        };
        Ok(template.map_or((None, None), |t| (t.metadata, t.spec)))
    }
}

/// The visitor methods for the JSON values a visitor does not read (scalars, `null`,
/// lists, consumed and skipped): each answers `$none`.
macro_rules! any_other_value_is {
    ($none:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            IgnoredAny.visit_seq(seq).map(|_| $none)
        }
    };
}

/// An object's `kind`: one of ours, or anything else (including a kind that is not a
/// string, which no pod has).
struct KindName(Option<WorkloadKind>);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = KindName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a kind")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KindName, E> {
                Ok(KindName(WorkloadKind::from_kind(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KindName, A::Error> {
                IgnoredAny.visit_map(map).map(|_| KindName(None))
            }
            any_other_value_is!(KindName(None));
        }
        d.deserialize_any(KindVisitor)
    }
}

impl<'de> Deserialize<'de> for ObjectPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor)
    }
}

struct ObjectVisitor;

/// Anything but a JSON object holds no pod.
impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = ObjectPod;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<ObjectPod, E> {
        Ok(ObjectPod(None))
    }
    any_other_value_is!(ObjectPod(None));

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectPod, A::Error> {
        // `None` until the kind is read; `Some(None)` for a kind that holds no pod.
        let mut kind: Option<Option<WorkloadKind>> = None;
        let mut metadata = None;
        let mut spec = None;
        let (mut early_metadata, mut early_spec) = (None::<Value>, None::<Value>);
        while let Some(field) = map.next_key::<ObjectField>()? {
            match (field, kind) {
                (ObjectField::Kind, _) => kind = Some(map.next_value::<KindName>()?.0),
                (ObjectField::Metadata, Some(Some(_))) => metadata = map.next_value()?,
                (ObjectField::Spec, Some(Some(k))) => spec = Some(map.next_value_seed(SpecOf(k))?),
                (ObjectField::Metadata, None) => early_metadata = Some(map.next_value()?),
                (ObjectField::Spec, None) => early_spec = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(Some(kind)) = kind else {
            return Ok(ObjectPod(None));
        };
        let late = |e: serde_json::Error| de::Error::custom(e);
        if let Some(value) = early_metadata {
            metadata = Option::<Metadata>::deserialize(&value).map_err(late)?;
        }
        if let Some(value) = early_spec {
            spec = Some(SpecOf(kind).deserialize(&value).map_err(late)?);
        }
        let (template_metadata, pod_spec) = spec.unwrap_or_default();
        let Some(pod_spec) = pod_spec else {
            return Err(de::Error::custom(format_args!(
                "{} has no pod spec at {}",
                kind.as_str(),
                kind.pod_spec_pointer()
            )));
        };
        let metadata = metadata.unwrap_or_default();
        let pod_metadata = match kind {
            WorkloadKind::Pod => None,
            _ => Some(template_metadata.unwrap_or_default()),
        };
        let (annotations, labels) = match pod_metadata {
            Some(m) => (m.annotations, m.labels),
            None => (metadata.annotations, metadata.labels),
        };
        Ok(ObjectPod(Some(Workload {
            kind,
            name_is_generated: metadata.name.is_none() && metadata.generate_name.is_some(),
            name: metadata.name.or(metadata.generate_name),
            namespace: metadata.namespace,
            annotations,
            labels,
            spec: pod_spec,
        })))
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
            let view = Workload::from_object(object).unwrap().unwrap();
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
            Workload::from_object(&json!({"kind": "ConfigMap", "data": {}}))
                .unwrap()
                .is_none()
        );
        assert!(
            Workload::from_object(&json!({"spec": {}}))
                .unwrap()
                .is_none()
        );
        assert!(Workload::from_object(&Value::Null).unwrap().is_none());
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
            assert!(Workload::from_object(&case).is_err(), "{case}");
        }
    }

    /// The text reader and the value reader agree, whatever the key order.
    fn read_both(object: &Value) -> Result<Option<Workload>, ModelError> {
        let from_text = Workload::from_json(&object.to_string());
        let from_value = Workload::from_object(object);
        assert_eq!(
            format!("{from_text:?}"),
            format!("{from_value:?}"),
            "{object}"
        );
        from_value
    }

    #[test]
    fn text_and_value_read_the_same_pod() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}, "annotations": {"a": "b"}}, "spec": pod_spec(), "status": {"phase": "Pending"}}),
            json!({"kind": "Pod", "metadata": {"generateName": "p-", "annotations": null}, "spec": pod_spec()}),
            json!({"kind": "CronJob", "metadata": {"name": "c", "annotations": {"top": "level"}}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"l": "v"}}, "spec": pod_spec()}}}}}),
            json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2, "template": {"spec": pod_spec()}}}),
            json!({"kind": "ConfigMap", "metadata": {"annotations": {"a": 1}}, "spec": {"containers": 7}}),
            json!({"kind": 7, "spec": {"containers": 7}}),
            json!([{"kind": "Pod"}]),
            json!("Pod"),
        ];
        for object in &objects {
            read_both(object).unwrap();
        }
        let deployment = read_both(&objects[3]).unwrap().unwrap();
        assert_eq!(deployment.name.as_deref(), Some("d"));
        let cron = read_both(&objects[2]).unwrap().unwrap();
        assert_eq!(
            (cron.labels["l"].as_str(), cron.annotations.len()),
            ("v", 0)
        );
        assert!(read_both(&objects[4]).unwrap().is_none());
        assert!(read_both(&objects[5]).unwrap().is_none());
    }

    #[test]
    fn a_kind_after_the_spec_is_still_read() {
        let text = r#"{"spec": {"template": {"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": [{"name": "app"}]}}}, "metadata": {"name": "late"}, "kind": "Job"}"#;
        let view = Workload::from_json(text).unwrap().unwrap();
        assert_eq!(
            (view.kind, view.name.as_deref()),
            (WorkloadKind::Job, Some("late"))
        );
        assert_eq!(view.annotations["a"], "b");
        assert_eq!(view.spec.containers[0].name, "app");
        let other = r#"{"spec": {"containers": "not a list"}, "kind": "Service"}"#;
        assert!(Workload::from_json(other).unwrap().is_none());
    }

    #[test]
    fn errors_say_where_the_object_is_wrong() {
        let cases = [
            (
                json!({"kind": "Pod", "spec": {"containers": [{"name": "app"}, {"name": 1}]}}),
                "spec.containers[1].name: invalid type: integer `1`",
            ),
            (
                json!({"kind": "Deployment", "spec": {"template": {"metadata": {"labels": {"a": true}}, "spec": pod_spec()}}}),
                "spec.template.metadata.labels.a: invalid type: boolean",
            ),
            (
                json!({"kind": "Job", "spec": {"template": {}}}),
                "Job has no pod spec at /spec/template/spec",
            ),
        ];
        for (object, expected) in cases {
            for error in [
                Workload::from_object(&object).unwrap_err(),
                Workload::from_json(&object.to_string()).unwrap_err(),
            ] {
                assert!(error.to_string().contains(expected), "{error} ∌ {expected}");
            }
        }
        let truncated =
            Workload::from_json(r#"{"kind": "Pod", "spec": {"containers": ["#).unwrap_err();
        assert!(truncated.to_string().contains("EOF"), "{truncated}");
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
            let view = Workload::from_object(&json!({"kind": "Pod", "spec": spec}))
                .unwrap()
                .unwrap();
            assert_eq!(view.runs_to_completion(), expected, "{policy:?}");
        }
    }
}
