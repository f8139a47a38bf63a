//! sidecar-ordering-policy on every workload of the Istio corpus, through sidecarctl:
//! native injections pass untouched, legacy ones become native, and the result is stable.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};

fn policy() -> std::path::PathBuf {
    module("wasm/sidecar-ordering-policy.wasm")
}

fn evaluate(path: &std::path::Path) -> Value {
    let out = run(&["run", "-p", p(&policy()), "-r", p(path)]);
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn istio_corpus_native_untouched_legacy_converted() {
    let Some(dir) = corpus() else { return };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut converted = 0;
    for entry in index["entries"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let path = dir.join(entry["injected_request"].as_str().unwrap());
        let request: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let response = evaluate(&path);
        assert_eq!(response["allowed"], true, "{name}: {response}");
        let apps = entry["injected"]["containers"].as_array().unwrap();
        // `sidecar.istio.io/nativeSidecar: "false"` keeps the legacy layout: left as it is.
        let opted_out = pod_metadata(&request["object"])["annotations"]["sidecar.istio.io/nativeSidecar"]
            == "false";
        let legacy = entry["injected_proxy"] == "legacy" && apps.len() > 1 && !opted_out;
        if !legacy {
            assert!(
                response.get("patch").is_none(),
                "{name}: unexpected patch {response}"
            );
            continue;
        }
        converted += 1;
        let patch: json_patch::Patch = serde_json::from_slice(
            &STANDARD
                .decode(response["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut object = request["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap();
        let spec = pod_spec(&object);
        let init = spec["initContainers"].as_array().unwrap();
        let proxy = init
            .iter()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap_or_else(|| panic!("{name}: {spec}"));
        assert_eq!(proxy["restartPolicy"], "Always", "{name}");
        assert!(
            !names(&spec["containers"]).contains(&"istio-proxy".to_string()),
            "{name}"
        );
        // Everything but the move is as Istio wrote it, plus what Istio gives a native
        // proxy: its startupProbe and preStop drain where missing, no postStart wait.
        let mut original_proxy = pod_spec(&request["object"])["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap()
            .clone();
        original_proxy["restartPolicy"] = json!("Always");
        let istio = sidecar_model::Mesh::Istio;
        if original_proxy.get("startupProbe").is_none() {
            original_proxy["startupProbe"] = istio.startup_probe(15021);
        }
        let hooks = original_proxy
            .as_object_mut()
            .unwrap()
            .entry("lifecycle")
            .or_insert_with(|| json!({}));
        let command = &hooks["postStart"]["exec"]["command"];
        if command[0] == "pilot-agent" && command[1] == "wait" {
            hooks.as_object_mut().unwrap().remove("postStart");
        }
        if hooks.get("preStop").is_none() {
            hooks["preStop"] = istio.pre_stop().unwrap();
        }
        assert_eq!(proxy, &original_proxy, "{name}");
        // The proxy starts after Istio's own init steps, and before the app.
        let order = response["auditAnnotations"]["sidecars.dev/start-order"]
            .as_str()
            .unwrap();
        let position = |n: &str| order.split(',').position(|x| x == n).unwrap();
        for app in names(&spec["containers"]) {
            assert!(position("istio-proxy") < position(&app), "{name}: {order}");
        }
        // Run again on the output: nothing more to do.
        let mut again = request.clone();
        again["object"] = object;
        let file = scratch.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec(&again).unwrap()).unwrap();
        let second = evaluate(&file);
        assert_eq!(second["allowed"], true, "{name}");
        assert!(
            second.get("patch").is_none(),
            "{name}: second run patched {second}"
        );
    }
    assert!(
        converted >= 8,
        "only {converted} legacy workloads converted"
    );
}

#[test]
fn istio_inputs_before_injection_are_left_alone() {
    let Some(dir) = corpus() else { return };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    for entry in index["entries"].as_array().unwrap() {
        let path = dir.join(entry["input_request"].as_str().unwrap());
        let response = evaluate(&path);
        assert_eq!(response["allowed"], true, "{}", path.display());
        if entry["input"]["proxy"] == "none" {
            assert!(
                response.get("patch").is_none(),
                "{}: {response}",
                path.display()
            );
        }
    }
}
