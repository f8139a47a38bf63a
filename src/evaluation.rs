//! A policy with its settings, answering admission requests as policy-server does.

use serde_json::Value;

use crate::admission::{self, AdmissionResponse, PolicyAnswer, SettingsAnswer};
use crate::runtime::{HostError, Instance, Policy};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{policy}: the settings are not valid: {message}")]
    Invalid { policy: String, message: String },
    #[error("{policy}: cannot validate the settings: {error}")]
    Host { policy: String, error: HostError },
}

/// Why an evaluation gave no answer of the policy's own; policy-server answers each with
/// a 500 rejection. Each message says its cause itself: none is also a `source`.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error("cannot write the request and settings as JSON: {0}")]
    Payload(serde_json::Error),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("the policy's answer is not a validation response: {0}")]
    NotAResponse(serde_json::Error),
    #[error("cannot write the patch: {0}")]
    Patch(serde_json::Error),
}

/// What an evaluation gives: the AdmissionResponse policy-server would send, and why the
/// policy failed when it did (the response is then its 500).
#[derive(Debug)]
pub struct Evaluation {
    pub response: AdmissionResponse,
    pub failure: Option<EvaluationError>,
}

/// Calls `validate_settings`. A guest error (the SDK's answer to settings it cannot
/// deserialize) counts as invalid settings, as in policy-server.
pub fn validate_settings(policy: &Policy, settings: &Value) -> Result<SettingsAnswer, HostError> {
    let invalid = |message: String| SettingsAnswer {
        valid: false,
        message: Some(message),
    };
    let payload = match serde_json::to_vec(settings) {
        Ok(payload) => payload,
        Err(e) => {
            return Ok(invalid(format!(
                "the settings cannot be written as JSON: {e}"
            )));
        }
    };
    match policy.call("validate_settings", &payload) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            invalid(format!(
                "the policy's answer is not a settings validation response: {e}"
            ))
        })),
        Err(HostError::Guest { reason, .. }) => Ok(invalid(reason)),
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
            validate_settings(&policy, &settings).map_err(|error| SettingsError::Host {
                policy: policy.name.clone(),
                error,
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

    /// `request` evaluated in a fresh instance, as policy-server evaluates.
    pub fn evaluate(&self, request: &Value) -> Evaluation {
        self.evaluate_in(None, request)
    }

    /// [`Evaluator::evaluate`] in `instance`, reused across calls (kwctl's way), or in a
    /// fresh one.
    pub fn evaluate_in(&self, instance: Option<&Instance>, request: &Value) -> Evaluation {
        let uid = admission::uid_of(request);
        let answered = self.answer(instance, request).and_then(|answer| {
            AdmissionResponse::from_answer(uid, request.get("object"), &answer)
                .map_err(EvaluationError::Patch)
        });
        match answered {
            Ok(response) => Evaluation {
                response,
                failure: None,
            },
            Err(failure) => Evaluation {
                response: AdmissionResponse::internal_error(uid, &failure),
                failure: Some(failure),
            },
        }
    }

    /// The policy's own answer.
    fn answer(
        &self,
        instance: Option<&Instance>,
        request: &Value,
    ) -> Result<PolicyAnswer, EvaluationError> {
        let payload = admission::validate_payload(request, &self.settings)
            .map_err(EvaluationError::Payload)?;
        let bytes = match instance {
            Some(instance) => instance.call("validate", &payload),
            None => self.policy.call("validate", &payload),
        }?;
        serde_json::from_slice(&bytes).map_err(EvaluationError::NotAResponse)
    }
}
