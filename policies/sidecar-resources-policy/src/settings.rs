//! The settings are the model's (`sidecar_model::resources::Settings`), declared beside
//! the rules they configure; this is the SDK's door to them.

use kubewarden_policy_sdk::settings::Validatable;
pub use policy_shell::Level;
use serde::{Deserialize, Serialize};
use sidecar_model::resources;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Settings(pub resources::Settings);

impl std::ops::Deref for Settings {
    type Target = resources::Settings;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        self.0.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_shell::ReadSettings;

    #[test]
    fn settings() {
        assert!(Settings::read("{}").unwrap().preserve_qos);
        assert_eq!(
            Settings::read(r#"{"maxSidecarShare": 25}"#)
                .unwrap()
                .share()["*"],
            25
        );
        assert_eq!(
            Settings::read(r#"{"maxSidecarShare": {"cpu": 10}}"#)
                .unwrap()
                .share()["cpu"],
            10
        );
        assert!(
            Settings::read(r#"{"maxSidecarShare": 0}"#)
                .unwrap_err()
                .contains("percentage")
        );
        let err = Settings::read(r#"{"maxEffectiveRequests": {"cpu": "4 cores"}}"#).unwrap_err();
        assert!(err.contains("\"4 cores\""), "{err}");
        let err = Settings::read(
            r#"{"defaults": [{"image": "*/proxyv2", "requests": {"memory": "128MB"}}]}"#,
        )
        .unwrap_err();
        assert!(err.contains("\"128MB\""), "{err}");
        assert!(
            Settings::read(r#"{"rules": {"qos": "deny", "pod-levels": "off"}}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            Settings::read(r#"{"preserveQoS": true}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
