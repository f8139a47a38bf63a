//! Workloads as a cluster runs them: the controller manager makes ReplicaSets and their
//! pods (`generateName`, a request uid each) through admission, Jobs make their pods, and
//! the day-2 updates every cluster makes reach objects admitted before the policies.

use crate::env::{CANARY_IMAGE, CANARY_LABEL, env};
use serde_json::{Value, json};
use std::time::Duration;

fn pods(namespace: &str, selector: &str) -> Vec<Value> {
    let env = env().unwrap();
    let list = env
        .plane
        .get(&format!(
            "/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
        ))
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn deployment(name: &str, replicas: u32, containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": containers}}}})
}

fn legacy_containers(app: &str, image: &str) -> Value {
    json!([{"name": app, "image": image},
           {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1"}])
}

/// Check 3: A Deployment of 40 replicas whose set gives a canary image to 25% of pods: the
/// share holds over the pods its ReplicaSet creates, each admitted with only
/// `generateName` and the request uid the API server gives it.
#[test]
fn a_canary_share_holds_over_the_pods_of_a_deployment() {
    let Some(env) = env() else { return };
    let namespace = "canary";
    env.plane
        .namespace(namespace, json!({CANARY_LABEL: "true"}));
    let web = deployment(
        "canary-web",
        40,
        json!([{"name": "web", "image": "nginx:1.27"}]),
    );
    env.plane.create(Some(namespace), &web, false).unwrap();
    env.plane
        .wait("40 pods of canary-web", Duration::from_secs(120), || {
            pods(namespace, "app%3Dcanary-web").len() >= 40
        });
    let pods = pods(namespace, "app%3Dcanary-web");
    let mut canaries = 0;
    for pod in &pods {
        assert!(
            pod["metadata"]["generateName"]
                .as_str()
                .is_some_and(|g| g.starts_with("canary-web-")),
            "{}",
            pod["metadata"]
        );
        let proxy = &pod["spec"]["initContainers"][0];
        assert_eq!(proxy["name"], "istio-proxy", "{}", pod["spec"]);
        assert_eq!(proxy["restartPolicy"], "Always");
        if proxy["image"] == CANARY_IMAGE {
            canaries += 1;
        }
    }
    eprintln!(
        "canary: {canaries} of {} pods of one ReplicaSet got the canary image (25% asked)",
        pods.len()
    );
    // Binomial(40, 0.25): fewer than 2 or more than 20 is below one chance in 5,000.
    assert!((2..=20).contains(&canaries), "{canaries} of {}", pods.len());
}

/// Check 3: A Job with a legacy Istio proxy is stored with a native sidecar, and so is the pod
/// the Job controller makes from it.
#[test]
fn a_job_with_a_legacy_proxy_is_stored_with_a_native_sidecar() {
    let Some(env) = env() else { return };
    let namespace = "legacy-job";
    env.namespace(namespace);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
        "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {
            "restartPolicy": "Never",
            "containers": legacy_containers("pi", "perl:5.34")}}}});
    let stored = env.plane.create(Some(namespace), &job, false).unwrap();
    let spec = &stored["spec"]["template"]["spec"];
    assert_eq!(spec["initContainers"][0]["name"], "istio-proxy", "{spec}");
    assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1, "{spec}");
    env.plane
        .wait("the Job's pod", Duration::from_secs(60), || {
            !pods(namespace, "app%3Dpi").is_empty()
        });
    let pod = &pods(namespace, "app%3Dpi")[0];
    assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], "pi");
    assert_eq!(
        pod["spec"]["initContainers"][0]["restartPolicy"], "Always",
        "{}",
        pod["spec"]
    );
}

/// Check 3: The day-2 updates of objects admitted before the policies were installed: label a
/// legacy Job, remove the finalizer of one being deleted, scale a Deployment, change a
/// CronJob's schedule. Each is stored as the user asked, and nothing the user did not
/// touch is rewritten (no new ReplicaSet for a scale). A Deployment whose template the
/// user changes is converted like a new one.
#[test]
fn day_two_updates_of_objects_from_before_the_policies() {
    let Some(env) = env() else { return };
    let namespace = "day-two";
    let job = |name: &str, finalizers: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "finalizers": finalizers},
            "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": legacy_containers("pi", "perl:5.34")}}}})
    };
    let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "report"},
        "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure",
            "containers": legacy_containers("report", "busybox:1.36")}}}}}});
    let before = env.namespace_with_objects_from_before(
        namespace,
        &[
            job("label-me", json!([])),
            job("held", json!(["e2e.sidecars.dev/hold"])),
            deployment("web", 1, legacy_containers("web", "nginx:1.27")),
            cronjob,
        ],
    );
    let template = |o: &Value| {
        let spec = &o["spec"];
        spec.get("jobTemplate")
            .map_or(&spec["template"], |j| &j["spec"]["template"])
            .clone()
    };
    let path = |kind: &str, name: &str| match kind {
        "Job" => format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}"),
        "CronJob" => format!("/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}"),
        _ => format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}"),
    };

    // A label on a legacy Job.
    let labelled = env
        .plane
        .merge_patch(
            &path("Job", "label-me"),
            &json!({"metadata": {"labels": {"team": "batch"}}}),
        )
        .unwrap_or_else(|e| panic!("labelling a legacy Job: {e}"));
    assert_eq!(labelled["metadata"]["labels"]["team"], "batch");
    assert_eq!(template(&labelled), template(&before[0]));

    // The finalizer of a Job being deleted.
    env.plane
        .delete(&path("Job", "held"))
        .unwrap_or_else(|e| panic!("deleting a held Job: {e}"));
    env.plane
        .merge_patch(
            &path("Job", "held"),
            &json!({"metadata": {"finalizers": null}}),
        )
        .unwrap_or_else(|e| panic!("removing the finalizer of a Job being deleted: {e}"));
    env.plane
        .wait("the held Job to go", Duration::from_secs(30), || {
            env.plane.get(&path("Job", "held")).is_err()
        });

    // A scale of a legacy Deployment: its template stays, so it makes no new ReplicaSet.
    let scaled = env
        .plane
        .merge_patch(
            &path("Deployment", "web"),
            &json!({"spec": {"replicas": 3}}),
        )
        .unwrap_or_else(|e| panic!("scaling a legacy Deployment: {e}"));
    assert_eq!(scaled["spec"]["replicas"], 3);
    assert_eq!(template(&scaled), template(&before[2]));

    // A CronJob's schedule.
    let rescheduled = env
        .plane
        .merge_patch(
            &path("CronJob", "report"),
            &json!({"spec": {"schedule": "*/10 * * * *"}}),
        )
        .unwrap_or_else(|e| panic!("changing a legacy CronJob's schedule: {e}"));
    assert_eq!(rescheduled["spec"]["schedule"], "*/10 * * * *");
    assert_eq!(template(&rescheduled), template(&before[3]));

    // A new image in the Deployment's template: a change the user made, converted.
    let mut containers = legacy_containers("web", "nginx:1.28");
    containers[1]["image"] = json!("docker.io/istio/proxyv2:1.24.1");
    let updated = env
        .plane
        .merge_patch(
            &path("Deployment", "web"),
            &json!({"spec": {"template": {"spec": {"containers": containers}}}}),
        )
        .unwrap_or_else(|e| panic!("a new image in a legacy Deployment: {e}"));
    let spec = &updated["spec"]["template"]["spec"];
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1, "{spec}");
    assert_eq!(spec["containers"][0]["image"], "nginx:1.28");
    assert_eq!(
        spec["initContainers"][0]["restartPolicy"], "Always",
        "{spec}"
    );
}
