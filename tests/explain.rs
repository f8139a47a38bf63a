//! `sidecarctl explain` on the Istio corpus and on the examples: what the model sees must be
//! what Istio injected.

mod common;

use common::*;
use serde_json::Value;

fn explain(path: &std::path::Path) -> Value {
    let out = run(&["explain", p(path), "-o", "json"]);
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn container<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {e}"))
}

fn codes(e: &Value) -> Vec<String> {
    e["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn istio_injections_are_typed_as_istio_meant_them() {
    let Some(dir) = corpus() else { return };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let entries = index["entries"].as_array().unwrap();
    let (mut legacy, mut native) = (0, 0);
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        let e = explain(&dir.join(entry["injected_request"].as_str().unwrap()));
        for key in [
            "containers",
            "startOrder",
            "stopOrder",
            "effectiveRequests",
            "effectiveLimits",
            "unboundedLimits",
            "qosClass",
            "findings",
        ] {
            assert!(e.get(key).is_some(), "{name}: no {key}");
        }
        let injected = &entry["injected"];
        let names = |k: &str| -> Vec<String> {
            injected[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let restartable = names("restartableInitContainers");
        for init in names("initContainers") {
            let c = container(&e, &init);
            assert_eq!(c["list"], "initContainers", "{name}/{init}");
            let expected = if restartable.contains(&init) {
                "Sidecar"
            } else {
                "Init"
            };
            assert_eq!(c["type"], expected, "{name}/{init}");
        }
        let apps = names("containers");
        let run_to_completion = entry["is_job"] == true
            || matches!(
                injected["podRestartPolicy"].as_str(),
                Some("Never") | Some("OnFailure")
            );
        assert_eq!(e["runsToCompletion"], run_to_completion, "{name}");
        let legacy_findings: Vec<&Value> = e["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "legacySidecar")
            .collect();
        match entry["injected_proxy"].as_str().unwrap() {
            "legacy" => {
                legacy += 1;
                let proxy = container(&e, "istio-proxy");
                assert_eq!(proxy["list"], "containers", "{name}");
                if apps.len() == 1 {
                    // A gateway: the proxy is the application.
                    assert_eq!(proxy["type"], "Standard", "{name}");
                    assert!(legacy_findings.is_empty(), "{name}");
                } else {
                    assert_eq!(proxy["type"], "Sidecar", "{name}");
                    assert_eq!(legacy_findings.len(), 1, "{name}: {legacy_findings:?}");
                    let message = legacy_findings[0]["message"].as_str().unwrap();
                    assert_eq!(
                        message.contains("never completes"),
                        run_to_completion,
                        "{name}: {message}"
                    );
                    // A proxy its pod keeps legacy stays where Istio put it; otherwise the
                    // model knows the order the proxy should have: before the app.
                    let request = std::fs::read_to_string(
                        dir.join(entry["injected_request"].as_str().unwrap()),
                    )
                    .unwrap();
                    if request.contains(r#""sidecar.istio.io/nativeSidecar":"false""#)
                        || request.contains(r#""sidecar.istio.io/nativeSidecar": "false""#)
                    {
                        assert!(e.get("requiredStartOrder").is_none(), "{name}: {e}");
                    } else {
                        let required = e["requiredStartOrder"].as_array().unwrap();
                        let pos = |n: &str| required.iter().position(|v| v == n).unwrap();
                        for app in apps.iter().filter(|a| *a != "istio-proxy") {
                            assert!(pos("istio-proxy") < pos(app), "{name}: {required:?}");
                        }
                    }
                }
            }
            "native" => {
                native += 1;
                assert!(legacy_findings.is_empty(), "{name}");
                for app in &apps {
                    assert_eq!(container(&e, app)["type"], "Standard", "{name}/{app}");
                }
                // Sidecars stop last, the first started last of all.
                let stop = e["stopOrder"].as_array().unwrap();
                assert_eq!(
                    stop.last().unwrap(),
                    &Value::String(restartable[0].clone()),
                    "{name}"
                );
            }
            _ => {
                assert!(!codes(&e).contains(&"legacySidecar".to_string()), "{name}");
            }
        }
        // The request before injection explains too.
        explain(&dir.join(entry["input_request"].as_str().unwrap()));
    }
    assert!(
        legacy >= 10 && native >= 20,
        "legacy {legacy}, native {native}"
    );
}

#[test]
fn explain_text_reads_like_a_report() {
    let Some(dir) = corpus() else { return };
    let out = run(&[
        "explain",
        p(&dir.join("job-old-version.injected.request.json")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for part in [
        "Job/pi (runs to completion)",
        "containers[1]",
        "istio-proxy",
        "known sidecar (image */proxyv2)",
        "start order: istio-init → pi → istio-proxy",
        "required:    istio-init → istio-proxy → pi",
        "QoS class: ",
        "[legacySidecar]",
        "never completes",
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
}

#[test]
fn explain_reads_stdin_and_reviews() {
    let pod = std::fs::read_to_string(fixture("pod.yaml")).unwrap();
    let out = run_with_stdin(&["explain", "-", "-o", "json"], &pod);
    assert!(out.status.success(), "{}", stderr(&out));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["qosClass"], "BestEffort");
    assert_eq!(e["startOrder"], serde_json::json!(["app"]));
    let review = run(&["explain", p(&fixture("delete-review.json"))]);
    // A DELETE carries no object: nothing to explain, and it says so.
    assert_eq!(review.status.code(), Some(2));
    assert!(
        stderr(&review).contains("holds no pod spec"),
        "{}",
        stderr(&review)
    );
}

/// One answer: explain's effective requests and limits are the resources policy's audit
/// annotations, for every example pod (an unset limit reads `unbounded` in both).
#[test]
fn explain_and_the_resources_policy_give_the_same_figures() {
    let policy = module("wasm/sidecar-resources-policy.wasm");
    let mut compared = 0;
    for entry in std::fs::read_dir(root().join("examples/pods")).unwrap() {
        let path = entry.unwrap().path();
        let e = explain(&path);
        let out = run(&["run", "-p", p(&policy), "-r", p(&path)]);
        let response: Value = serde_json::from_slice(&out.stdout).unwrap();
        // A pod the policy changes is audited as changed: only unchanged ones compare.
        let Some(audit) = response["auditAnnotations"]
            .as_object()
            .filter(|_| response["patch"].is_null())
        else {
            continue;
        };
        for (key, field) in [
            ("sidecars.dev/effective-requests", "effectiveRequests"),
            ("sidecars.dev/effective-limits", "effectiveLimits"),
        ] {
            let figures: std::collections::BTreeMap<&str, &str> = audit[key]
                .as_str()
                .unwrap()
                .split(',')
                .filter(|s| !s.is_empty())
                .filter_map(|pair| pair.split_once('='))
                .collect();
            for (resource, value) in figures {
                assert_eq!(
                    e[field][resource],
                    value,
                    "{}: {field}.{resource}",
                    path.display()
                );
            }
        }
        compared += 1;
    }
    assert!(compared >= 3, "{compared} pods compared");
}

/// `cpu: 1` written as a number is the quantity the API server reads; a negative one is
/// refused, once, naming the field, by explain and by the resources policy alike.
#[test]
fn quantities_read_as_the_api_server_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let pod = |resources: &str| {
        let path = dir.path().join("pod.yaml");
        std::fs::write(
            &path,
            format!("kind: Pod\nmetadata: {{name: a}}\nspec: {{containers: [{{name: app, image: x, resources: {resources}}}]}}\n"),
        )
        .unwrap();
        path
    };
    let numbers = explain(&pod("{requests: {cpu: 1, memory: 0.5}, limits: {cpu: 2}}"));
    assert_eq!(numbers["effectiveRequests"]["cpu"], "1");
    assert_eq!(numbers["effectiveRequests"]["memory"], "500m");
    assert_eq!(numbers["effectiveLimits"]["cpu"], "2");
    let negative = pod("{limits: {cpu: -5}}");
    let out = run(&["explain", p(&negative)]);
    assert_eq!(out.status.code(), Some(2));
    let said = "containers[0] (app) resources.limits.cpu: -5 must be greater than or equal to 0";
    assert_eq!(
        stderr(&out).trim(),
        format!("error: {}: {said}", negative.display())
    );
    let policy = module("wasm/sidecar-resources-policy.wasm");
    let refused = run(&["run", "-p", p(&policy), "-r", p(&negative)]);
    let response: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], said);
}

/// One wording: explain says a cycle as the ordering policy refuses it.
#[test]
fn explain_says_a_cycle_as_the_ordering_policy_does() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("cycle.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n  annotations:\n    after.sidecars.dev/a: b\n    after.sidecars.dev/b: a\nspec:\n  initContainers:\n  - {name: a, image: x, restartPolicy: Always}\n  - {name: b, image: y, restartPolicy: Always}\n  containers:\n  - {name: app, image: z}\n",
    )
    .unwrap();
    let explained = explain(&pod);
    let said = explained["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "startCycle")
        .unwrap_or_else(|| panic!("{explained}"))["message"]
        .clone();
    let policy = module("wasm/sidecar-ordering-policy.wasm");
    let out = run(&["run", "-p", p(&policy), "-r", p(&pod)]);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains(said.as_str().unwrap()),
        "{said} / {response}"
    );
}
