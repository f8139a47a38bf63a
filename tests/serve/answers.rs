//! What serve answers, held to policy-server and to `sidecarctl run`: every example policy
//! and corpus request, policy modes, the mutation guard, custom messages.

use super::*;

#[test]
fn the_example_policies_yml_is_what_scaffold_generates() {
    let config = yaml(&example_policies());
    for policy in POLICIES {
        let crate_name = format!("sidecar-{policy}-policy");
        let entry = &config[format!("clusterwide-sidecar-{policy}")];
        assert_eq!(
            entry["module"],
            format!("../../build/wasm/{crate_name}.wasm")
        );
        assert_eq!(entry["allowedToMutate"], true);
        assert_eq!(
            entry["settings"],
            yaml(&root().join(format!("examples/settings/{crate_name}.yaml"))),
            "{crate_name}: run make examples"
        );
    }
}

#[test]
fn every_policy_answers_over_https_as_run_does() {
    module("wasm/sidecar-ordering-policy.wasm");
    let server = Server::start_file(&example_policies());
    let pods: Vec<PathBuf> = std::fs::read_dir(root().join("examples/pods"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(pods.len() >= 5);
    let dir = tempfile::tempdir().unwrap();
    let mut patched = 0;
    for (n, pod_file) in pods.iter().enumerate() {
        let object = yaml(pod_file);
        let review = review_of(&object, &format!("00000000-0000-0000-0000-{n:012}"));
        let review_file = dir.path().join("review.json");
        std::fs::write(&review_file, review.to_string()).unwrap();
        for policy in POLICIES {
            let crate_name = format!("sidecar-{policy}-policy");
            let response =
                server.review(&format!("/validate/clusterwide-sidecar-{policy}"), &review);
            // The same module and settings through `run`: serve adds nothing in protect
            // mode with mutations allowed.
            let settings = root().join(format!("examples/settings/{crate_name}.yaml"));
            let out = run_policy(
                &module(&format!("wasm/{crate_name}.wasm")),
                &review_file,
                &["-s", p(&settings)],
            );
            let expected: Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(response, expected, "{policy} on {}", pod_file.display());
            if let Some(patch) = response["patch"].as_str() {
                assert_eq!(response["patchType"], "JSONPatch");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
                let mut mutated = object.clone();
                json_patch::patch(&mut mutated, &patch).unwrap();
                assert_ne!(mutated, object);
                patched += 1;
            }
        }
    }
    assert!(
        patched >= 3,
        "the examples exercise mutation ({patched} patches)"
    );
    // The built policies are annotated: loaded without a warning.
    let log = server.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains(" INFO policy loaded "))
            .count(),
        4,
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains(" WARN ")), "{log:?}");
}

#[test]
fn monitor_mode_mutation_guard_and_custom_message_follow_policy_server() {
    let server = Server::start(json!({
        "mutate": mutator(json!({"allowedToMutate": true})),
        "guarded": mutator(json!({})),
        "monitor": mutator(json!({"policyMode": "monitor", "allowedToMutate": true})),
        "custom": mutator(json!({"allowedToMutate": true, "message": "ask #platform for an exception"})),
    }));
    let plain = review_of(&pod(json!({})), "11111111-0000-0000-0000-000000000001");
    let rejected = review_of(
        &pod(json!({"test.sidecars.dev/reject": "no sidecar, no service"})),
        "11111111-0000-0000-0000-000000000002",
    );

    let mutated = server.review("/validate/mutate", &plain);
    assert_eq!(mutated["allowed"], true);
    assert_eq!(mutated["patchType"], "JSONPatch");

    let guarded = server.review("/validate/guarded", &plain);
    assert_eq!(guarded["allowed"], false);
    assert!(guarded.get("patch").is_none() && guarded.get("patchType").is_none());
    assert_eq!(
        guarded["status"]["message"],
        "Request rejected by policy guarded. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
    );
    // The evaluations count the policy's own verdict, as policy-server's do
    // (crates/policy-server/src/api/service.rs: `accepted`/`mutated` of the vanilla
    // response); the refused patch is counted on its own.
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sidecarctl_policy_mutations_refused_total{")
                && l.contains("policy_name=\"guarded\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("sidecarctl_policy_mutations_refused_total{")
                && l.contains("policy_name=\"mutate\"")
        ),
        "{metrics}"
    );

    for review in [&plain, &rejected] {
        let monitored = server.review("/validate/monitor", review);
        assert_eq!(monitored["allowed"], true);
        assert!(monitored.get("patch").is_none() && monitored.get("status").is_none());
    }
    // The audit scanner gets the policy's own verdict, whatever the mode.
    let audited = server.review("/audit/monitor", &rejected);
    assert_eq!(audited["allowed"], false);
    assert_eq!(audited["status"]["message"], "no sidecar, no service");

    let custom = server.review("/validate/custom", &rejected);
    assert_eq!(custom["allowed"], false);
    assert_eq!(
        custom["status"]["message"],
        "ask #platform for an exception"
    );
    assert_eq!(custom["status"]["code"], 403);
    assert_eq!(
        custom["status"]["details"]["causes"],
        json!([{"message": "no sidecar, no service"}])
    );
    assert_eq!(custom["warnings"], json!(["rejected on request"]));
    // An accepted request keeps its patch: the message only replaces rejections.
    assert_eq!(
        server.review("/validate/custom", &plain)["patchType"],
        "JSONPatch"
    );
}

#[test]
fn every_corpus_request_gets_an_answer_from_every_policy() {
    let Some(dir) = corpus() else { return };
    module("wasm/sidecar-ordering-policy.wasm");
    let server = Server::start_file(&example_policies());
    for (path, document) in corpus_requests(&dir) {
        let review = if document["kind"] == "AdmissionReview" {
            document
        } else {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": document})
        };
        for policy in POLICIES {
            let response =
                server.review(&format!("/validate/clusterwide-sidecar-{policy}"), &review);
            // A rejection is a verdict; a 500 would be the policy failing on a real workload.
            assert_ne!(
                response["status"]["code"],
                500,
                "{policy} on {}: {response}",
                path.display()
            );
        }
    }
}
