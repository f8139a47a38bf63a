//! `sidecarctl rollout` on the real API server. No kubelet runs here, so the test plays it:
//! a loop that, when a pod's sidecar image differs from what its status reports, writes the
//! status the kubelet would (the new image, restartCount + 1, started, ready), or a crash
//! loop for the image the test marks bad; it also records how many pods were between the
//! old revision and ready at once. 200 pods from 10 Deployments, injected by the injector's
//! webhook (a `sidecarctl serve` of its own, whose settings each step moves to the next
//! revision), with the four example policies judging every create and every update.

use crate::env::{self, Webhook};
use crate::kubewarden::ClusterAdmissionPolicy;
use crate::{cluster, common};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const NAMESPACE: &str = "rollout";
const LABEL: &str = "e2e.sidecars.dev/rollout";
const BAD: &str = "example.com/edge-proxy:bad";
const SET: &str = "edge";

/// The injector's settings with the edge proxy at `image`, and `env` when given.
fn settings(image: &str, env: Option<&str>) -> Value {
    let mut proxy = json!({"name": "edge-proxy", "image": image, "args": ["run"],
        "startupProbe": {"httpGet": {"path": "/ready", "port": 15021}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}});
    if let Some(value) = env {
        proxy["env"] = json!([{"name": "EDGE_MODE", "value": value}]);
    }
    json!({"sidecarSets": [{"name": SET, "selector": {"matchLabels": {"rollout": "yes"}},
        "containers": [proxy]}]})
}

/// The pods of the namespace, as listed.
fn pods(plane: &cluster::ControlPlane) -> Vec<Value> {
    plane
        .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods"))
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn proxy_image(pod: &Value) -> String {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "edge-proxy")
        .and_then(|c| c["image"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One pass of the pretend kubelet; returns how many pods were between the old revision
/// and ready when it looked (the proxy's reported image not the spec's, or not ready).
fn kubelet_pass(plane: &cluster::ControlPlane) -> usize {
    let mut between = 0;
    for pod in pods(plane) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let image = proxy_image(&pod);
        if image.is_empty() {
            continue;
        }
        let status = pod["status"]["initContainerStatuses"]
            .as_array()
            .and_then(|s| s.iter().find(|c| c["name"] == "edge-proxy"))
            .cloned();
        let ready = status
            .as_ref()
            .is_some_and(|s| s["ready"] == true && s["image"] == image.as_str());
        let crashing = status.as_ref().is_some_and(|s| {
            s["image"] == image.as_str() && s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        });
        if ready || crashing {
            continue;
        }
        if status.is_some() {
            between += 1;
        }
        let restarts = status
            .as_ref()
            .map_or(0, |s| s["restartCount"].as_u64().unwrap_or(0) + 1);
        let proxy = if image == BAD {
            json!({"name": "edge-proxy", "image": image, "imageID": "", "restartCount": restarts,
                "ready": false, "started": false,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}})
        } else {
            json!({"name": "edge-proxy", "image": image, "imageID": "", "restartCount": restarts,
                "ready": true, "started": true,
                "state": {"running": {"startedAt": "2026-12-05T00:00:00Z"}}})
        };
        let app = json!({"name": "app", "image": pod["spec"]["containers"][0]["image"], "imageID": "",
            "restartCount": 0, "ready": true, "started": true,
            "state": {"running": {"startedAt": "2026-12-05T00:00:00Z"}}});
        // A pod gone meanwhile (evicted) is no error.
        let _ = plane.merge_patch(
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}/status"),
            // Running and Ready, as a node would report it: the Eviction API lets a
            // Pending pod go whatever its disruption budget says.
            &json!({"status": {"phase": "Running", "initContainerStatuses": [proxy], "containerStatuses": [app],
                "conditions": [{"type": "Ready", "status": if image == BAD { "False" } else { "True" }}]}}),
        );
    }
    between
}

/// A kubeconfig for the ServiceAccount `examples/rollout/rbac.yaml` makes, bound to its
/// ClusterRole and nothing else.
fn rollout_account(plane: &cluster::ControlPlane) -> std::path::PathBuf {
    use serde::Deserialize;
    let text = std::fs::read_to_string(common::root().join("examples/rollout/rbac.yaml")).unwrap();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = Value::deserialize(document).unwrap();
        if object["kind"] != "Job" {
            let namespace = object["metadata"]["namespace"].as_str();
            plane.create(namespace, &object, false).unwrap();
        }
    }
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}});
    let token = plane
        .raw(
            "POST",
            "/api/v1/namespaces/kubewarden/serviceaccounts/sidecarctl-rollout/token",
            Some(("application/json", &request)),
        )
        .unwrap()["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let admin: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(plane.dir.join("admin.kubeconfig")).unwrap(),
    )
    .unwrap();
    let mut config = admin.clone();
    config["users"] = json!([{"name": "rollout", "user": {"token": token}}]);
    config["contexts"] = json!([{"name": "rollout",
        "context": {"cluster": admin["clusters"][0]["name"], "user": "rollout"}}]);
    config["current-context"] = json!("rollout");
    let file = plane.dir.join("rollout.kubeconfig");
    std::fs::write(&file, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    file
}

/// `sidecarctl rollout` with `args`, as the cluster's admin: its exit status and its JSON
/// outcome.
fn rollout(
    plane: &cluster::ControlPlane,
    settings_file: &std::path::Path,
    args: &[&str],
) -> (i32, Value) {
    rollout_as(&plane.dir.join("admin.kubeconfig"), settings_file, args)
}

/// `sidecarctl rollout` with `args`, as `kubeconfig` says.
fn rollout_as(
    kubeconfig: &std::path::Path,
    settings_file: &std::path::Path,
    args: &[&str],
) -> (i32, Value) {
    let mut all = vec!["--settings-path", common::p(settings_file)];
    all.extend_from_slice(args);
    rollout_with(kubeconfig, &all)
}

/// `sidecarctl rollout` with `args` alone: the settings from the cluster's
/// ClusterAdmissionPolicy that has the set.
fn rollout_with(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec![
        "rollout",
        SET,
        "--kubeconfig",
        common::p(kubeconfig),
        "-n",
        NAMESPACE,
        "--timeout",
        "60s",
        "-o",
        "json",
    ];
    all.extend_from_slice(args);
    let out = common::run(&all);
    let outcome = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rollout {args:?}: {e}: {}", common::stderr(&out)));
    (out.status.code().unwrap_or(-1), outcome)
}

/// Kubewarden's ClusterAdmissionPolicy CRD, and the injector's policy with `settings`, as
/// `kubectl apply` of its manifest would leave them.
fn install_policy(
    plane: &cluster::ControlPlane,
    policy: &ClusterAdmissionPolicy,
    settings: &Value,
) {
    let crd = env::yaml(
        &common::root().join("build/crds/policies.kubewarden.io_clusteradmissionpolicies.yaml"),
    );
    match plane.create(None, &crd, false) {
        Ok(_) => {}
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => panic!("installing the CRD: {e}"),
    }
    let mut manifest = env::yaml(&common::root().join("examples/policies/sidecar-injector.yaml"));
    manifest["metadata"]["name"] = json!(policy.name);
    manifest["spec"]["settings"] = settings.clone();
    plane.wait(
        "the ClusterAdmissionPolicy CRD",
        Duration::from_secs(30),
        || match plane.create(None, &manifest, false) {
            Ok(_) => true,
            Err(e) => e.reason == "AlreadyExists",
        },
    );
}

#[test]
fn a_new_sidecar_rolls_out_in_batches_in_place_or_by_eviction() {
    let Some(env) = env::env() else { return };
    let plane = &env.plane;
    let injector = env
        .policies
        .iter()
        .find(|p| p.name == "sidecar-injector")
        .unwrap();
    let mut policy: ClusterAdmissionPolicy = injector.clone();
    policy.name = "rollout-injector".into();
    policy.spec["namespaceSelector"] =
        json!({"matchExpressions": [{"key": LABEL, "operator": "Exists"}]});
    let config = plane.dir.join("rollout-policies.yml");
    let write = |settings: &Value| {
        let mut p = policy.clone();
        p.spec["settings"] = settings.clone();
        let entries = json!({p.unique_name(): p.policies_yml_entry(&env::module_of(injector))});
        std::fs::write(&config, entries.to_string()).unwrap();
        let file = plane.dir.join("rollout-settings.json");
        std::fs::write(&file, settings.to_string()).unwrap();
        file
    };
    write(&settings("example.com/edge-proxy:1", None));
    let mut webhook = Webhook::start(
        "rollout-webhook",
        &config,
        &plane.dir,
        &plane.ca,
        cluster::free_port(),
    );
    plane
        .create(
            None,
            &policy.webhook_configuration(&webhook.base, &plane.ca.pem),
            false,
        )
        .unwrap();
    plane.namespace(NAMESPACE, json!({LABEL: "true"}));
    plane
        .merge_patch(
            &format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
            &json!({"automountServiceAccountToken": false}),
        )
        .unwrap();
    let probe = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-", "labels": {"rollout": "yes"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}});
    plane.wait("the rollout injector", Duration::from_secs(60), || {
        plane
            .create(Some(NAMESPACE), &probe, true)
            .is_ok_and(|p| proxy_image(&p).ends_with(":1"))
    });
    for d in 0..10 {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("dep-{d}")},
            "spec": {"replicas": 20, "selector": {"matchLabels": {"app": format!("dep-{d}")}},
                "template": {"metadata": {"labels": {"app": format!("dep-{d}"), "rollout": "yes"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]}}}});
        plane.create(Some(NAMESPACE), &deployment, false).unwrap();
    }
    plane.wait("200 injected pods", Duration::from_secs(180), || {
        let pods = pods(plane);
        pods.len() == 200 && pods.iter().all(|p| proxy_image(p).ends_with(":1"))
    });

    // The kubelet, played until the test ends; the most pods it saw between revisions.
    let stop = AtomicBool::new(false);
    let most_between = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let between = kubelet_pass(plane);
                most_between.fetch_max(between, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        plane.wait(
            "the kubelet's first statuses",
            Duration::from_secs(120),
            || {
                pods(plane)
                    .iter()
                    .all(|p| p["status"]["initContainerStatuses"][0]["ready"] == true)
            },
        );
        most_between.store(0, Ordering::Relaxed);
        let on = |image: &str| {
            pods(plane)
                .iter()
                .filter(|p| proxy_image(p) == image)
                .count()
        };

        // 1. A new image, in place, 10% at a time.
        let v2 = write(&settings("example.com/edge-proxy:2", None));
        webhook.restart(&config);
        let (code, plan) = rollout(plane, &v2, &["--dry-run"]);
        assert_eq!(
            (code, &plan["toRoll"], &plan["batches"]),
            (0, &json!(200), &json!(10)),
            "{plan}"
        );
        assert!(
            plan["pods"][0]["plan"].as_str().unwrap().starts_with(
                "in place: edge-proxy example.com/edge-proxy:1 → example.com/edge-proxy:2"
            ),
            "{plan}"
        );
        assert_eq!(
            on("example.com/edge-proxy:1"),
            200,
            "a dry run changes nothing"
        );
        let started = std::time::Instant::now();
        let (code, outcome) = rollout(plane, &v2, &["--max-unavailable", "10%"]);
        let took = started.elapsed();
        assert_eq!(code, 0, "{outcome}");
        assert_eq!(
            (&outcome["done"], &outcome["batches"]),
            (&json!(200), &json!(10)),
            "{outcome}"
        );
        assert_eq!(on("example.com/edge-proxy:2"), 200);
        let most = most_between.swap(0, Ordering::Relaxed);
        assert!(most <= 20, "{most} pods were between revisions at once");
        let pod = &pods(plane)[0];
        assert_eq!(pod["status"]["initContainerStatuses"][0]["restartCount"], 1);
        assert_eq!(
            pod["spec"]["containers"][0]["image"], "busybox:1.36",
            "the app is not touched"
        );
        println!(
            "rollout in place: 200 pods, 10 batches, at most {most} between revisions at once, {took:.1?}"
        );

        // 2. A bad image stops after the first batch; the fix resumes with the rest.
        let v3 = write(&settings(BAD, None));
        webhook.restart(&config);
        let (code, outcome) = rollout(plane, &v3, &["--max-unavailable", "10%"]);
        assert_eq!(code, 1, "{outcome}");
        let stopped = outcome["stopped"].as_str().unwrap();
        assert!(
            stopped.starts_with("batch 1 failed") && stopped.contains("CrashLoopBackOff"),
            "{stopped}"
        );
        assert_eq!(on(BAD), 20, "only the first batch got the bad image");
        let v4 = write(&settings("example.com/edge-proxy:3", None));
        webhook.restart(&config);
        let (code, outcome) = rollout(plane, &v4, &["--max-unavailable", "10%"]);
        assert_eq!((code, &outcome["done"]), (0, &json!(200)), "{outcome}");
        assert_eq!(on("example.com/edge-proxy:3"), 200);

        // 3. A canary group by selector, then all but a partition; from here on as the
        // ServiceAccount of examples/rollout/rbac.yaml, to show its ClusterRole is enough.
        let account = rollout_account(plane);
        let rollout = |_: &cluster::ControlPlane, file: &std::path::Path, args: &[&str]| {
            rollout_as(&account, file, args)
        };
        let v5 = write(&settings("example.com/edge-proxy:4", None));
        webhook.restart(&config);
        // The settings as the cluster holds them: the injector's ClusterAdmissionPolicy.
        install_policy(plane, &policy, &settings("example.com/edge-proxy:4", None));
        let (code, outcome) = rollout_with(&account, &["--selector", "app=dep-0"]);
        assert_eq!((code, &outcome["done"]), (0, &json!(20)), "{outcome}");
        let dep0 = pods(plane)
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "dep-0")
            .all(|p| proxy_image(p).ends_with(":4"));
        assert!(dep0 && on("example.com/edge-proxy:4") == 20);
        let (code, outcome) = rollout(
            plane,
            &v5,
            &["--partition", "50", "--max-unavailable", "25"],
        );
        assert_eq!(
            (code, &outcome["done"], &outcome["left"]),
            (0, &json!(130), &json!(50)),
            "{outcome}"
        );
        assert_eq!(
            (
                on("example.com/edge-proxy:4"),
                on("example.com/edge-proxy:3")
            ),
            (150, 50)
        );

        // 4. A changed variable needs new pods: evicted, and a disruption budget holds.
        let v6 = write(&settings("example.com/edge-proxy:4", Some("strict")));
        webhook.restart(&config);
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "dep-9"}, "spec": {"minAvailable": 20, "selector": {"matchLabels": {"app": "dep-9"}}}});
        plane.create(Some(NAMESPACE), &pdb, false).unwrap();
        let (code, plan) = rollout(plane, &v6, &["--selector", "app=dep-8", "--dry-run"]);
        assert_eq!(code, 0);
        assert_eq!(
            plan["pods"][0]["plan"], "recreate: edge-proxy: env changed",
            "{plan}"
        );
        let (code, outcome) = rollout(
            plane,
            &v6,
            &["--selector", "app=dep-8", "--max-unavailable", "5"],
        );
        assert_eq!((code, &outcome["done"]), (0, &json!(20)), "{outcome}");
        plane.wait("dep-8's new pods", Duration::from_secs(120), || {
            let pods = pods(plane);
            let new: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"]["labels"]["app"] == "dep-8")
                .collect();
            new.len() == 20
                && new
                    .iter()
                    .all(|p| p["spec"]["initContainers"][0]["env"][0]["value"] == "strict")
        });
        let (code, outcome) = rollout(plane, &v6, &["--selector", "app=dep-9"]);
        assert_eq!(code, 1, "{outcome}");
        let stopped = outcome["stopped"].as_str().unwrap();
        assert!(stopped.contains("eviction refused (429)"), "{stopped}");
        assert!(
            pods(plane)
                .iter()
                .filter(|p| p["metadata"]["labels"]["app"] == "dep-9")
                .count()
                == 20
        );
        stop.store(true, Ordering::Relaxed);
    });
}
