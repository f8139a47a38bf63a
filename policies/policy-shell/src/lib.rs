//! The glue between a policy's decision and the Kubewarden SDK, the same for every policy:
//! settings validation that answers instead of erroring, and answers that carry warnings
//! and audit annotations (the SDK's helpers carry neither).

pub use kubewarden_policy_sdk::protocol_version_guest;
pub use kubewarden_policy_sdk::request::KubernetesAdmissionRequest;
use kubewarden_policy_sdk::request::ValidationRequest;
use kubewarden_policy_sdk::response::ValidationResponse;
use kubewarden_policy_sdk::settings::{SettingsValidationResponse, Validatable};
pub use kubewarden_policy_sdk::wapc_guest::CallResult;
pub use kubewarden_policy_sdk::wapc_guest::prelude::register_function;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// A policy's waPC exports: `wapc_init` registering `validate` (the request parsed once,
/// handed to `$evaluate` with the settings), `validate_settings` and `protocol_version`.
/// A macro because each policy cdylib must define its own `wapc_init` symbol.
#[macro_export]
macro_rules! export_policy {
    ($settings:ty, $evaluate:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn wapc_init() {
            fn validate(payload: &[u8]) -> $crate::CallResult {
                $crate::validate_with::<$settings>(payload, $evaluate)
            }
            $crate::register_function("validate", validate);
            $crate::register_function("validate_settings", $crate::validate_settings::<$settings>);
            $crate::register_function("protocol_version", $crate::protocol_version_guest);
        }
    };
}

/// `validate_settings`: settings that do not even parse (a typo in a field name, a wrong
/// type) are answered `valid: false` with serde's reason, like any other invalid setting.
pub fn validate_settings<T: DeserializeOwned + Validatable>(payload: &[u8]) -> CallResult {
    let verdict = read_settings::<T>(payload);
    Ok(serde_json::to_vec(&SettingsValidationResponse {
        valid: verdict.is_ok(),
        message: verdict.err(),
    })?)
}

/// Settings as `validate_settings` reads them: parsed, then validated.
pub fn read_settings<T: DeserializeOwned + Validatable>(
    json: impl AsRef<[u8]>,
) -> Result<T, String> {
    let settings: T =
        serde_json::from_slice(json.as_ref()).map_err(|e| format!("invalid settings: {e}"))?;
    settings.validate()?;
    Ok(settings)
}

/// `validate`: parses the request once, hands it with the settings to `evaluate`, and
/// turns an error into a rejection (a policy never traps on what it is given). The request
/// is lent mutably so a mutating policy can take `object` instead of copying it: the
/// request is not read again once the policy has decided.
pub fn validate_with<S: DeserializeOwned + Default>(
    payload: &[u8],
    evaluate: impl Fn(&S, &mut KubernetesAdmissionRequest) -> Result<Answer, String>,
) -> CallResult {
    let answer = match ValidationRequest::<S>::new(payload) {
        Ok(mut request) => {
            evaluate(&request.settings, &mut request.request).unwrap_or_else(Answer::reject)
        }
        Err(e) => Answer::reject(format!("cannot read the admission request: {e}")),
    };
    answer.into_response()
}

/// What a rule's violations do, in every policy that has rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// Reject the request.
    Deny,
    /// Accept it with a warning.
    Warn,
    /// Ignore the rule.
    Off,
}

/// What a policy decided about one request.
#[derive(Debug, Default)]
pub struct Answer {
    pub rejections: Vec<String>,
    pub warnings: Vec<String>,
    pub audit: HashMap<String, String>,
    pub mutated: Option<Value>,
}

impl Answer {
    pub fn accept() -> Self {
        Answer::default()
    }

    pub fn reject(message: impl Into<String>) -> Self {
        Answer {
            rejections: vec![message.into()],
            ..Default::default()
        }
    }

    /// Files `message` as `level` says: a rejection, a warning, or nothing.
    pub fn file(&mut self, level: Level, message: String) {
        match level {
            Level::Deny => self.rejections.push(message),
            Level::Warn => self.warnings.push(message),
            Level::Off => {}
        }
    }

    /// Rejected when there is any rejection (then no mutation is returned); the
    /// rejections joined into one message.
    pub fn into_response(self) -> CallResult {
        let accepted = self.rejections.is_empty();
        Ok(serde_json::to_vec(&ValidationResponse {
            accepted,
            message: (!accepted).then(|| self.rejections.join("; ")),
            code: None,
            mutated_object: if accepted { self.mutated } else { None },
            audit_annotations: (!self.audit.is_empty()).then_some(self.audit),
            warnings: (!self.warnings.is_empty()).then_some(self.warnings),
        })?)
    }
}
