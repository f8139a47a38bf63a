use kubewarden_policy_sdk::settings::Validatable;
pub use policy_shell::Level;
use serde::{Deserialize, Serialize};
use sidecar_model::budget::ResourceDefault;
use sidecar_model::resource_rules::Rule;
use sidecar_model::{KnownSidecarSettings, KubeVersion, Quantity};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Levels {
    pub sidecar_requests: Level,
    pub qos: Level,
    pub pod_level: Level,
    pub sidecar_share: Level,
    pub pod_max: Level,
    /// `pods/resize` requests the cluster would refuse: a regular init container resized,
    /// a QoS class changed.
    pub resize: Level,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            sidecar_requests: Level::Warn,
            qos: Level::Deny,
            pod_level: Level::Deny,
            sidecar_share: Level::Deny,
            pod_max: Level::Deny,
            resize: Level::Deny,
        }
    }
}

impl Levels {
    pub fn of(&self, rule: Rule) -> Level {
        match rule {
            Rule::SidecarRequests => self.sidecar_requests,
            Rule::Qos => self.qos,
            Rule::PodLevel => self.pod_level,
            Rule::SidecarShare => self.sidecar_share,
            Rule::PodMax => self.pod_max,
            Rule::Resize => self.resize,
        }
    }
}

/// A percentage for every resource, or one per resource.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Share {
    All(u32),
    PerResource(BTreeMap<String, u32>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub rules: Levels,
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

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parse `validate_settings` does.
    fn parse(json: &str) -> Result<Settings, String> {
        policy_shell::read_settings(json)
    }

    #[test]
    fn settings() {
        assert!(parse("{}").unwrap().preserve_qos);
        assert_eq!(
            parse(r#"{"maxSidecarShare": 25}"#).unwrap().share()["*"],
            25
        );
        assert_eq!(
            parse(r#"{"maxSidecarShare": {"cpu": 10}}"#)
                .unwrap()
                .share()["cpu"],
            10
        );
        assert!(
            parse(r#"{"maxSidecarShare": 0}"#)
                .unwrap_err()
                .contains("percentage")
        );
        let err = parse(r#"{"maxEffectiveRequests": {"cpu": "4 cores"}}"#).unwrap_err();
        assert!(err.contains("\"4 cores\""), "{err}");
        let err =
            parse(r#"{"defaults": [{"image": "*/proxyv2", "requests": {"memory": "128MB"}}]}"#)
                .unwrap_err();
        assert!(err.contains("\"128MB\""), "{err}");
        assert!(
            parse(r#"{"rules": {"qos": "deny", "pod-levels": "off"}}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse(r#"{"preserveQoS": true}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
