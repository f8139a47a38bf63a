//! The injector's settings: its sidecar sets and the known-sidecar list. Here, beside the
//! sets, so that the policy and `sidecarctl export` read one shape.

use super::overlap::validate_sets;
use super::set::SidecarSet;
use crate::kube::KnownSidecarSettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub sidecar_sets: Vec<SidecarSet>,
    pub known_sidecars: KnownSidecarSettings,
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        validate_sets(&self.sidecar_sets)?;
        self.known_sidecars.validate()
    }
}
