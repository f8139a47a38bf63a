//! sidecar-resources-policy on every workload of the Istio corpus: the figures the wasm
//! policy reports are the ones `sidecarctl explain` computes natively, and its fixes are
//! stable.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::Value;

const SETTINGS: &str = r#"{"defaults": [{"image": "*/proxyv2", "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}]}"#;

fn evaluate(request: &std::path::Path) -> Value {
    let policy = module("wasm/sidecar-resources-policy.wasm");
    let out = run(&[
        "run",
        "-p",
        p(&policy),
        "-r",
        p(request),
        "--settings-json",
        SETTINGS,
    ]);
    assert!(
        out.status.success(),
        "{}: {}",
        request.display(),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn istio_corpus_figures_match_explain_and_fixes_are_stable() {
    let Some(dir) = corpus() else { return };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for entry in index["entries"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let path = dir.join(entry["injected_request"].as_str().unwrap());
        let response = evaluate(&path);
        let audit = &response["auditAnnotations"];
        let explained = run(&["explain", p(&path), "-o", "json"]);
        let explained: Value = serde_json::from_slice(&explained.stdout).unwrap();
        let expected: Vec<String> = explained["effectiveRequests"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        if response.get("patch").is_none() {
            assert_eq!(
                audit["sidecars.dev/effective-requests"],
                expected.join(","),
                "{name}"
            );
            assert_eq!(
                audit["sidecars.dev/qos-class"], explained["qosClass"],
                "{name}"
            );
        }
        if response["allowed"] == false {
            assert!(
                !response["status"]["message"].as_str().unwrap().is_empty(),
                "{name}"
            );
            continue;
        }
        if let Some(patch) = response["patch"].as_str() {
            let request: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let patch: json_patch::Patch =
                serde_json::from_slice(&STANDARD.decode(patch).unwrap()).unwrap();
            let mut again = request.clone();
            json_patch::patch(&mut again["object"], &patch).unwrap();
            let file = scratch.path().join(format!("{name}.json"));
            std::fs::write(&file, serde_json::to_vec(&again).unwrap()).unwrap();
            let second = evaluate(&file);
            assert_eq!(second["allowed"], true, "{name}");
            assert!(
                second.get("patch").is_none(),
                "{name}: not idempotent: {second}"
            );
        }
    }
}
