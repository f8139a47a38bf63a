//! sidecar-injector-policy through sidecarctl: canary shares over many pods, and the four
//! policies together converging on one pod whatever order the API server calls them in.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn injector() -> PathBuf {
    module("wasm/sidecar-injector-policy.wasm")
}

fn settings_json() -> String {
    let text = std::fs::read_to_string(fixture("injector/settings.yaml")).unwrap();
    let value: Value = serde_yaml_ng::from_str(&text).unwrap();
    value.to_string()
}

/// The object after `policy`; `None` when nothing changed. Panics on a rejection.
fn apply(policy: &Path, settings: &str, object: &Value, scratch: &Path) -> Option<Value> {
    // `run` takes a bare object as the CREATE of it.
    let response = answer(policy, settings, object, scratch);
    assert_eq!(
        response["allowed"],
        true,
        "{} rejected: {response}",
        policy.display()
    );
    let patch = response["patch"].as_str()?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&STANDARD.decode(patch).unwrap()).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    Some(patched)
}

#[test]
fn canary_share_is_close_to_the_setting_and_stable() {
    let scratch = tempfile::tempdir().unwrap();
    let settings = json!({"sidecarSets": [{"name": "mesh", "containers": [{
        "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
        "canary": {"image": "docker.io/istio/proxyv2:1.25.0", "percent": 20}}]}]})
    .to_string();
    let pods = 300;
    let mut canaries = 0;
    for i in 0..pods {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        let injected = apply(&injector(), &settings, &pod, scratch.path()).expect("injected");
        let image = injected["spec"]["initContainers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string();
        if image.ends_with("1.25.0") {
            canaries += 1;
        }
        if i % 50 == 0 {
            // The same pod again (a reinvocation) gets the same answer.
            let again = apply(&injector(), &settings, &pod, scratch.path()).unwrap();
            assert_eq!(again["spec"]["initContainers"][0]["image"], image.as_str());
        }
    }
    let share = canaries as f64 * 100.0 / pods as f64;
    assert!(
        (14.0..=26.0).contains(&share),
        "canary share {share}% for a setting of 20%"
    );
}

/// Pods a ReplicaSet creates carry only `generateName` at admission, the same for all of
/// them: the share holds over them (each request has its own uid), through the wasm
/// module in-process, and a pod keeps what it got when the webhook is called again.
#[test]
fn canary_share_holds_over_the_pods_of_one_replicaset() {
    use sidecarctl::evaluation::Evaluator;
    let runtime = sidecarctl::runtime::Runtime::with_cache(None).unwrap();
    let policy = runtime
        .load_bytes(
            "injector",
            &std::fs::read(injector()).unwrap(),
            std::time::Duration::from_secs(2),
        )
        .unwrap();
    let settings = json!({"sidecarSets": [{"name": "mesh", "containers": [{
        "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
        "canary": {"image": "docker.io/istio/proxyv2:1.25.0", "percent": 20}}]}]});
    let evaluator = Evaluator::new(policy, settings).unwrap();
    let request = |uid: usize, object: &Value| {
        json!({"uid": format!("3f6b0c1e-0000-4000-8000-{uid:012}"), "operation": "CREATE",
               "namespace": "shop", "kind": {"group": "", "version": "v1", "kind": "Pod"},
               "object": object})
    };
    let pods = 400;
    let mut canaries = 0;
    for i in 0..pods {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-7d4b9c-", "namespace": "shop",
                         "labels": {"pod-template-hash": "7d4b9c"}},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        let first = request(i, &pod);
        let response = evaluator.evaluate(&first).response;
        assert!(response.allowed, "{response:?}");
        let injected = response.patched(&pod).unwrap();
        let image = injected["spec"]["initContainers"][0]["image"].clone();
        if image.as_str().unwrap().ends_with("1.25.0") {
            canaries += 1;
        }
        // Reinvoked on its own output, with a new request uid: nothing changes.
        let again = evaluator.evaluate(&request(pods + i, &injected)).response;
        assert!(again.allowed && again.patch.is_none(), "{again:?}");
    }
    let share = canaries as f64 * 100.0 / pods as f64;
    assert!(
        (14.0..=26.0).contains(&share),
        "canary share {share}% for a setting of 20% over one ReplicaSet's pods"
    );
}

#[test]
fn the_four_policies_converge_in_any_order() {
    let scratch = tempfile::tempdir().unwrap();
    let resources = module("wasm/sidecar-resources-policy.wasm");
    let ordering = module("wasm/sidecar-ordering-policy.wasm");
    let lifecycle = module("wasm/sidecar-lifecycle-policy.wasm");
    let injector_settings = settings_json();
    let policies: [(&Path, &str); 4] = [
        (&injector(), &injector_settings),
        (
            &ordering,
            r#"{"edges": [{"before": {"name": "istio-proxy"}, "after": {"type": "Init"}}]}"#,
        ),
        (&lifecycle, "{}"),
        (
            &resources,
            r#"{"defaults": [{"image": "*/envoyproxy/envoy", "requests": {"cpu": "100m", "memory": "64Mi"}}, {"image": "*/proxyv2", "requests": {"cpu": "10m", "memory": "40Mi"}}]}"#,
        ),
    ];
    let mut orders = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let o = [a, b, c, d];
                    let mut sorted = o;
                    sorted.sort();
                    if sorted == [0, 1, 2, 3] {
                        orders.push(o);
                    }
                }
            }
        }
    }
    assert_eq!(orders.len(), 24);
    for name in [
        "injector/shop-pod.yaml",
        "injector/legacy-envoy.yaml",
        "injector/canary-pod.yaml",
    ] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let pod: Value = serde_yaml_ng::from_str(&text).unwrap();
        let mut results = Vec::new();
        for order in &orders {
            // Mutating webhooks run in some order, and the API server reinvokes them while
            // one of them still changes the object.
            let mut object = pod.clone();
            let mut rounds = 0;
            loop {
                let mut changed = false;
                for &i in order {
                    let (policy, settings) = policies[i];
                    if let Some(next) = apply(policy, settings, &object, scratch.path()) {
                        object = next;
                        changed = true;
                    }
                }
                rounds += 1;
                if !changed {
                    break;
                }
                assert!(rounds < 4, "{name}: order {order:?} does not settle");
            }
            results.push(object);
        }
        for (order, result) in orders.iter().zip(&results) {
            assert_eq!(
                result, &results[0],
                "{name}: order {order:?} reached another pod than {:?}",
                orders[0]
            );
        }
        let spec = &results[0]["spec"];
        let names: Vec<&str> = spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        // Istio's native order: its iptables step, the proxy, then the pod's own steps.
        assert!(pos("istio-init") < pos("istio-proxy"), "{name}: {names:?}");
        assert!(
            names[pos("istio-proxy") + 1..]
                .iter()
                .all(|n| *n != "istio-init"),
            "{name}: {names:?}"
        );
    }
}

/// `export mutating-admission-policy` from the example ClusterAdmissionPolicy: a policy and
/// a binding per set, with the policy's failure policy and selectors; a refused set is one
/// line naming its field, the others are still written, and the exit status says so.
#[test]
fn export_writes_a_policy_and_binding_per_set_and_refuses_by_field() {
    let policy = root().join("examples/policies/sidecar-injector.yaml");
    let out = run(&["export", "mutating-admission-policy", p(&policy)]);
    assert!(out.status.success(), "{}", stderr(&out));
    use serde::Deserialize;
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&stdout(&out))
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = documents
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("MutatingAdmissionPolicy", "sidecar-set-mesh"),
            ("MutatingAdmissionPolicyBinding", "sidecar-set-mesh"),
            ("MutatingAdmissionPolicy", "sidecar-set-logs"),
            ("MutatingAdmissionPolicyBinding", "sidecar-set-logs"),
        ]
    );
    let manifest: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert_eq!(
        documents[1]["spec"]["matchResources"]["namespaceSelector"],
        manifest["spec"]["namespaceSelector"]
    );
    assert_eq!(documents[0]["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        documents[0]["spec"]["matchConstraints"]["objectSelector"]["matchLabels"],
        json!({"mesh": "enabled"})
    );

    let scratch = tempfile::tempdir().unwrap();
    let settings = scratch.path().join("settings.json");
    std::fs::write(
        &settings,
        json!({"sidecarSets": [
            {"name": "mesh", "containers": [{"name": "proxy", "image": "p:1",
                "canary": {"image": "p:2", "percent": 10}}]},
            {"name": "logs", "selector": {"matchLabels": {"logs": "ship"}},
             "containers": [{"name": "shipper", "image": "s:1"}]}]})
        .to_string(),
    )
    .unwrap();
    let out = run(&[
        "export",
        "mutating-admission-policy",
        p(&settings),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one line per refused field: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("refused: sidecarSets \"mesh\": containers[0].canary.percent:"),
        "{}",
        stderr(&out)
    );
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sidecar-set-logs", "sidecar-set-logs"]);

    // Settings the injector refuses are refused here, by the same words.
    std::fs::write(
        &settings,
        r#"{"sidecarSets": [{"name": "x", "containrs": []}]}"#,
    )
    .unwrap();
    let out = run(&["export", "mutating-admission-policy", p(&settings)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown field `containrs`"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

/// The AdmissionResponse `policy` gives `request` (an AdmissionRequest, or a bare object
/// for its CREATE).
fn answer(policy: &Path, settings: &str, request: &Value, scratch: &Path) -> Value {
    let file = scratch.join("request.json");
    std::fs::write(&file, serde_json::to_vec(request).unwrap()).unwrap();
    let out = run(&[
        "run",
        "-p",
        p(policy),
        "-r",
        p(&file),
        "--settings-json",
        settings,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `sidecarctl rollout` does in place, an UPDATE that changes only a sidecar's image
/// (and the set's revision) to the set's current one, passes all four policies, with no
/// patch and no warning.
#[test]
fn an_in_place_sidecar_upgrade_passes_every_policy_without_a_warning() {
    let scratch = tempfile::tempdir().unwrap();
    let example = |name: &str| -> Value {
        let text =
            std::fs::read_to_string(root().join(format!("examples/settings/{name}.yaml"))).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    };
    let policies = ["injector", "lifecycle", "ordering", "resources"];
    let mut settings: Vec<Value> = policies
        .iter()
        .map(|p| example(&format!("sidecar-{p}-policy")))
        .collect();
    let modules: Vec<PathBuf> = policies
        .iter()
        .map(|p| module(&format!("wasm/sidecar-{p}-policy.wasm")))
        .collect();
    let text =
        std::fs::read_to_string(root().join("examples/pods/shop-checkout-pod.yaml")).unwrap();
    let mut pod: Value = serde_yaml_ng::from_str(&text).unwrap();
    for (module, settings) in modules.iter().zip(&settings) {
        if let Some(patched) = apply(module, &settings.to_string(), &pod, scratch.path()) {
            pod = patched;
        }
    }
    assert!(pod["metadata"]["annotations"]["injected.sidecars.dev/mesh"].is_string());

    // A new proxy image: the rollout's plan reads the pod and says in place.
    let sets = &mut settings[0]["sidecarSets"][0];
    sets["containers"][0]["image"] = json!("docker.io/istio/proxyv2:1.24.2");
    sets["initContainers"][0]["image"] = json!("docker.io/istio/proxyv2:1.24.2");
    let injector_settings: sidecar_model::inject::Settings =
        serde_json::from_value(settings[0].clone()).unwrap();
    let step =
        sidecar_model::inject::plan_rollout(&pod, &injector_settings, "mesh", "shop").unwrap();
    let sidecar_model::inject::RolloutStep::InPlace { images, .. } = &step else {
        panic!("{step}");
    };
    assert_eq!(images.len(), 2, "{step}");
    let patch: json_patch::Patch = serde_json::from_value(step.patch("mesh").unwrap()).unwrap();
    let mut updated = pod.clone();
    json_patch::patch(&mut updated, &patch).unwrap();

    let request = json!({"uid": "rollout-1", "operation": "UPDATE", "namespace": "shop",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": pod["metadata"]["name"], "object": updated, "oldObject": pod,
        "userInfo": {"username": "sidecarctl-rollout"}});
    for ((name, module), settings) in policies.iter().zip(&modules).zip(&settings) {
        let response = answer(module, &settings.to_string(), &request, scratch.path());
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(
            response.get("patch").is_none_or(Value::is_null),
            "{name} patched: {response}"
        );
        assert!(
            response
                .get("warnings")
                .is_none_or(|w| w.as_array().is_none_or(Vec::is_empty)),
            "{name} warned: {response}"
        );
    }
    // Planned again, the pod is at the current revision: a second run has nothing to do.
    assert_eq!(
        sidecar_model::inject::plan_rollout(&updated, &injector_settings, "mesh", "shop").unwrap(),
        sidecar_model::inject::RolloutStep::Current
    );
}

/// `rollout` refuses what it cannot use by name, before it reaches for a cluster.
#[test]
fn rollout_refuses_bad_arguments_and_a_missing_cluster_in_one_line() {
    let out = run(&["rollout", "mesh", "--max-unavailable", "0%"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"0%\" is not a count (10) or a percentage (10%) above 0"),
        "{}",
        stderr(&out)
    );
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("nowhere.kubeconfig");
    let out = run(&["rollout", "mesh", "--kubeconfig", p(&missing)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read kubeconfig"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count(),
        1,
        "{}",
        stderr(&out)
    );
}
