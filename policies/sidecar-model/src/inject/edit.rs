//! The edit: the sets' containers, volumes, pull secrets and annotations written into
//! the request's own JSON, in the place the sidecar vocabulary gives them.

use super::canary::{bucket, canary_key};
use super::labels::selector_matches;
use super::set::{SetContainer, SidecarSet};
use super::survey::{SetOutcome, survey};
use crate::json::{Node, Object};
use crate::kube;
use crate::kube::ModelError;
use crate::kube::PodModel;
use crate::kube::keys;
use crate::kube::{ContainerList, LifecycleType};
use crate::ordering::EdgeRule;
use crate::ordering::StartGraph;
use crate::ordering::apply_start_order;
use k8s_openapi::api::core::v1::{EnvVar, VolumeMount};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Injects every set that selects the pod and is not there yet, into `object` (the
/// model's object, legacy sidecars already normalised; `known` is what typed it), for the
/// admission request `request_uid`. Returns the outcomes; the object is changed only for
/// `Injected` ones.
pub fn inject(
    object: &mut Node,
    model: PodModel,
    sets: &[SidecarSet],
    namespace: &str,
    request_uid: &str,
    known: &crate::KnownSidecars,
) -> Result<Vec<SetOutcome>, ModelError> {
    let outcomes = survey(&model, sets, namespace)?;
    inject_surveyed(object, model, sets, namespace, request_uid, outcomes, known)
}

/// [`inject`] into a pod given as a JSON value, for the callers that ask the injector what
/// it would write (the exporter's probes, a rollout's plan): the injected pod and the
/// outcomes. `Err` names an object that is not a pod.
pub(super) fn inject_value(
    object: &Value,
    sets: &[SidecarSet],
    namespace: &str,
    request_uid: &str,
    known: &crate::KnownSidecars,
) -> Result<(Value, Vec<SetOutcome>), String> {
    let text = object.to_string();
    let model = PodModel::from_json(&text, known)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "not a Pod (kind {})",
                object
                    .get("kind")
                    .map_or("missing".to_string(), Value::to_string)
            )
        })?;
    let mut doc = Node::parse(&text).map_err(|e| e.to_string())?;
    let outcomes =
        inject(&mut doc, model, sets, namespace, request_uid, known).map_err(|e| e.to_string())?;
    let injected = serde_json::to_value(&doc).map_err(|e| e.to_string())?;
    Ok((injected, outcomes))
}

/// The container of that name in a pod given as JSON: its list, index and spec.
pub(super) fn container_named<'p>(
    pod: &'p Value,
    name: &str,
) -> Option<(&'static str, usize, &'p Value)> {
    ["initContainers", "containers"]
        .into_iter()
        .find_map(|list| {
            let items = pod.pointer(&format!("/spec/{list}"))?.as_array()?;
            let i = items.iter().position(|c| c["name"] == name)?;
            Some((list, i, &items[i]))
        })
}

/// [`inject`] with the survey the caller already made of the same pod (normalising
/// legacy sidecars first changes nothing a survey reads: labels, annotations, names).
pub fn inject_surveyed(
    object: &mut Node,
    model: PodModel,
    sets: &[SidecarSet],
    namespace: &str,
    request_uid: &str,
    mut outcomes: Vec<SetOutcome>,
    known: &crate::KnownSidecars,
) -> Result<Vec<SetOutcome>, ModelError> {
    let kind = model.workload.kind;
    let context = Context {
        model: &model,
        namespace,
        request_uid,
        app_mounts: model
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.lifecycle_type == LifecycleType::Standard)
            .flat_map(|(i, _)| model.container(i).volume_mounts())
            .collect(),
    };
    let mut injected_any = false;
    let mut rules: Vec<EdgeRule> = Vec::new();
    // What the object gains, for the model of the injected pod (no re-read of the object).
    let mut added: Vec<(ContainerList, crate::kube::Container)> = Vec::new();
    let mut added_annotations: Vec<(String, String)> = Vec::new();
    for outcome in &mut outcomes {
        let SetOutcome::Injected {
            set: set_name,
            revision,
            canary,
            ..
        } = outcome
        else {
            continue;
        };
        let Some(set) = sets.iter().find(|s| s.name == *set_name) else {
            continue;
        };
        set.parsed()
            .map_err(|e| ModelError::Malformed(format!("sidecarSets {:?}: {e}", set.name)))?;
        let spec = kube::spec_mut(object, kind)?;
        for c in set.all_containers() {
            let (target, text) = context.container(set, c, canary)?;
            let lean: crate::kube::Container =
                serde_json::from_str(text.get()).map_err(|e| malformed_container(set, c, &e))?;
            added.push((target, lean));
            kube::list_mut(spec, target)?.push(Node::Written(text));
        }
        add_pod_parts(spec, set)?;
        for (k, v) in &set.pod_annotations {
            if !model.workload.annotations.contains_key(k) {
                kube::set_pod_annotation(object, kind, k, v)?;
                added_annotations.push((k.clone(), v.clone()));
            }
        }
        let key = format!("{}{}", keys::INJECTED_PREFIX, set.name);
        kube::set_pod_annotation(object, kind, &key, revision)?;
        added_annotations.push((key, revision.clone()));
        rules.extend(set.after.iter().cloned());
        injected_any = true;
    }
    if injected_any {
        // The injected containers take their place in the start graph, as the ordering
        // policy would place them.
        let injected = model.with_added(known, added, added_annotations);
        let graph = StartGraph::build(&injected, rules.iter().flat_map(|r| r.edges(&injected)));
        if let Ok(order) = graph.order() {
            apply_start_order(object, &injected, &order)?;
        }
    }
    Ok(outcomes)
}

/// What every injected container of one request is written against.
struct Context<'m> {
    model: &'m PodModel,
    namespace: &'m str,
    request_uid: &'m str,
    /// The app containers' mounts, for sets that share volumes.
    app_mounts: Vec<&'m VolumeMount>,
}

impl<'m> Context<'m> {
    /// One injected container as JSON text, and the list it goes to: the set's spec as it
    /// is, and the fields injection sets (canary image, transferred variables, shared
    /// mounts, `restartPolicy: Always` for a sidecar), written straight to text without a
    /// copy of the set's JSON tree. A canary that chooses the container is noted in `canary`.
    fn container<'s>(
        &'s self,
        set: &'s SidecarSet,
        c: &'s SetContainer,
        canary: &mut Vec<String>,
    ) -> Result<(ContainerList, Box<RawValue>), ModelError>
    where
        'm: 's,
    {
        let mut fields: Vec<(&str, Field)> = c
            .spec
            .iter()
            .map(|(k, v)| (k.as_str(), Field::Kept(v)))
            .collect();
        if let Some(k) = &c.canary
            && self.canary_chooses(set, c, k)
        {
            set_field(&mut fields, "image", Field::Text(&k.image));
            canary.push(c.name().to_string());
        }
        if let Some(env) = list(c, "env") {
            let added = self.transferred_env(set, env);
            if !added.is_empty() {
                set_field(&mut fields, "env", Field::Env(env, added));
            }
        }
        if set.share_volumes
            && let Some(mounts) = list(c, "volumeMounts")
        {
            let added = self.shared_mounts(mounts);
            set_field(&mut fields, "volumeMounts", Field::Mounts(mounts, added));
        }
        let target = match c.lifecycle() {
            LifecycleType::Sidecar => {
                set_field(&mut fields, "restartPolicy", Field::Text("Always"));
                ContainerList::InitContainers
            }
            LifecycleType::Init => ContainerList::InitContainers,
            _ => ContainerList::Containers,
        };
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let text = serde_json::value::to_raw_value(&Fields(&fields))
            .map_err(|e| malformed_container(set, c, &e))?;
        Ok((target, text))
    }

    /// Whether the set's canary gives this pod the canary image: by a stable hash of the
    /// pod under `percent`, or by the pod's labels.
    fn canary_chooses(&self, set: &SidecarSet, c: &SetContainer, k: &super::set::Canary) -> bool {
        match (&k.percent, &k.selector) {
            (Some(p), _) => {
                let key = canary_key(
                    self.model,
                    self.namespace,
                    self.request_uid,
                    &set.name,
                    c.name(),
                );
                bucket(&key) < *p
            }
            (None, Some(s)) => selector_matches(s, &self.model.workload.labels),
            (None, None) => false,
        }
    }

    /// The app's variables the set transfers, those the container does not set already.
    fn transferred_env(&self, set: &SidecarSet, env: &[Value]) -> Vec<&'m EnvVar> {
        let mut added: Vec<&EnvVar> = Vec::new();
        for t in &set.transfer_env {
            let Some(source) = self.model.index_of(&t.source_container) else {
                continue;
            };
            let Some(var) = self
                .model
                .container(source)
                .env()
                .iter()
                .find(|e| e.name == t.env_name)
            else {
                continue;
            };
            if !named(env, "name", &t.env_name) && !added.iter().any(|a| a.name == t.env_name) {
                added.push(var);
            }
        }
        added
    }

    /// The app's mounts the container shares: each name and each path is taken by the
    /// first app mount that has it, and none the container has already. Judged against
    /// every earlier app mount, shared or not, so that a CEL filter can say the same
    /// (`export`): it has no fold to carry what was shared so far.
    fn shared_mounts(&self, mounts: &[Value]) -> Vec<&'m VolumeMount> {
        let first = |i: usize| {
            let m = self.app_mounts[i];
            !self.app_mounts[..i]
                .iter()
                .any(|e| e.name == m.name || e.mount_path == m.mount_path)
        };
        (0..self.app_mounts.len())
            .filter(|&i| first(i))
            .map(|i| self.app_mounts[i])
            .filter(|m| {
                !named(mounts, "name", &m.name) && !named(mounts, "mountPath", &m.mount_path)
            })
            .collect()
    }
}

/// A list the container's spec already has (or none yet); a field that is not a list is
/// left as it is.
fn list<'s>(c: &'s SetContainer, key: &str) -> Option<&'s [Value]> {
    match c.spec.get(key) {
        None => Some(&[][..]),
        Some(Value::Array(items)) => Some(items.as_slice()),
        Some(_) => None,
    }
}

/// Whether an item of `items` has `field` equal to `value`.
fn named(items: &[Value], field: &str, value: &str) -> bool {
    items
        .iter()
        .any(|x| x.get(field).and_then(Value::as_str) == Some(value))
}

fn malformed_container(set: &SidecarSet, c: &SetContainer, e: &serde_json::Error) -> ModelError {
    ModelError::Malformed(format!(
        "sidecarSets {:?}: container {:?}: {}",
        set.name,
        c.name(),
        crate::json::message(e)
    ))
}

/// The set's volumes and image pull secrets, each added unless the pod has one by that name.
fn add_pod_parts(spec: &mut Object, set: &SidecarSet) -> Result<(), ModelError> {
    for v in set.volumes() {
        let name = v.get("name").cloned();
        let volumes = list_of(spec, "volumes")?;
        if !volumes.iter().any(|x| x.get("name") == name.as_ref()) {
            volumes.push(v.clone());
        }
    }
    for secret in &set.image_pull_secrets {
        let secrets = list_of(spec, "imagePullSecrets")?;
        if !secrets
            .iter()
            .any(|x| x.get("name").and_then(Value::as_str) == Some(secret))
        {
            secrets.push(serde_json::json!({"name": secret}));
        }
    }
    Ok(())
}

/// A field of an injected container.
enum Field<'s> {
    Kept(&'s Value),
    Text(&'s str),
    /// The spec's variables, then those transferred from the app.
    Env(&'s [Value], Vec<&'s EnvVar>),
    /// The spec's mounts, then the app's it shares.
    Mounts(&'s [Value], Vec<&'s VolumeMount>),
}

/// Sets `key` in place, or adds it.
fn set_field<'s>(fields: &mut Vec<(&'s str, Field<'s>)>, key: &'s str, field: Field<'s>) {
    match fields.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = field,
        None => fields.push((key, field)),
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        fn both<S: serde::Serializer, T: Serialize>(
            serializer: S,
            kept: &[Value],
            added: &[T],
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(kept.len() + added.len()))?;
            for item in kept {
                seq.serialize_element(item)?;
            }
            for item in added {
                seq.serialize_element(item)?;
            }
            seq.end()
        }
        match self {
            Field::Kept(value) => value.serialize(serializer),
            Field::Text(text) => serializer.serialize_str(text),
            Field::Env(kept, added) => both(serializer, kept, added),
            Field::Mounts(kept, added) => both(serializer, kept, added),
        }
    }
}

/// An injected container's fields, written as one object.
struct Fields<'f, 's>(&'f [(&'s str, Field<'s>)]);

impl Serialize for Fields<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, field)| (key, field)))
    }
}

/// A small list of the pod spec (volumes, pull secrets), edited as a `Value`.
fn list_of<'n>(spec: &'n mut Object, field: &str) -> Result<&'n mut Vec<Value>, ModelError> {
    spec.entry_or(field, || Node::Value(Value::Array(Vec::new())))
        .value_mut()?
        .as_array_mut()
        .ok_or_else(|| ModelError::Malformed(format!("{field} is not a list")))
}
