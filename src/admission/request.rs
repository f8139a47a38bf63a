//! What goes into a policy: documents read as JSON or YAML, turned into the
//! AdmissionRequest the API server would send, and the waPC payload.

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
    admission_request::request_for(object, admission_request::Operation::Create)
}

pub use admission_request::plural;

/// An admission.k8s.io/v1 AdmissionReview around a request or a response.
pub fn review(request: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
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
    use serde_json::json;

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
}
