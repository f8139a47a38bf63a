use kubewarden_policy_sdk::settings::Validatable;
pub use policy_shell::Level;
use serde::{Deserialize, Serialize};
use sidecar_model::KnownSidecarSettings;
use sidecar_model::checks::{KubeVersion, Rule};

/// One level per rule, by the rule's stable name; unknown names are refused.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Levels {
    pub legacy_sidecar: Level,
    pub field_placement: Level,
    pub annotations: Level,
    pub startup_probe: Level,
    pub termination_budget: Level,
    pub optional_sidecar: Level,
    pub post_sidecar_job: Level,
    pub restart_forever: Level,
    pub restart_rules: Level,
    /// Restart rules on native sidecars. `off` lets a sidecar restart the whole pod
    /// (`RestartAllContainers`); `warn`, the default, says that a helper can restart the app.
    pub sidecar_restart_rules: Level,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            legacy_sidecar: Level::Deny,
            field_placement: Level::Deny,
            annotations: Level::Deny,
            startup_probe: Level::Warn,
            termination_budget: Level::Warn,
            optional_sidecar: Level::Deny,
            post_sidecar_job: Level::Deny,
            restart_forever: Level::Deny,
            restart_rules: Level::Deny,
            sidecar_restart_rules: Level::Warn,
        }
    }
}

impl Levels {
    pub fn of(&self, rule: Rule) -> Level {
        match rule {
            Rule::LegacySidecar => self.legacy_sidecar,
            Rule::FieldPlacement => self.field_placement,
            Rule::Annotations => self.annotations,
            Rule::StartupProbe => self.startup_probe,
            Rule::TerminationBudget => self.termination_budget,
            Rule::OptionalSidecar => self.optional_sidecar,
            Rule::PostSidecarJob => self.post_sidecar_job,
            Rule::RestartForever => self.restart_forever,
            Rule::RestartRules => self.restart_rules,
            Rule::SidecarRestartRules => self.sidecar_restart_rules,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Fix what can be fixed (legacy sidecars become native, optional sidecars lose their
    /// readinessProbe) instead of reporting it.
    pub convert: bool,
    /// The Kubernetes version pods will run on: which fields containers may have, and
    /// whether `convert` may write native sidecars (1.29).
    pub kubernetes_version: String,
    pub rules: Levels,
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

    /// The parse `validate_settings` does.
    fn parse(json: &str) -> Result<Settings, String> {
        policy_shell::read_settings(json)
    }

    #[test]
    fn rule_names_are_checked() {
        let s =
            parse(r#"{"rules": {"startup-probe": "deny", "termination-budget": "off"}}"#).unwrap();
        assert_eq!(s.rules.of(Rule::StartupProbe), Level::Deny);
        assert_eq!(s.rules.of(Rule::TerminationBudget), Level::Off);
        assert_eq!(s.rules.of(Rule::LegacySidecar), Level::Deny);
        assert!(
            parse(r#"{"rules": {"startup-probes": "deny"}}"#)
                .unwrap_err()
                .contains("unknown field `startup-probes`")
        );
        assert!(
            parse(r#"{"rules": {"startup-probe": "block"}}"#)
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(
            parse(r#"{"kubernetesVersion": "latest"}"#)
                .unwrap_err()
                .contains("kubernetesVersion")
        );
        assert!(parse(r#"{"convertt": true}"#).is_err());
    }
}
