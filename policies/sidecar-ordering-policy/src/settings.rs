use kubewarden_policy_sdk::settings::Validatable;
use serde::{Deserialize, Serialize};
use sidecar_model::{EdgeRule, KnownSidecarSettings};

/// `mutate` puts the spec in order; `validate` only rejects pods that are out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Mutate,
    Validate,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub mode: Mode,
    /// Reject (instead of warn about) sidecars that others start after but that have no
    /// startupProbe.
    pub require_startup_probe: bool,
    /// Cluster-wide start dependencies, matched by container name, image or type.
    pub edges: Vec<EdgeRule>,
    pub known_sidecars: KnownSidecarSettings,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.edges.iter().enumerate() {
            rule.validate().map_err(|e| format!("edges[{i}]: {e}"))?;
        }
        self.known_sidecars.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_shell::ReadSettings;

    #[test]
    fn defaults_and_typos() {
        let s = Settings::read("{}").unwrap();
        assert_eq!(s.mode, Mode::Mutate);
        assert!(!s.require_startup_probe);
        assert!(
            Settings::read(r#"{"requireStartupProbes": true}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            Settings::read(r#"{"mode": "enforce"}"#)
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(
            Settings::read(r#"{"edges": [{"before": {"name": ""}, "after": {"type": "Init"}}]}"#)
                .unwrap_err()
                .starts_with("edges[0]: before")
        );
    }
}
