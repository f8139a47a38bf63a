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
