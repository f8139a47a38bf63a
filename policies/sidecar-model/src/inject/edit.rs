//! The edit: the sets' containers, volumes, pull secrets and annotations written into
//! the request's own JSON, in the place the sidecar vocabulary gives them.

use super::canary::{bucket, canary_key};
use super::labels::selector_matches;
use super::set::SidecarSet;
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
    let app_mounts: Vec<&VolumeMount> = model
        .containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.lifecycle_type == LifecycleType::Standard)
        .flat_map(|(i, _)| model.container(i).volume_mounts())
        .collect();
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
            // The set's spec as it is, and the fields injection sets: written straight
            // to text, without a copy of the set's JSON tree.
            let mut fields: Vec<(&str, Field)> = c
                .spec
                .iter()
                .map(|(k, v)| (k.as_str(), Field::Kept(v)))
                .collect();
            if let Some(k) = &c.canary {
                let chosen = match (&k.percent, &k.selector) {
                    (Some(p), _) => {
                        let key = canary_key(&model, namespace, request_uid, &set.name, c.name());
                        bucket(&key) < *p
                    }
                    (None, Some(s)) => selector_matches(s, &model.workload.labels),
                    (None, None) => false,
                };
                if chosen {
                    set_field(&mut fields, "image", Field::Text(&k.image));
                    canary.push(c.name().to_string());
                }
            }
            // A list the spec already has (or none yet); a field that is not a list is
            // left as it is.
            let list = |key: &str| match c.spec.get(key) {
                None => Some(&[][..]),
                Some(Value::Array(items)) => Some(items.as_slice()),
                Some(_) => None,
            };
            let named = |items: &[Value], field: &str, value: &str| {
                items
                    .iter()
                    .any(|x| x.get(field).and_then(Value::as_str) == Some(value))
            };
            if let Some(env) = list("env") {
                let mut added: Vec<&EnvVar> = Vec::new();
                for t in &set.transfer_env {
                    let Some(source) = model.index_of(&t.source_container) else {
                        continue;
                    };
                    let Some(var) = model
                        .container(source)
                        .env()
                        .iter()
                        .find(|e| e.name == t.env_name)
                    else {
                        continue;
                    };
                    if !named(env, "name", &t.env_name)
                        && !added.iter().any(|a| a.name == t.env_name)
                    {
                        added.push(var);
                    }
                }
                if !added.is_empty() {
                    set_field(&mut fields, "env", Field::Env(env, added));
                }
            }
            if set.share_volumes
                && let Some(mounts) = list("volumeMounts")
            {
                let mut added: Vec<&VolumeMount> = Vec::new();
                for m in &app_mounts {
                    let clash = named(mounts, "name", &m.name)
                        || named(mounts, "mountPath", &m.mount_path)
                        || added
                            .iter()
                            .any(|a| a.name == m.name || a.mount_path == m.mount_path);
                    if !clash {
                        added.push(m);
                    }
                }
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
            let malformed = |e: serde_json::Error| {
                ModelError::Malformed(format!(
                    "sidecarSets {:?}: container {:?}: {}",
                    set.name,
                    c.name(),
                    crate::json::message(&e)
                ))
            };
            let text = serde_json::value::to_raw_value(&Fields(&fields)).map_err(malformed)?;
            let lean: crate::kube::Container =
                serde_json::from_str(text.get()).map_err(malformed)?;
            added.push((target, lean));
            kube::list_mut(spec, target)?.push(Node::Written(text));
        }
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
