use kubewarden_policy_sdk::settings::Validatable;
use serde::{Deserialize, Serialize};
use sidecar_model::KnownSidecarSettings;
use sidecar_model::inject::{SidecarSet, validate_sets};

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub sidecar_sets: Vec<SidecarSet>,
    pub known_sidecars: KnownSidecarSettings,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        validate_sets(&self.sidecar_sets)?;
        self.known_sidecars.validate()
    }
}
