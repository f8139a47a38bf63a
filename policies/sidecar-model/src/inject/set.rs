//! A sidecar set as settings declare it: its containers, volumes and selector, their
//! checks, and its revision.

use super::labels::{selector_matches, validate_selector};
use crate::json::Deferred;
use crate::kube::LifecycleType;
use crate::kube::{ModelError, PodModel};
use crate::ordering::EdgeRule;
use crate::resources::ContainerResources;
use k8s_openapi::api::core::v1::{Container, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

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
        // A top-level null is as good as absent, as the API server reads it; a field newer
        // than the k8s-openapi the SDK pins is no typo, and is injected as written.
        if let Some(unknown) = unknown
            .iter()
            .filter(|path| !is_newer_than_k8s_openapi(path))
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
/// Container fields Kubernetes 1.37 added (alpha there), which k8s-openapi's `v1_36` does
/// not know: `volumeMounts[i].bindMountOptions` (`VolumeBindMountOptions`).
fn is_newer_than_k8s_openapi(path: &str) -> bool {
    path.strip_prefix("volumeMounts[")
        .and_then(|rest| rest.split_once("]."))
        .is_some_and(|(index, field)| {
            index.bytes().all(|b| b.is_ascii_digit()) && field == "bindMountOptions"
        })
}

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
    pub init_containers: Deferred<Vec<SetContainer>>,
    #[serde(default)]
    pub containers: Deferred<Vec<SetContainer>>,
    /// Merged into the pod's volumes; a pod volume of the same name wins.
    #[serde(default)]
    pub volumes: Deferred<Vec<Value>>,
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
        fn list(l: &Deferred<Vec<SetContainer>>) -> std::slice::Iter<'_, SetContainer> {
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
    /// A set that cannot be written out has no revision: hashing nothing would give every
    /// such set the same one.
    pub fn revision(&self) -> Result<String, ModelError> {
        let text = crate::json::canonical::to_vec(self).map_err(|e| {
            ModelError::Malformed(format!(
                "sidecar set {:?} cannot be written out for its revision: {}",
                self.name,
                crate::json::message(&e)
            ))
        })?;
        Ok(hex::encode(&Sha256::digest(&text)[..5]))
    }

    pub(super) fn selects(&self, model: &PodModel, namespace: &str) -> bool {
        let ns_ok = self.namespaces.is_empty()
            || self
                .namespaces
                .iter()
                .any(|p| crate::kube::glob::matches(p, namespace));
        ns_ok && selector_matches(&self.selector, &model.workload.labels)
    }
}
