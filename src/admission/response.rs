//! What comes back: a policy's answer, and the AdmissionResponse policy-server makes of
//! it (the patch is the JSON Patch from the request's object to the mutated object).

use anyhow::Context;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a policy answers to `validate` (snake_case, as the Kubewarden SDK writes it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PolicyAnswer {
    pub accepted: bool,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub mutated_object: Option<Value>,
    #[serde(default)]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

/// What a policy answers to `validate_settings`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SettingsAnswer {
    pub valid: bool,
    #[serde(default)]
    pub message: Option<String>,
}

/// admission/v1 AdmissionResponse, field for field (and in the order) policy-server
/// writes it: `patchType`, `patch` and `status` only when set, `auditAnnotations` and
/// `warnings` always (null when absent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    pub audit_annotations: Option<BTreeMap<String, String>>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// The part of metav1.StatusDetails a custom rejection message uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StatusCause {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub const DELETE_MUTATION_MESSAGE: &str = "Incoming object is null, which happens only with DELETE operations, but the policy is attempting a mutation. This is not allowed";

impl AdmissionResponse {
    pub fn reject(uid: &str, message: String, code: u16) -> Self {
        AdmissionResponse {
            uid: uid.into(),
            allowed: false,
            status: Some(Status {
                message: Some(message),
                code: Some(code),
                details: None,
            }),
            ..Default::default()
        }
    }

    /// What policy-server answers when the policy itself failed (trap, deadline, bad answer).
    pub fn internal_error(uid: &str, message: impl std::fmt::Display) -> Self {
        Self::reject(uid, format!("internal server error: {message}"), 500)
    }

    /// policy-server's translation of a policy's answer: the patch is the JSON Patch
    /// diff from `request.object` to `mutated_object`, base64-encoded; no diff, no patch.
    pub fn from_answer(
        uid: &str,
        object: Option<&Value>,
        answer: &PolicyAnswer,
    ) -> serde_json::Result<Self> {
        let object = object.filter(|o| !o.is_null());
        if answer.mutated_object.is_some() && object.is_none() {
            return Ok(AdmissionResponse {
                uid: uid.into(),
                allowed: false,
                status: Some(Status {
                    message: Some(DELETE_MUTATION_MESSAGE.into()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let patch = match (&answer.mutated_object, object) {
            (Some(mutated), Some(original)) => {
                let diff = json_patch::diff(original, mutated);
                if diff.0.is_empty() {
                    None
                } else {
                    let text = serde_json::to_string(&diff)?;
                    Some(STANDARD.encode(text))
                }
            }
            _ => None,
        };
        let status = (answer.message.is_some() || answer.code.is_some()).then(|| Status {
            message: answer.message.clone(),
            code: answer.code,
            details: None,
        });
        Ok(AdmissionResponse {
            uid: uid.into(),
            allowed: answer.accepted,
            patch_type: patch.as_ref().map(|_| "JSONPatch".to_string()),
            patch,
            status,
            audit_annotations: answer.audit_annotations.clone(),
            warnings: answer.warnings.clone(),
        })
    }

    /// The decoded JSON Patch, if any.
    pub fn decoded_patch(&self) -> anyhow::Result<Option<json_patch::Patch>> {
        let Some(patch) = &self.patch else {
            return Ok(None);
        };
        let bytes = STANDARD.decode(patch).context("the patch is not base64")?;
        Ok(Some(
            serde_json::from_slice(&bytes).context("the patch is not a JSON Patch")?,
        ))
    }

    /// `object` with this response's patch applied.
    pub fn patched(&self, object: &Value) -> anyhow::Result<Value> {
        let mut out = object.clone();
        if let Some(patch) = self.decoded_patch()? {
            json_patch::patch(&mut out, &patch)
                .context("the patch does not apply to the object")?;
        }
        Ok(out)
    }
}

pub fn review_response(response: &AdmissionResponse) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn responses_follow_policy_server() {
        let object = json!({"metadata": {"name": "p"}});
        let accept = PolicyAnswer {
            accepted: true,
            message: None,
            code: None,
            mutated_object: None,
            audit_annotations: None,
            warnings: None,
        };
        let r = AdmissionResponse::from_answer("u", Some(&object), &accept).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"uid":"u","allowed":true,"auditAnnotations":null,"warnings":null}"#
        );

        let same = PolicyAnswer {
            mutated_object: Some(object.clone()),
            ..accept.clone()
        };
        assert!(
            AdmissionResponse::from_answer("u", Some(&object), &same)
                .unwrap()
                .patch
                .is_none()
        );

        let mut changed = object.clone();
        changed["metadata"]["labels"] = json!({"a": "b"});
        let mutate = PolicyAnswer {
            mutated_object: Some(changed.clone()),
            ..accept.clone()
        };
        let r = AdmissionResponse::from_answer("u", Some(&object), &mutate).unwrap();
        assert_eq!(r.patch_type.as_deref(), Some("JSONPatch"));
        let expected =
            STANDARD.encode(r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#);
        assert_eq!(r.patch.as_deref(), Some(expected.as_str()));
        assert_eq!(r.patched(&object).unwrap(), changed);

        let on_delete = AdmissionResponse::from_answer("u", Some(&Value::Null), &mutate).unwrap();
        assert!(!on_delete.allowed);
        assert_eq!(
            on_delete.status.unwrap().message.as_deref(),
            Some(DELETE_MUTATION_MESSAGE)
        );

        let reject = PolicyAnswer {
            accepted: false,
            message: Some("no".into()),
            code: Some(403),
            ..accept
        };
        let r = AdmissionResponse::from_answer("u", Some(&object), &reject).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"uid":"u","allowed":false,"status":{"message":"no","code":403},"auditAnnotations":null,"warnings":null}"#
        );
    }
}
