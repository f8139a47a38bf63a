//! The playground's view of the model, for the page through wasm-bindgen: what the
//! model sees in a pod (types and reasons, start and stop order, the graph with where each
//! edge comes from, resources, QoS, findings) for the input and for the final pod. The
//! policies themselves run in the page as the shipped `.wasm` modules, not through here.
//! Every function takes and returns JSON text: the page keeps no Rust objects alive.

use serde::Serialize;
use serde_json::Value;
use sidecar_model::explain::{self, Explanation};
use sidecar_model::ordering::{self, GraphView};
use sidecar_model::{EdgeRule, KnownSidecarSettings, PodModel};
use wasm_bindgen::prelude::*;

/// A YAML or JSON document (the first of a stream) as JSON text, or why it does not read.
/// The AdmissionRequest `sidecarctl run` builds around `object` (JSON text), for
/// `operation` (CREATE, or UPDATE with the object as its own oldObject), as JSON text: the
/// page evaluates the very request the command line does.
#[wasm_bindgen(js_name = admissionRequest)]
pub fn admission_request(object: &str, operation: &str) -> Result<String, JsError> {
    let object: serde_json::Value =
        serde_json::from_str(object).map_err(|e| JsError::new(&format!("object: {e}")))?;
    let operation = admission_request::Operation::parse(operation)
        .ok_or_else(|| JsError::new(&format!("{operation:?} is not CREATE or UPDATE")))?;
    Ok(admission_request::request_for(object, operation).to_string())
}

#[wasm_bindgen(js_name = toJson)]
pub fn to_json(text: &str) -> Result<String, JsError> {
    read_document(text)
        .map(|v| v.to_string())
        .map_err(|e| JsError::new(&e))
}

/// The same, for native tests.
pub fn read_document(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Err("the input is empty: paste a Pod or a workload in YAML or JSON".into());
    }
    let first = serde_yaml_ng::Deserializer::from_str(text)
        .next()
        .ok_or("the input has no YAML document")?;
    let value: Value =
        serde::Deserialize::deserialize(first).map_err(|e| format!("not YAML or JSON: {e}"))?;
    if !value.is_object() {
        return Err("the input is not an object: paste a Pod or a workload".into());
    }
    Ok(value)
}

/// What the model sees, for the page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub explanation: Explanation,
    pub graph: GraphView,
}

/// `object` (JSON text) explained with the known-sidecar settings `known` and the ordering
/// policy's settings `ordering` (both JSON text, `{}` for none); `null` when the object
/// holds no pod.
#[wasm_bindgen]
pub fn explain(object: &str, known: &str, ordering: &str) -> Result<String, JsError> {
    view(object, known, ordering)
        .map(|v| serde_json::to_string(&v).unwrap_or_else(|_| "null".into()))
        .map_err(|e| JsError::new(&e))
}

/// The ordering policy's settings as far as the graph needs them; other fields are
/// that policy's to check.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OrderingEdges {
    edges: Vec<EdgeRule>,
}

/// [`explain`] for native tests.
pub fn view(object: &str, known: &str, ordering: &str) -> Result<Option<View>, String> {
    let object: Value = serde_json::from_str(object).map_err(|e| format!("object: {e}"))?;
    let known: KnownSidecarSettings =
        serde_json::from_str(known).map_err(|e| format!("knownSidecars: {e}"))?;
    known.validate()?;
    let known = known.resolve();
    // Only the edges matter here; the ordering policy itself checks the rest of its settings.
    let ordering: OrderingEdges =
        serde_json::from_str(ordering).map_err(|e| format!("ordering settings: {e}"))?;
    let Some(model) = PodModel::from_object(&object, &known).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    Ok(Some(View {
        explanation: explain::explain_model(&model, sidecar_model::KubeVersion::DEFAULT)
            .map_err(|e| e.to_string())?,
        graph: ordering::view(&model, &ordering.edges),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_read_and_bad_input_says_why() {
        let v =
            read_document("kind: Pod\nspec: {containers: [{name: app}]}\n---\nkind: x").unwrap();
        assert_eq!(v["kind"], "Pod");
        assert!(read_document("").unwrap_err().contains("empty"));
        assert!(
            read_document("kind: [")
                .unwrap_err()
                .starts_with("not YAML or JSON")
        );
        assert!(read_document("- a").unwrap_err().contains("not an object"));
    }

    #[test]
    fn a_legacy_job_is_explained_with_its_graph() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/pods/istio-legacy-job.yaml"
        ))
        .unwrap();
        let object = read_document(&text).unwrap().to_string();
        let v = view(&object, "{}", "{}").unwrap().unwrap();
        assert!(v.explanation.runs_to_completion);
        assert!(
            v.explanation
                .findings
                .iter()
                .any(|f| f.code == "legacySidecar")
        );
        assert!(v.graph.start_order.is_some());
        assert!(
            view(&object, r#"{"rulez": []}"#, "{}")
                .unwrap_err()
                .starts_with("knownSidecars")
        );
        assert!(
            view(r#"{"kind": "ConfigMap"}"#, "{}", "{}")
                .unwrap()
                .is_none()
        );
    }
}
