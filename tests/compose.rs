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
        // `sidecar.istio.io/nativeSidecar: "false"` keeps the legacy layout on purpose.
        let request: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let opted_out = pod_metadata(&request["object"])["annotations"]["sidecar.istio.io/nativeSidecar"]
            == "false";
        let converted = evaluate(&lifecycle(), &path, "{}");
        assert_eq!(converted["allowed"], true, "{name}: {converted}");
        assert_eq!(
            converted.get("patch").is_some(),
            legacy && !opted_out,
            "{name}: {converted}"
        );

        let strict = evaluate(&lifecycle(), &path, r#"{"convert": false}"#);
        let job = entry["is_job"] == true;
        if legacy {
            caught += 1;
            // An opt-out is the owner's choice where it harms nothing: a warning, the
            // same words.
            let warned_only = opted_out && !job;
            assert_eq!(strict["allowed"], warned_only, "{name}: {strict}");
            let message = if warned_only {
                strict["warnings"][0].as_str().unwrap()
            } else {
                strict["status"]["message"].as_str().unwrap()
            };
            assert!(
                message.contains(
                    "legacy-sidecar: sidecar \"istio-proxy\" runs as a regular container"
                ),
                "{name}: {message}"
            );
            if opted_out {
                assert!(
                    message.contains("sidecar.istio.io/nativeSidecar: \"false\" keeps it so"),
                    "{name}: {message}"
                );
            }
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

fn object_request(object: &Value) -> Value {
    serde_json::json!({"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": object["kind"]},
        "operation": "CREATE", "object": object})
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn legacy_mesh_fixtures_convert_to_what_the_mesh_injects_natively() {
    let scratch = tempfile::tempdir().unwrap();
    for (legacy, native) in [
        (
            "mesh/istio-legacy-deployment.yaml",
            "mesh/istio-native-deployment.yaml",
        ),
        (
            "mesh/linkerd-legacy-deployment.yaml",
            "mesh/linkerd-native-deployment.yaml",
        ),
    ] {
        let converted = apply(
            &lifecycle(),
            "{}",
            &object_request(&yaml(&fixture(legacy))),
            scratch.path(),
        );
        let native = yaml(&fixture(native));
        assert_eq!(pod_spec(&converted), pod_spec(&native), "{legacy}");
        // The native one is left as the mesh made it.
        let again = apply(&lifecycle(), "{}", &object_request(&native), scratch.path());
        assert_eq!(again, native, "{native}");
    }
}

/// Istio's own test data injects each workload twice, by an Istio before native sidecars
/// (`*-old-version`) and by a current one: converting the first must give the second's
/// init containers, in order, and its proxy, field for field.
#[test]
fn istio_corpus_legacy_layouts_convert_to_istio_native_ones() {
    let Some(dir) = corpus() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let entries = corpus_entries(&dir);
    let read = |entry: &Value| -> Value {
        let path = dir.join(entry["injected_request"].as_str().unwrap());
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut pairs = 0;
    for entry in &entries {
        let name = entry["name"].as_str().unwrap();
        let Some(current) = name.strip_suffix("-old-version") else {
            continue;
        };
        let Some(native) = entries
            .iter()
            .find(|e| e["name"] == current && e["injected_proxy"] == "native")
        else {
            continue;
        };
        let converted = apply(&lifecycle(), "{}", &read(entry), scratch.path());
        let native = read(native)["object"].clone();
        let names = |spec: &Value, list: &str| -> Vec<String> {
            spec[list]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        let (got, want) = (pod_spec(&converted), pod_spec(&native));
        assert_eq!(
            names(got, "initContainers"),
            names(want, "initContainers"),
            "{name}"
        );
        assert_eq!(
            names(got, "containers"),
            names(want, "containers"),
            "{name}"
        );
        let proxy = |spec: &Value| {
            spec["initContainers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "istio-proxy")
                .cloned()
        };
        assert_eq!(proxy(got), proxy(want), "{name}");
        pairs += 1;
    }
    assert!(pairs >= 8, "{pairs}");
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
