//! The settings are the model's (`sidecar_model::inject::Settings`), which
//! `sidecarctl export` reads too; this is the SDK's door to them.

use kubewarden_policy_sdk::settings::Validatable;
use serde::{Deserialize, Serialize};
use sidecar_model::inject;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Settings(pub inject::Settings);

impl std::ops::Deref for Settings {
    type Target = inject::Settings;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        self.0.validate()
    }
}
