//! The part of a pod spec the sidecar model reads.
//!
//! k8s-openapi's `PodSpec` deserializes every field of every container (probes, env
//! sources, security contexts, ports…) into large typed trees; in the fresh wasm instance
//! policy-server gives each request, building and dropping them was most of a policy's
//! cost. The model reads only what it uses, with k8s-openapi's types for those parts;
//! probes only need to be present; resources, mounts and variables stay text until read
//! (only accounting and the injector read them). Policies edit the request's own JSON
//! (`kube::edit`), never these types, so nothing is lost on the way out: fields not read
//! here are kept as they were.

use crate::json::Deferred;
use k8s_openapi::api::core::v1::{
    ContainerResizePolicy, ContainerRestartRule, EnvVar, Lifecycle, ResourceRequirements,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
    pub restart_policy: Option<String>,
    pub termination_grace_period_seconds: Option<i64>,
    pub overhead: Option<BTreeMap<String, Quantity>>,
    /// Pod-level resources.
    pub resources: Option<ResourceRequirements>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub name: String,
    pub image: Option<String>,
    pub restart_policy: Option<String>,
    /// Read, not skipped: the lifecycle policy validates them as the API server does.
    pub restart_policy_rules: Option<Vec<ContainerRestartRule>>,
    pub startup_probe: Option<IgnoredAny>,
    pub readiness_probe: Option<IgnoredAny>,
    pub liveness_probe: Option<IgnoredAny>,
    /// Boxed: k8s-openapi's hooks take 440 of the 720 bytes a container would have, and
    /// few containers have any. Every byte of a container is memory a fresh instance
    /// faults in.
    pub lifecycle: Option<Box<Lifecycle>>,
    /// Kept as text: only resource accounting reads it, from the text itself
    /// (`ContainerResources::of`); on a pod of 50 containers building k8s-openapi's maps
    /// for every container was a sixth of the other policies' work.
    pub resources: Option<Text>,
    /// Read for the resize rule: a regular init container that restarts on resize may not be
    /// resized.
    pub resize_policy: Option<Vec<ContainerResizePolicy>>,
    /// Only the injector reads mounts and variables (real pods carry dozens of each):
    /// kept as text until then.
    pub volume_mounts: Option<Deferred<Vec<VolumeMount>>>,
    pub env: Option<Deferred<Vec<EnvVar>>>,
}

/// JSON text kept as it came; equal when the text is.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Text(Box<RawValue>);

impl Text {
    pub fn raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Container {
    /// The container's volume mounts (none when absent or unreadable).
    pub fn volume_mounts(&self) -> &[VolumeMount] {
        lazy_list(&self.volume_mounts)
    }

    /// The container's environment variables (none when absent or unreadable).
    pub fn env(&self) -> &[EnvVar] {
        lazy_list(&self.env)
    }

    /// A `resizePolicy` says `RestartContainer`: a regular init container with one may not
    /// be resized, and from 1.36 may not be created.
    pub fn restarts_on_resize(&self) -> bool {
        self.resize_policy
            .iter()
            .flatten()
            .any(|p| p.restart_policy == "RestartContainer")
    }
}

fn lazy_list<T: serde::de::DeserializeOwned>(list: &Option<Deferred<Vec<T>>>) -> &[T] {
    list.as_ref()
        .and_then(|l| l.get().ok())
        .map_or(&[], Vec::as_slice)
}

/// `null` reads as the empty value, as the API server treats it.
pub(crate) fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_the_model_uses_and_skips_the_rest() {
        let spec: PodSpec = serde_json::from_value(json!({
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 45,
            "securityContext": {"runAsNonRoot": true},
            "initContainers": [{
                "name": "proxy", "image": "istio/proxyv2:1.24", "restartPolicy": "Always",
                "startupProbe": {"httpGet": {"path": "/ready", "port": 15021}},
                "readinessProbe": null,
                "ports": [{"containerPort": 15090}],
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}
            }],
            "containers": [{
                "name": "app",
                "resources": {"requests": {"cpu": "100m"}},
                "env": [{"name": "TZ", "value": "UTC"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }]
        }))
        .unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(45));
        let proxy = &spec.init_containers.as_ref().unwrap()[0];
        assert!(proxy.startup_probe.is_some() && proxy.readiness_probe.is_none());
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        let sleep = proxy.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(sleep.sleep.as_ref().unwrap().seconds, 5);
        let app = &spec.containers[0];
        assert_eq!(app.env()[0].name, "TZ");
        assert_eq!(app.volume_mounts()[0].mount_path, "/data");
        assert!(proxy.env().is_empty() && proxy.volume_mounts().is_empty());
        assert!(app.resources.is_some());
    }

    #[test]
    fn null_lists_are_empty_and_wrong_types_are_errors() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": null})).unwrap();
        assert!(spec.containers.is_empty());
        let spec: PodSpec = serde_json::from_value(json!({})).unwrap();
        assert!(spec.containers.is_empty());
        assert!(serde_json::from_value::<PodSpec>(json!({"containers": "app"})).is_err());
        assert!(serde_json::from_value::<PodSpec>(json!({"containers": [{"name": 1}]})).is_err());
    }
}
