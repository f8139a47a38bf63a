use kubewarden_policy_sdk::settings::Validatable;
pub use policy_shell::Level;
use serde::{Deserialize, Serialize};
use sidecar_model::KnownSidecarSettings;
use sidecar_model::KubeVersion;
use sidecar_model::lifecycle::Rule;
use sidecar_model::rule::Levels;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Fix what can be fixed (legacy sidecars become native, optional sidecars lose their
    /// readinessProbe) instead of reporting it.
    pub convert: bool,
    /// The Kubernetes version pods will run on: which fields containers may have, and
    /// whether `convert` may write native sidecars (1.29).
    pub kubernetes_version: String,
    /// A level per rule, by the rule's stable name (the rules and their defaults are
    /// declared in `sidecar_model::lifecycle`); unknown names are refused.
    pub rules: Levels<Rule>,
    pub known_sidecars: KnownSidecarSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            convert: true,
            kubernetes_version: KubeVersion::DEFAULT.to_string(),
            rules: Levels::default(),
            known_sidecars: KnownSidecarSettings::default(),
        }
    }
}

impl Settings {
    pub fn version(&self) -> Result<KubeVersion, String> {
        KubeVersion::setting(&self.kubernetes_version)
    }
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        self.version()?;
        self.known_sidecars.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_shell::ReadSettings;

    #[test]
    fn rule_names_are_checked() {
        let s =
            Settings::read(r#"{"rules": {"startup-probe": "deny", "termination-budget": "off"}}"#)
                .unwrap();
        assert_eq!(s.rules.of(Rule::StartupProbe), Level::Deny);
        assert_eq!(s.rules.of(Rule::TerminationBudget), Level::Off);
        assert_eq!(s.rules.of(Rule::LegacySidecar), Level::Deny);
        assert!(
            Settings::read(r#"{"rules": {"startup-probes": "deny"}}"#)
                .unwrap_err()
                .contains("unknown field `startup-probes`")
        );
        assert!(
            Settings::read(r#"{"rules": {"startup-probe": "block"}}"#)
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(
            Settings::read(r#"{"kubernetesVersion": "latest"}"#)
                .unwrap_err()
                .contains("kubernetesVersion")
        );
        assert!(Settings::read(r#"{"convertt": true}"#).is_err());
    }
}
