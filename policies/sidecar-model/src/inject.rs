//! SidecarSet-style injection: sets of sidecars declared once and injected into every
//! matching pod at creation, in the place and order the sidecar vocabulary gives them.

use k8s_openapi::api::core::v1::{Container, EnvVar, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use crate::doc::{Node, Object};
use crate::error::ModelError;
use crate::graph::StartGraph;
use crate::keys;
use crate::lazy::Lazy;
use crate::lifecycle::{ContainerList, LifecycleType};
use crate::ordering::EdgeRule;
use crate::pod::PodModel;
use crate::resources::ContainerResources;
use crate::surgery;

/// Injects a new image into a share of pods, or into pods a selector picks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A container of a set: a full Kubernetes container spec, plus where it goes and an
/// optional canary image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetContainer {
    /// `Sidecar` (native sidecar, the default), `Init` or `PostSidecar`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    #[serde(flatten)]
    pub spec: Map<String, Value>,
}

/// By hand rather than with `#[serde(flatten)]`: flatten buffers the whole container
/// through serde's generic `Content` first, and the injector parses its settings, every
/// container spec of every set, on each request. The spec is read once, as JSON, and the
/// two fields of ours are taken out of it.
impl<'de> Deserialize<'de> for SetContainer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut spec = Map::deserialize(deserializer)?;
        let mut take = |key: &str| spec.remove(key).filter(|v| !v.is_null());
        let lifecycle = take("type")
            .map(LifecycleType::deserialize)
            .transpose()
            .map_err(|e| D::Error::custom(format!("type: {e}")))?;
        let canary = take("canary")
            .map(Canary::deserialize)
            .transpose()
            .map_err(|e| D::Error::custom(format!("canary: {e}")))?;
        Ok(SetContainer {
            lifecycle,
            canary,
            spec,
        })
    }
}

impl SetContainer {
    pub fn name(&self) -> &str {
        self.spec
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn image(&self) -> &str {
        self.spec
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn lifecycle(&self) -> LifecycleType {
        self.lifecycle.unwrap_or(LifecycleType::Sidecar)
    }

    fn validate(&self) -> Result<(), String> {
        // k8s-openapi skips the fields it does not know; serde_ignored names them, at any
        // depth, so a typo (`volumeMount`, `resources.limts`) is refused.
        let mut unknown = Vec::new();
        let container: Container =
            serde_ignored::deserialize(&self.spec, |path| unknown.push(field_path(&path)))
                .map_err(|e| format!("not a container: {e}"))?;
        if container.name.is_empty() {
            return Err("a container needs a name".into());
        }
        if container.image.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("container {:?} needs an image", container.name));
        }
        // A top-level null is as good as absent, as the API server reads it.
        if let Some(unknown) = unknown
            .iter()
            .find(|path| self.spec.get(path.as_str()).is_none_or(|v| !v.is_null()))
        {
            return Err(format!(
                "container {:?}: unknown field {unknown:?}",
                container.name
            ));
        }
        ContainerResources::read(
            || format!("container {:?}", container.name),
            container.resources.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        if self.lifecycle() == LifecycleType::Standard {
            return Err(format!(
                "container {:?}: a set injects Sidecar, Init or PostSidecar containers, not Standard",
                container.name
            ));
        }
        if let Some(canary) = &self.canary {
            if canary.image.trim().is_empty() {
                return Err(format!(
                    "container {:?}: canary needs an image",
                    container.name
                ));
            }
            match (&canary.percent, &canary.selector) {
                (Some(p), None) if (1..=100).contains(p) => {}
                (Some(p), None) => {
                    return Err(format!(
                        "container {:?}: canary percent {p} is not from 1 to 100",
                        container.name
                    ));
                }
                (None, Some(s)) => validate_selector(s)
                    .map_err(|e| format!("container {:?}: canary selector: {e}", container.name))?,
                _ => {
                    return Err(format!(
                        "container {:?}: canary needs either percent or selector",
                        container.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `resources.limts`, `ports[0].protocl`: where serde_ignored found a field, as the
/// spec spells it (its own rendering marks every `Option` on the way with `?`).
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// `transferEnv`: copy an env var from an app container into the injected containers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferEnv {
    pub source_container: String,
    pub env_name: String,
}

/// One sidecar set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSet {
    pub name: String,
    /// On pod labels; empty matches every pod.
    #[serde(default)]
    pub selector: LabelSelector,
    /// Namespace names or globs; empty means every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Container specs and volumes are parsed only for sets that select the pod.
    #[serde(default)]
    pub init_containers: Lazy<Vec<SetContainer>>,
    #[serde(default)]
    pub containers: Lazy<Vec<SetContainer>>,
    /// Merged into the pod's volumes; a pod volume of the same name wins.
    #[serde(default)]
    pub volumes: Lazy<Vec<Value>>,
    /// Mount the app containers' volume mounts into the injected containers.
    #[serde(default)]
    pub share_volumes: bool,
    #[serde(default)]
    pub transfer_env: Vec<TransferEnv>,
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Start dependencies for the injected containers, in the ordering vocabulary.
    #[serde(default)]
    pub after: Vec<EdgeRule>,
}

fn validate_selector(s: &LabelSelector) -> Result<(), String> {
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

/// Whether `labels` match `s` (an empty selector matches everything).
pub fn selector_matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = s.match_expressions.iter().flatten().all(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        let value = labels.get(&r.key);
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Two selectors that no set of labels can satisfy at once, as far as their
/// `matchLabels` and `DoesNotExist` expressions show.
fn disjoint(a: &LabelSelector, b: &LabelSelector) -> bool {
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

fn namespaces_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter()
        .any(|x| b.iter().any(|y| crate::glob::overlap(x, y)))
}

impl SidecarSet {
    /// Parses the set's lazy parts; the first that does not parse is the error.
    pub fn parsed(&self) -> Result<(), String> {
        self.init_containers
            .get()
            .map_err(|e| format!("initContainers: {e}"))?;
        self.containers
            .get()
            .map_err(|e| format!("containers: {e}"))?;
        self.volumes.get().map_err(|e| format!("volumes: {e}"))?;
        Ok(())
    }

    /// Init containers, then containers (none from a part that does not parse: `parsed`
    /// reports it).
    pub fn all_containers(&self) -> impl Iterator<Item = &SetContainer> {
        fn list(l: &Lazy<Vec<SetContainer>>) -> std::slice::Iter<'_, SetContainer> {
            l.get().map(Vec::as_slice).unwrap_or_default().iter()
        }
        list(&self.init_containers).chain(list(&self.containers))
    }

    pub fn volumes(&self) -> &[Value] {
        self.volumes.get().map(Vec::as_slice).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), String> {
        let at = |e: String| format!("sidecarSets {:?}: {e}", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "sidecar set name {:?} must be a DNS label (letters, digits, '-')",
                self.name
            ));
        }
        validate_selector(&self.selector).map_err(|e| at(format!("selector: {e}")))?;
        self.parsed().map_err(at)?;
        if self.all_containers().next().is_none() {
            return Err(at("injects no container".into()));
        }
        let mut names = BTreeSet::new();
        for c in self.all_containers() {
            c.validate().map_err(at)?;
            if !names.insert(c.name()) {
                return Err(at(format!("container {:?} appears twice", c.name())));
            }
        }
        let mut volumes = BTreeSet::new();
        for v in self.volumes() {
            let volume = Volume::deserialize(v).map_err(|e| at(format!("volume: {e}")))?;
            if !volumes.insert(volume.name.clone()) {
                return Err(at(format!("volume {:?} appears twice", volume.name)));
            }
        }
        for rule in &self.after {
            rule.validate().map_err(|e| at(format!("after: {e}")))?;
        }
        Ok(())
    }

    /// The set's revision: a hash of its spec, in a form that does not depend on key order.
    pub fn revision(&self) -> String {
        let text = crate::canonical::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&text)[..5])
    }

    fn selects(&self, model: &PodModel, namespace: &str) -> bool {
        let ns_ok = self.namespaces.is_empty()
            || self
                .namespaces
                .iter()
                .any(|p| crate::glob::matches(p, namespace));
        ns_ok && selector_matches(&self.selector, &model.pod.labels)
    }
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

/// What happened to one set on one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum SetOutcome {
    Injected {
        set: String,
        revision: String,
        containers: Vec<String>,
        canary: Vec<String>,
    },
    /// The pod opted out with an annotation.
    OptedOut { set: String },
    /// The pod has the set's containers at the current revision, or containers of those
    /// names that the set did not inject: left alone.
    Present { set: String },
    /// The pod has the set's containers from an older revision.
    Outdated {
        set: String,
        recorded: String,
        current: String,
        /// (container, image in the pod, image of the set now)
        images: Vec<(String, String, String)>,
    },
}

/// A share in [0, 100) for `key`: stable, and spread evenly over keys.
pub fn bucket(key: &str) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 100
}

/// The identity a canary share is decided by: the namespace and the pod's name or, for a
/// pod a workload creates (it has only `generateName` at admission, the same for every pod
/// of a ReplicaSet), the uid of the request that creates it, so the share holds over the
/// pods of one ReplicaSet. A reinvocation never decides again: the pod then has the set's
/// containers, and a set that is present is left alone.
fn canary_key(
    model: &PodModel,
    namespace: &str,
    request_uid: &str,
    set: &str,
    container: &str,
) -> String {
    match model.pod.name.as_deref() {
        Some(name) if !model.pod.name_is_generated => {
            format!("{namespace}/{name}/{set}/{container}")
        }
        _ => format!("{namespace}/request {request_uid}/{set}/{container}"),
    }
}

fn annotation_is_false(model: &PodModel, key: &str) -> bool {
    model
        .pod
        .annotations
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// What the sets would do to the pod (no edits): for reports and audits.
pub fn survey(model: &PodModel, sets: &[SidecarSet], namespace: &str) -> Vec<SetOutcome> {
    let mut out = Vec::new();
    for set in sets.iter().filter(|s| s.selects(model, namespace)) {
        let name = set.name.clone();
        if annotation_is_false(model, keys::INJECT)
            || annotation_is_false(model, &format!("{}{}", keys::INJECT_PREFIX, set.name))
        {
            out.push(SetOutcome::OptedOut { set: name });
            continue;
        }
        let present: Vec<&SetContainer> = set
            .all_containers()
            .filter(|c| model.index_of(c.name()).is_some())
            .collect();
        if present.is_empty() {
            out.push(SetOutcome::Injected {
                set: name,
                revision: set.revision(),
                containers: set.all_containers().map(|c| c.name().to_string()).collect(),
                canary: Vec::new(),
            });
            continue;
        }
        let recorded = model
            .pod
            .annotations
            .get(&format!("{}{}", keys::INJECTED_PREFIX, set.name));
        // Hashing the set costs more than the rest of a survey: only for a recorded revision.
        match recorded.map(|r| (r, set.revision())) {
            Some((recorded, current)) if *recorded != current => {
                let images = present
                    .iter()
                    .filter_map(|c| {
                        let i = model.index_of(c.name())?;
                        Some((
                            c.name().to_string(),
                            model.containers[i].image.clone().unwrap_or_default(),
                            c.image().to_string(),
                        ))
                    })
                    .collect();
                out.push(SetOutcome::Outdated {
                    set: name,
                    recorded: recorded.clone(),
                    current,
                    images,
                });
            }
            _ => out.push(SetOutcome::Present { set: name }),
        }
    }
    out
}

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
    let outcomes = survey(&model, sets, namespace);
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
    let kind = model.pod.kind;
    let app_mounts: Vec<&VolumeMount> = model
        .containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.lifecycle == LifecycleType::Standard)
        .flat_map(|(i, _)| model.container(i).volume_mounts())
        .collect();
    let mut injected_any = false;
    let mut rules: Vec<EdgeRule> = Vec::new();
    // What the object gains, for the model of the injected pod (no re-read of the object).
    let mut added: Vec<(ContainerList, crate::spec::Container)> = Vec::new();
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
        let spec = surgery::spec_mut(object, kind)?;
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
                    (None, Some(s)) => selector_matches(s, &model.pod.labels),
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
                    crate::error::json_message(&e)
                ))
            };
            let text = serde_json::value::to_raw_value(&Fields(&fields)).map_err(malformed)?;
            let lean: crate::spec::Container =
                serde_json::from_str(text.get()).map_err(malformed)?;
            added.push((target, lean));
            surgery::list_mut(spec, target)?.push(Node::Written(text));
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
            if !model.pod.annotations.contains_key(k) {
                surgery::set_pod_annotation(object, kind, k, v)?;
                added_annotations.push((k.clone(), v.clone()));
            }
        }
        let key = format!("{}{}", keys::INJECTED_PREFIX, set.name);
        surgery::set_pod_annotation(object, kind, &key, revision)?;
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
            surgery::apply_start_order(object, &injected, &order)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::lifecycle::KnownSidecars;
    use serde_json::json;

    fn set(v: Value) -> SidecarSet {
        serde_json::from_value(v).unwrap()
    }

    fn mesh() -> SidecarSet {
        set(json!({
            "name": "mesh",
            "selector": {"matchLabels": {"mesh": "on"}},
            "namespaces": ["shop", "pay-*"],
            "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
                            "startupProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}}],
            "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.1", "type": "Init"}],
            "volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}],
            "imagePullSecrets": ["mesh-pull"],
            "podAnnotations": {"prometheus.io/port": "15020"},
            "transferEnv": [{"sourceContainer": "app", "envName": "TZ"}],
            "shareVolumes": true,
            "after": [{"before": {"name": "istio-proxy"}, "after": {"type": "Init"}}]
        }))
    }

    /// A set with every field, odd strings and numbers: what a revision hashes.
    fn rich() -> SidecarSet {
        set(json!({
            "name": "rich",
            "selector": {"matchLabels": {"b": "2", "a": "1"},
                         "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x", "é\u{1F600}"]}]},
            "containers": [{"name": "proxy", "image": "p:1", "type": "Sidecar",
                            "canary": {"image": "p:2", "percent": 10},
                            "args": ["quote \" back \\ tab \t nl \n ctl \u{1} del \u{7f}"],
                            "ports": [{"containerPort": 15090, "name": "metrics"}],
                            "securityContext": {"runAsUser": 1337, "runAsNonRoot": true},
                            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
                            "env": [{"name": "Z", "value": "z"}, {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
            "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi", "medium": "Memory"}}],
            "podAnnotations": {"z": "last", "a/b": "first"},
            "after": [{"name": "r", "before": {"name": "proxy"}, "after": {"type": "Standard"}}]
        }))
    }

    /// Pods record their set's revision: the bytes hashed must never change, or every
    /// running pod would read as outdated.
    #[test]
    fn revisions_are_stable() {
        assert_eq!(mesh().revision(), "78853c8b65");
        assert_eq!(rich().revision(), "fc6fc5da35");
    }

    fn pod(labels: Value, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "labels": labels, "annotations": annotations},
            "spec": {"initContainers": [{"name": "setup", "image": "busybox"}],
                     "containers": [{"name": "app", "image": "nginx", "env": [{"name": "TZ", "value": "UTC"}],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {}}]}})
    }

    fn run(object: &mut Value, sets: &[SidecarSet], ns: &str) -> Vec<SetOutcome> {
        run_request(object, sets, ns, "4f1c2d3e-0000-4000-8000-000000000000")
    }

    fn run_request(
        object: &mut Value,
        sets: &[SidecarSet],
        ns: &str,
        uid: &str,
    ) -> Vec<SetOutcome> {
        let m = PodModel::of(object, &KnownSidecars::default());
        crate::doc::edit_value(object, |d| {
            inject(d, m, sets, ns, uid, &KnownSidecars::default())
        })
        .unwrap()
    }

    #[test]
    fn injects_in_place_and_order() {
        let mut object = pod(json!({"mesh": "on"}), json!({}));
        let outcomes = run(&mut object, &[mesh()], "shop");
        assert!(
            matches!(&outcomes[0], SetOutcome::Injected { containers, .. } if containers.len() == 2)
        );
        let spec = &object["spec"];
        let init: Vec<&str> = spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        // The proxy before every init step, as the set's edge asks.
        assert_eq!(init, ["istio-proxy", "setup", "istio-init"]);
        assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
        assert_eq!(
            spec["initContainers"][0]["env"],
            json!([{"name": "TZ", "value": "UTC"}])
        );
        assert_eq!(
            spec["initContainers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}])
        );
        // The pod's own volume of the same name wins.
        assert_eq!(
            spec["volumes"],
            json!([{"name": "data", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {}}])
        );
        assert_eq!(spec["imagePullSecrets"], json!([{"name": "mesh-pull"}]));
        assert_eq!(
            object["metadata"]["annotations"]["prometheus.io/port"],
            "15020"
        );
        assert_eq!(
            object["metadata"]["annotations"]["injected.sidecars.dev/mesh"],
            json!(mesh().revision())
        );
        // Again: present, untouched.
        let before = object.clone();
        let again = run(&mut object, &[mesh()], "shop");
        assert_eq!(again, [SetOutcome::Present { set: "mesh".into() }]);
        assert_eq!(object, before);
    }

    #[test]
    fn selection_namespaces_and_opt_out() {
        for (labels, annotations, ns, injected) in [
            (json!({"mesh": "on"}), json!({}), "pay-eu", true),
            (json!({"mesh": "on"}), json!({}), "default", false),
            (json!({"mesh": "off"}), json!({}), "shop", false),
            (
                json!({"mesh": "on"}),
                json!({"inject.sidecars.dev": "false"}),
                "shop",
                false,
            ),
            (
                json!({"mesh": "on"}),
                json!({"inject.sidecars.dev/mesh": "false"}),
                "shop",
                false,
            ),
            (
                json!({"mesh": "on"}),
                json!({"inject.sidecars.dev/other": "false"}),
                "shop",
                true,
            ),
        ] {
            let mut object = pod(labels.clone(), annotations.clone());
            let outcomes = run(&mut object, &[mesh()], ns);
            let did = outcomes
                .iter()
                .any(|o| matches!(o, SetOutcome::Injected { .. }));
            assert_eq!(did, injected, "{labels} {annotations} {ns}");
        }
    }

    #[test]
    fn outdated_revisions_name_the_images() {
        let mut object = pod(json!({"mesh": "on"}), json!({}));
        run(&mut object, &[mesh()], "shop");
        let mut upgraded = mesh();
        upgraded.containers.get_mut().unwrap()[0]
            .spec
            .insert("image".into(), json!("docker.io/istio/proxyv2:1.25.0"));
        let m = PodModel::of(&object, &KnownSidecars::default());
        let outcomes = survey(&m, &[upgraded.clone()], "shop");
        let SetOutcome::Outdated {
            images, current, ..
        } = &outcomes[0]
        else {
            panic!("{outcomes:?}")
        };
        assert_eq!(current, &upgraded.revision());
        assert!(images.contains(&(
            "istio-proxy".into(),
            "docker.io/istio/proxyv2:1.24.1".into(),
            "docker.io/istio/proxyv2:1.25.0".into()
        )));
    }

    fn is_canary(outcomes: &[SetOutcome]) -> bool {
        matches!(&outcomes[0], SetOutcome::Injected { canary, .. } if !canary.is_empty())
    }

    fn with_canary(percent: u32) -> SidecarSet {
        let mut s = mesh();
        s.containers.get_mut().unwrap()[0].canary = Some(Canary {
            image: "docker.io/istio/proxyv2:1.25.0".into(),
            percent: Some(percent),
            selector: None,
        });
        s
    }

    #[test]
    fn canary_shares_are_close_and_stable() {
        let s = with_canary(20);
        let mut canaries = 0;
        for i in 0..1000 {
            let mut object = pod(json!({"mesh": "on"}), json!({}));
            object["metadata"]["name"] = json!(format!("web-{i}"));
            let first = run(&mut object.clone(), std::slice::from_ref(&s), "shop");
            let outcomes = run(&mut object, std::slice::from_ref(&s), "shop");
            assert_eq!(first, outcomes, "stable for the same pod");
            canaries += usize::from(is_canary(&outcomes));
        }
        assert!((170..=230).contains(&canaries), "{canaries} of 1000");
    }

    /// The pods of one ReplicaSet all carry the same `generateName` and no name at
    /// admission: the share holds over them, one request each, and a pod keeps what it
    /// got when the webhook is called again on it.
    #[test]
    fn canary_shares_hold_over_the_pods_of_one_replicaset() {
        let s = with_canary(20);
        let mut canaries = 0;
        for i in 0..1000 {
            let mut object = pod(json!({"mesh": "on"}), json!({}));
            let meta = object["metadata"].as_object_mut().unwrap();
            meta.remove("name");
            meta.insert("generateName".into(), json!("web-7d4b9c-"));
            let uid = format!("7c0a{i:04}-1b2c-4d3e-8f00-000000000000");
            let outcomes = run_request(&mut object, std::slice::from_ref(&s), "shop", &uid);
            let image = object["spec"]["initContainers"][0]["image"].clone();
            canaries += usize::from(is_canary(&outcomes));
            // Reinvoked (a new request uid): present, left as it is.
            let before = object.clone();
            let again = run_request(&mut object, std::slice::from_ref(&s), "shop", "other");
            assert_eq!(again, [SetOutcome::Present { set: "mesh".into() }]);
            assert_eq!(object, before);
            assert_eq!(object["spec"]["initContainers"][0]["image"], image);
        }
        assert!((170..=230).contains(&canaries), "{canaries} of 1000");
    }

    #[test]
    fn settings_conflicts_are_found() {
        let a = mesh();
        let mut b = mesh();
        b.name = "mesh-two".into();
        assert!(
            validate_sets(&[a.clone(), b.clone()])
                .unwrap_err()
                .contains("both inject istio-init, istio-proxy")
        );
        b.selector = serde_json::from_value(json!({"matchLabels": {"mesh": "legacy"}})).unwrap();
        b.volumes = Lazy::new(vec![json!({"name": "istio-envoy", "emptyDir": {}})]);
        assert!(
            validate_sets(&[a.clone(), b.clone()])
                .unwrap_err()
                .contains("volume \"istio-envoy\" with different contents")
        );
        // The same volume, its keys in another order, is one volume.
        b.volumes = Lazy::new(vec![
            json!({"emptyDir": {"medium": "Memory"}, "name": "istio-envoy"}),
        ]);
        validate_sets(&[a.clone(), b.clone()]).unwrap();
        b.volumes = Lazy::default();
        validate_sets(&[a.clone(), b.clone()]).unwrap();
        // Namespaces are compared as patterns: `team-?` covers `team-a`, and a pod there
        // would get two containers of one name.
        let mut c = mesh();
        c.name = "mesh-team".into();
        for (ours, theirs, clash) in [
            (vec!["team-?"], vec!["team-a"], true),
            (vec!["team-*"], vec!["*-a"], true),
            (vec!["team-?"], vec!["team-ab"], false),
            (vec!["shop"], vec!["pay-*"], false),
        ] {
            let mut a = a.clone();
            a.namespaces = ours.iter().map(|n| n.to_string()).collect();
            c.namespaces = theirs.iter().map(|n| n.to_string()).collect();
            let result = validate_sets(&[a, c.clone()]);
            assert_eq!(result.is_err(), clash, "{ours:?} {theirs:?}: {result:?}");
        }
        // A null where a field could be is no typo.
        validate_sets(&[set(
            json!({"name": "x", "containers": [{"name": "p", "image": "i", "stdin": null, "volumeMount": null}]}),
        )])
        .unwrap();
        for (bad, part) in [
            (
                json!({"name": "x", "containers": [{"name": "p", "image": "i", "imagePullPolcy": "Always"}]}),
                "unknown field \"imagePullPolcy\"",
            ),
            (
                json!({"name": "x", "containers": [{"name": "p", "image": "i", "resources": {"limts": {"cpu": "1"}}}]}),
                "unknown field \"resources.limts\"",
            ),
            (
                json!({"name": "x", "containers": [{"name": "p", "image": "i", "ports": [{"containerPort": 80, "protocl": "TCP"}]}]}),
                "unknown field \"ports[0].protocl\"",
            ),
            (
                json!({"name": "x", "containers": [{"name": "p", "image": "i", "resources": {"requests": {"cpu": "lots"}}}]}),
                "\"lots\"",
            ),
            (
                json!({"name": "x", "selector": {"matchExpressions": [{"key": "a", "operator": "Within", "values": ["b"]}]}, "containers": [{"name": "p", "image": "i"}]}),
                "unknown operator",
            ),
            (
                json!({"name": "x", "containers": [{"name": "p", "image": "i", "canary": {"image": "j"}}]}),
                "either percent or selector",
            ),
            (json!({"name": "x"}), "injects no container"),
        ] {
            let err = set(bad.clone()).validate().unwrap_err();
            assert!(err.contains(part), "{bad}: {err}");
        }
    }
}
