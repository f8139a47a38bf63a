//! sidecar-lifecycle-policy on the Istio corpus, and the three mutating policies composed
//! in every order, through sidecarctl on the compiled modules.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn lifecycle() -> PathBuf {
    module("wasm/sidecar-lifecycle-policy.wasm")
}

fn ordering() -> PathBuf {
    module("wasm/sidecar-ordering-policy.wasm")
}

fn evaluate(policy: &Path, request: &Path, settings: &str) -> Value {
    let out = run(&[
        "run",
        "-p",
        p(policy),
        "-r",
        p(request),
        "--settings-json",
        settings,
    ]);
    assert!(
        out.status.success(),
        "{}: {}",
        request.display(),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The request's object after `policy` (unchanged when it is not patched); panics on a
/// rejection.
fn apply(policy: &Path, settings: &str, request: &Value, scratch: &Path) -> Value {
    let file = scratch.join("request.json");
    std::fs::write(&file, serde_json::to_vec(request).unwrap()).unwrap();
    let response = evaluate(policy, &file, settings);
    assert_eq!(
        response["allowed"],
        true,
        "{} rejected: {response}",
        policy.display()
    );
    let mut object = request["object"].clone();
    if let Some(patch) = response["patch"].as_str() {
        let patch: json_patch::Patch =
            serde_json::from_slice(&STANDARD.decode(patch).unwrap()).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

fn corpus_entries(dir: &Path) -> Vec<Value> {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    index["entries"].as_array().unwrap().clone()
}

#[test]
fn istio_corpus_legacy_jobs_caught_or_converted_native_accepted() {
    let Some(dir) = corpus() else { return };
    let mut caught = 0;
    for entry in corpus_entries(&dir) {
        let name = entry["name"].as_str().unwrap();
        let path = dir.join(entry["injected_request"].as_str().unwrap());
        let legacy = entry["injected_proxy"] == "legacy"
            && entry["injected"]["containers"].as_array().unwrap().len() > 1;
        let converted = evaluate(&lifecycle(), &path, "{}");
        assert_eq!(converted["allowed"], true, "{name}: {converted}");
        assert_eq!(
            converted.get("patch").is_some(),
            legacy,
            "{name}: {converted}"
        );

        let strict = evaluate(&lifecycle(), &path, r#"{"convert": false}"#);
        if legacy {
            caught += 1;
            assert_eq!(strict["allowed"], false, "{name}");
            let message = strict["status"]["message"].as_str().unwrap();
            assert!(
                message.contains(
                    "legacy-sidecar: sidecar \"istio-proxy\" runs as a regular container"
                ),
                "{name}: {message}"
            );
            let job = entry["is_job"] == true;
            assert_eq!(
                message.contains("the Job would never complete"),
                job,
                "{name}: {message}"
            );
        } else {
            assert_eq!(strict["allowed"], true, "{name}: {strict}");
        }
    }
    assert!(caught >= 8, "{caught}");
}

#[test]
fn the_mutating_policies_commute() {
    let scratch = tempfile::tempdir().unwrap();
    let mut requests: Vec<Value> = Vec::new();
    for example in ["istio-legacy-job.yaml", "native-sidecar-dag.yaml"] {
        let text = std::fs::read_to_string(root().join("examples/pods").join(example)).unwrap();
        let object: Value = serde_yaml_ng::from_str(&text).unwrap();
        requests.push(serde_json::json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "operation": "CREATE", "object": object}));
    }
    for name in [
        "ordering/legacy-post.yaml",
        "ordering/cronjob.yaml",
        "lifecycle/optional.yaml",
        "resources/istio-guaranteed.yaml",
        "resources/linkerd-guaranteed.yaml",
        "resources/partial-sidecar.yaml",
    ] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let object: Value = serde_yaml_ng::from_str(&text).unwrap();
        requests.push(serde_json::json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "operation": "CREATE", "object": object}));
    }
    if let Some(dir) = corpus() {
        for entry in corpus_entries(&dir) {
            let path = dir.join(entry["injected_request"].as_str().unwrap());
            requests.push(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
        }
    }
    // The three mutating policies, with the settings a cluster would give them.
    let resources = module("wasm/sidecar-resources-policy.wasm");
    let policies: [(&Path, &str); 3] = [
        (&ordering(), "{}"),
        (&lifecycle(), "{}"),
        (
            &resources,
            r#"{"defaults": [{"image": "*/proxyv2", "requests": {"cpu": "100m", "memory": "128Mi"}}], "rules": {"pod-level": "warn", "qos": "warn"}}"#,
        ),
    ];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for request in &requests {
        let results: Vec<Value> = orders
            .iter()
            .map(|order| {
                let mut current = request.clone();
                for &i in order {
                    let (policy, settings) = policies[i];
                    current["object"] = apply(policy, settings, &current, scratch.path());
                }
                current["object"].clone()
            })
            .collect();
        for (order, result) in orders.iter().zip(&results).skip(1) {
            assert_eq!(
                result, &results[0],
                "{}: order {order:?} reached another pod than {:?}",
                request["object"]["metadata"]["name"], orders[0]
            );
        }
    }
}
