//! The resources policy's rules, declared once, and its settings beside them: the rules
//! read the settings as they are, with nothing mirrored in between.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::kube::{KnownSidecarSettings, KubeVersion, Quantity};
use crate::resources::findings::ResourceDefault;
use crate::rule::Levels;

crate::declare_rules! {
    /// The resources policy's rules, in the order they run.
    pub enum Rule {
        SidecarRequests = "sidecar-requests", Warn, "a sidecar that sets no cpu or memory requests";
        Qos = "qos", Deny, "sidecars that cost a Guaranteed pod its class";
        PodLevel = "pod-level", Deny, "containers that need more than the pod-level resources give";
        SidecarShare = "sidecar-share", Deny, "sidecars that take more than their share of the pod";
        PodMax = "pod-max", Deny, "a pod that reserves more than the maxima";
        Resize = "resize", Deny,
            "pods/resize the cluster refuses: a regular init container before 1.36, or a change of QoS class";
    }
}

/// A percentage for every resource, or one per resource.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Share {
    All(u32),
    PerResource(BTreeMap<String, u32>),
}

/// The resources policy's settings: a level per rule, and what the rules are asked to do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub rules: Levels<Rule>,
    /// sidecar-requests: fill missing sidecar requests (and limits) from `defaults`.
    pub fill_sidecar_requests: bool,
    /// sidecar-requests: sidecars must declare cpu and memory limits too.
    pub require_sidecar_limits: bool,
    /// qos: make sidecars and init containers Guaranteed when the app containers are.
    pub preserve_qos: bool,
    /// qos: the most a `preserveQos` fix may add to the pod's effective requests, per
    /// resource; a fix that would add more is not made, and the rule says why.
    pub preserve_qos_max_increase: BTreeMap<String, Quantity>,
    /// Requests and limits per container name or image pattern; the first match counts.
    pub defaults: Vec<ResourceDefault>,
    /// sidecar-share: the most the sidecars may request, in percent of the pod's effective
    /// requests.
    pub max_sidecar_share: Option<Share>,
    /// pod-max: the most a pod may reserve (overhead included).
    pub max_effective_requests: BTreeMap<String, Quantity>,
    pub max_effective_limits: BTreeMap<String, Quantity>,
    pub known_sidecars: KnownSidecarSettings,
    /// The Kubernetes version pods run on: whether pod-level resources resize in place.
    pub kubernetes_version: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules: Levels::default(),
            fill_sidecar_requests: true,
            require_sidecar_limits: false,
            preserve_qos: true,
            preserve_qos_max_increase: BTreeMap::new(),
            defaults: Vec::new(),
            max_sidecar_share: None,
            max_effective_requests: BTreeMap::new(),
            max_effective_limits: BTreeMap::new(),
            known_sidecars: KnownSidecarSettings::default(),
            kubernetes_version: KubeVersion::DEFAULT.to_string(),
        }
    }
}

impl Settings {
    pub fn version(&self) -> Result<KubeVersion, String> {
        KubeVersion::setting(&self.kubernetes_version)
    }

    /// `maxSidecarShare` per resource, `*` for every resource.
    pub fn share(&self) -> BTreeMap<String, u32> {
        match &self.max_sidecar_share {
            None => BTreeMap::new(),
            Some(Share::All(p)) => BTreeMap::from([("*".to_string(), *p)]),
            Some(Share::PerResource(m)) => m.clone(),
        }
    }
}

impl Settings {
    /// What `validate_settings` checks beyond the types.
    pub fn validate(&self) -> Result<(), String> {
        self.version()?;
        for (i, d) in self.defaults.iter().enumerate() {
            d.validate().map_err(|e| format!("defaults[{i}]: {e}"))?;
        }
        for (resource, pct) in self.share() {
            if !(1..=100).contains(&pct) {
                return Err(format!(
                    "maxSidecarShare {resource}: {pct} is not a percentage from 1 to 100"
                ));
            }
        }
        for (field, max) in [
            ("maxEffectiveRequests", &self.max_effective_requests),
            ("maxEffectiveLimits", &self.max_effective_limits),
        ] {
            if let Some((name, q)) = max.iter().find(|(_, q)| !q.is_positive()) {
                return Err(format!("{field}.{name}: {q} must be more than 0"));
            }
        }
        // 0 is a cap: a fix may then add nothing.
        if let Some((name, q)) = self
            .preserve_qos_max_increase
            .iter()
            .find(|(_, q)| q.nanos() < 0)
        {
            return Err(format!(
                "preserveQosMaxIncrease.{name}: {q} must not be negative"
            ));
        }
        self.known_sidecars.validate()
    }
}
