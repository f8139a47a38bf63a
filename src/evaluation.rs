//! A policy with its settings, answering admission requests as policy-server does.

use serde_json::Value;

use crate::admission::{self, AdmissionResponse, PolicyAnswer, SettingsAnswer};
use crate::runtime::{HostError, Instance, Policy};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{policy}: the settings are not valid: {message}")]
    Invalid { policy: String, message: String },
    #[error("{policy}: cannot validate the settings: {source}")]
    Host {
        policy: String,
        #[source]
        source: HostError,
    },
}

/// Calls `validate_settings`. A guest error (the SDK's answer to settings it cannot
/// deserialize) counts as invalid settings, as in policy-server.
pub fn validate_settings(policy: &Policy, settings: &Value) -> Result<SettingsAnswer, HostError> {
    let payload = serde_json::to_vec(settings).unwrap_or_default();
    match policy.call("validate_settings", &payload) {
        Ok(bytes) => Ok(
            serde_json::from_slice(&bytes).unwrap_or_else(|e| SettingsAnswer {
                valid: false,
                message: Some(format!(
                    "the policy's answer is not a settings validation response: {e}"
                )),
            }),
        ),
        Err(HostError::Guest { reason, .. }) => Ok(SettingsAnswer {
            valid: false,
            message: Some(reason),
        }),
        Err(e) => Err(e),
    }
}

/// A policy whose settings passed `validate_settings`.
#[derive(Clone)]
pub struct Evaluator {
    pub policy: Policy,
    settings: Value,
}

impl Evaluator {
    pub fn new(policy: Policy, settings: Value) -> Result<Self, SettingsError> {
        let answer =
            validate_settings(&policy, &settings).map_err(|source| SettingsError::Host {
                policy: policy.name.clone(),
                source,
            })?;
        if !answer.valid {
            return Err(SettingsError::Invalid {
                policy: policy.name.clone(),
                message: answer.message.unwrap_or_else(|| "no reason given".into()),
            });
        }
        Ok(Evaluator { policy, settings })
    }

    /// The settings `validate_settings` accepted.
    pub fn settings(&self) -> &Value {
        &self.settings
    }

    /// The policy's raw answer, in a fresh instance.
    pub fn answer(&self, request: &Value) -> Result<PolicyAnswer, String> {
        self.answer_in(None, request)
    }

    /// The policy's raw answer from `instance` (kwctl's reuse), or a fresh one.
    fn answer_in(
        &self,
        instance: Option<&Instance>,
        request: &Value,
    ) -> Result<PolicyAnswer, String> {
        let payload = admission::validate_payload(request, &self.settings);
        let bytes = match instance {
            Some(instance) => instance.call("validate", &payload),
            None => self.policy.call("validate", &payload),
        }
        .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the policy's answer is not a validation response: {e}"))
    }

    /// The AdmissionResponse policy-server would give for `request`.
    pub fn validate(&self, request: &Value) -> AdmissionResponse {
        self.evaluate(request).0
    }

    /// The AdmissionResponse, and why the policy failed when it did (a trap, a deadline,
    /// an answer that is not one): policy-server turns those into a 500 rejection.
    pub fn evaluate(&self, request: &Value) -> (AdmissionResponse, Option<String>) {
        self.evaluate_in(None, request)
    }

    /// [`Evaluator::evaluate`] in `instance`, reused across calls, or a fresh one.
    pub fn evaluate_in(
        &self,
        instance: Option<&Instance>,
        request: &Value,
    ) -> (AdmissionResponse, Option<String>) {
        let uid = admission::uid_of(request);
        let failure = match self.answer_in(instance, request) {
            Ok(answer) => match AdmissionResponse::from_answer(uid, request.get("object"), &answer)
            {
                Ok(response) => return (response, None),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => e,
        };
        (
            AdmissionResponse::internal_error(uid, &failure),
            Some(failure),
        )
    }
}
