//! Admission: what goes into a policy and what comes back, in the shapes Kubernetes and
//! Kubewarden's policy-server use.

use anyhow::{Context, anyhow, bail};
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

/// How an engine applies a policy's verdict (policies.yml `policyMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Protect,
    Monitor,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Protect => "protect",
            PolicyMode::Monitor => "monitor",
        }
    }
}

/// What a policy's configuration in policies.yml changes about its answers.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub mode: PolicyMode,
    pub allowed_to_mutate: bool,
    /// Replaces the message of a rejection; the policy's own goes to `details.causes`.
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

    /// policy-server's last step for `/validate`: the custom message, then the mutation
    /// guard (protect) or the unconditional accept (monitor).
    pub fn constrained(mut self, policy_id: &str, constraints: &Constraints) -> Self {
        if let (false, Some(custom)) = (self.allowed, &constraints.message) {
            let mut status = self.status.take().unwrap_or_default();
            let mut details = status.details.take().unwrap_or_default();
            details.causes.push(StatusCause {
                message: Some(status.message.take().unwrap_or_default()),
            });
            status.message = Some(custom.clone());
            status.details = Some(details);
            self.status = Some(status);
        }
        match constraints.mode {
            PolicyMode::Protect if self.patch.is_some() && !constraints.allowed_to_mutate => {
                AdmissionResponse {
                    allowed: false,
                    status: Some(Status {
                        message: Some(format!(
                            "Request rejected by policy {policy_id}. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
                        )),
                        ..Default::default()
                    }),
                    patch: None,
                    patch_type: None,
                    ..self
                }
            }
            PolicyMode::Protect => self,
            PolicyMode::Monitor => AdmissionResponse {
                allowed: true,
                patch: None,
                patch_type: None,
                status: None,
                ..self
            },
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

/// Reads JSON or YAML (one document).
pub fn parse_document(text: &str, source: &str) -> anyhow::Result<Value> {
    // An editor's byte-order mark is not part of the document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text).with_context(|| format!("{source}: invalid JSON"));
    }
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).with_context(|| format!("{source}: invalid YAML"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    match docs.len() {
        0 => bail!("{source}: empty document"),
        1 => Ok(docs.remove(0)),
        n => bail!("{source}: {n} YAML documents; give one object or request per file"),
    }
}

/// An AdmissionRequest from an AdmissionReview, a bare AdmissionRequest, or a bare
/// Kubernetes object (wrapped into a CREATE request).
pub fn to_request(document: Value) -> anyhow::Result<Value> {
    let Value::Object(map) = &document else {
        bail!(
            "expected an AdmissionReview, an AdmissionRequest or a Kubernetes object, found {}",
            kind_of(&document)
        );
    };
    if map.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
        let request = map
            .get("request")
            .filter(|r| r.is_object())
            .ok_or_else(|| anyhow!("the AdmissionReview has no request"))?;
        return Ok(request.clone());
    }
    // An AdmissionRequest's kind is a GroupVersionKind object, an object's a string.
    if map.get("kind").is_some_and(Value::is_object)
        && (map.contains_key("operation") || map.contains_key("object"))
    {
        return Ok(document);
    }
    if let Some(kind) = map.get("kind").and_then(Value::as_str) {
        // `kubectl get -o yaml` writes a List; the API server admits each object alone.
        if kind.ends_with("List") && map.get("items").is_some_and(Value::is_array) {
            bail!(
                "a {kind} holds several objects, and the API server admits each one alone: give one object"
            );
        }
        return Ok(wrap_object(document));
    }
    bail!(
        "expected an AdmissionReview, an AdmissionRequest or a Kubernetes object (with apiVersion and kind)"
    )
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A CREATE request for `object`, as the API server would send it.
pub fn wrap_object(object: Value) -> Value {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let namespace = object
        .pointer("/metadata/namespace")
        .cloned()
        .unwrap_or_else(|| Value::String("default".into()));
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(&kind)});
    // A stable uid, so the same input gives the same answer.
    let digest = sha2::Sha256::digest(serde_json::to_vec(&object).unwrap_or_default());
    let h = hex::encode(digest);
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "sidecarctl", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    })
}

use sha2::Digest as _;

/// The resource name the API server uses for a kind (`Pod` → `pods`, `Policy` → `policies`).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with('x') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// An admission.k8s.io/v1 AdmissionReview around a request or a response.
pub fn review(request: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

pub fn review_response(response: &AdmissionResponse) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The payload of `validate`: `{"request": …, "settings": …}`.
pub fn validate_payload(request: &Value, settings: &Value) -> serde_json::Result<Vec<u8>> {
    // Serialized from borrows: `json!` would copy the whole request into a new value first.
    #[derive(Serialize)]
    struct Payload<'a> {
        request: &'a Value,
        settings: &'a Value,
    }
    serde_json::to_vec(&Payload { request, settings })
}

/// The request's uid, or empty.
pub fn uid_of(request: &Value) -> &str {
    request
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        for (kind, resource) in [
            ("Pod", "pods"),
            ("Deployment", "deployments"),
            ("ReplicaSet", "replicasets"),
            ("Policy", "policies"),
            ("Gateway", "gateways"),
            ("Ingress", "ingresses"),
        ] {
            assert_eq!(plural(kind), resource);
        }
    }

    #[test]
    fn inputs_of_every_shape_become_requests() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
        let wrapped = to_request(pod.clone()).unwrap();
        assert_eq!(wrapped["operation"], "CREATE");
        assert_eq!(
            wrapped["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(wrapped["resource"]["resource"], "pods");
        assert_eq!(wrapped["object"], pod);
        assert_eq!(to_request(pod.clone()).unwrap()["uid"], wrapped["uid"]);
        let apps = to_request(json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap();
        assert_eq!(apps["kind"]["group"], "apps");
        assert_eq!(to_request(wrapped.clone()).unwrap(), wrapped);
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": wrapped});
        assert_eq!(to_request(review).unwrap()["object"], pod);
        for bad in [
            json!([]),
            json!("x"),
            json!({"apiVersion": "v1"}),
            json!({"kind": "AdmissionReview"}),
        ] {
            assert!(to_request(bad).is_err());
        }
    }

    #[test]
    fn documents_in_json_or_yaml() {
        assert_eq!(parse_document("{\"a\": 1}", "x").unwrap(), json!({"a": 1}));
        assert_eq!(parse_document("a: 1\n", "x").unwrap(), json!({"a": 1}));
        assert_eq!(parse_document("---\na: 1\n", "x").unwrap(), json!({"a": 1}));
        assert!(
            parse_document("a: 1\n---\nb: 2\n", "x")
                .unwrap_err()
                .to_string()
                .contains("2 YAML documents")
        );
        assert!(
            parse_document("a: [", "f.yaml")
                .unwrap_err()
                .to_string()
                .contains("f.yaml")
        );
        assert!(parse_document("", "x").is_err());
    }

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

    #[test]
    fn constraints_follow_policy_server() {
        let mutated = AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            patch_type: Some("JSONPatch".into()),
            patch: Some("W10=".into()),
            warnings: Some(vec!["w".into()]),
            ..Default::default()
        };
        let rejected = AdmissionResponse::reject("u", "no".into(), 403);
        let protect = Constraints {
            mode: PolicyMode::Protect,
            allowed_to_mutate: true,
            message: None,
        };
        assert_eq!(mutated.clone().constrained("p", &protect), mutated);
        assert_eq!(rejected.clone().constrained("p", &protect), rejected);

        let no_mutation = Constraints {
            allowed_to_mutate: false,
            ..protect.clone()
        };
        let r = mutated.clone().constrained("p", &no_mutation);
        assert!(!r.allowed && r.patch.is_none() && r.patch_type.is_none());
        assert_eq!(r.warnings, mutated.warnings);
        assert_eq!(
            r.status.unwrap().message.unwrap(),
            "Request rejected by policy p. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
        );

        let monitor = Constraints {
            mode: PolicyMode::Monitor,
            ..no_mutation.clone()
        };
        for response in [mutated.clone(), rejected.clone()] {
            let r = response.constrained("p", &monitor);
            assert!(r.allowed && r.patch.is_none() && r.status.is_none());
        }

        let custom = Constraints {
            message: Some("ask the platform team".into()),
            ..protect
        };
        let r = rejected.constrained("p", &custom);
        assert_eq!(
            serde_json::to_value(r.status.unwrap()).unwrap(),
            json!({"message": "ask the platform team", "code": 403, "details": {"causes": [{"message": "no"}]}})
        );
        assert_eq!(mutated.clone().constrained("p", &custom), mutated);
    }
}
