//! What the API server does around the webhooks: in-place resize through the real
//! `pods/resize` subresource, a webhook that is down with `failurePolicy: Fail`, the
//! claims the README and the examples make about the API server, and Kubewarden's own
//! CRDs checking every ClusterAdmissionPolicy we ship.

use crate::cluster::free_port;
use crate::common;
use crate::env::{self, Webhook, env, yaml};
use crate::kubewarden::ClusterAdmissionPolicy;
use serde_json::{Value, json};
use std::time::Duration;

fn guaranteed_pod(name: &str) -> Value {
    let fixed = |cpu: &str, memory: &str| json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}});
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "initContainers": [{"name": "fluent-bit", "image": "cr.fluentbit.io/fluent/fluent-bit:3.1.9",
                "restartPolicy": "Always", "resources": fixed("100m", "64Mi")}],
            "containers": [{"name": "app", "image": "registry.example.com/shop/app:2",
                "resources": fixed("500m", "256Mi")}]}})
}

/// Check 4: `pods/resize`: a resize that would make a Guaranteed pod Burstable is refused with
/// the resources policy's message; one that keeps its class is stored.
#[test]
fn a_resize_is_judged_through_the_real_subresource() {
    let Some(env) = env() else { return };
    let namespace = "resize";
    env.namespace(namespace);
    let stored = env
        .plane
        .create(Some(namespace), &guaranteed_pod("shop"), false)
        .unwrap();
    assert_eq!(
        stored["status"]["qosClass"], "Guaranteed",
        "{}",
        stored["status"]
    );
    let resize_path = format!("/api/v1/namespaces/{namespace}/pods/shop/resize");

    // The app's cpu limit alone raised: the pod would become Burstable.
    let mut burstable = stored.clone();
    burstable["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("1");
    let refused = env
        .plane
        .raw("PUT", &resize_path, Some(("application/json", &burstable)))
        .expect_err("a resize that changes the QoS class is refused");
    assert!(
        refused
            .message
            .contains("admission webhook \"clusterwide-sidecar-resources.kubewarden.admission\" denied the request: resize: "),
        "{refused}"
    );

    // Requests and limits raised together: still Guaranteed, stored.
    let current = env
        .plane
        .get(&format!("/api/v1/namespaces/{namespace}/pods/shop"))
        .unwrap();
    let mut kept = current.clone();
    kept["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "600m", "memory": "256Mi"}, "limits": {"cpu": "600m", "memory": "256Mi"}});
    let resized = env
        .plane
        .raw("PUT", &resize_path, Some(("application/json", &kept)))
        .unwrap_or_else(|e| panic!("a resize that keeps the class: {e}"));
    assert_eq!(
        resized["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "600m"
    );
}

/// Check 4b: a regular init container resized through the real `pods/resize`: the API server
/// of 1.36 and later stores it, and so the resources policy lets it through there; before,
/// the policy refuses it first, as the API server would.
#[test]
fn a_regular_init_container_resizes_where_the_release_allows_it() {
    let Some(env) = env() else { return };
    let namespace = "resize-init";
    env.namespace(namespace);
    let mut pod = guaranteed_pod("migrating");
    let fixed = json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}});
    pod["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .insert(
            0,
            json!({"name": "migrate", "image": "busybox:1.36", "resources": fixed}),
        );
    let stored = env.plane.create(Some(namespace), &pod, false).unwrap();
    let mut resized = stored.clone();
    resized["spec"]["initContainers"][0]["resources"] = json!({"requests": {"cpu": "80m", "memory": "32Mi"}, "limits": {"cpu": "80m", "memory": "32Mi"}});
    let path = format!("/api/v1/namespaces/{namespace}/pods/migrating/resize");
    let answer = env
        .plane
        .raw("PUT", &path, Some(("application/json", &resized)));
    let minor = crate::cluster::minor(&env.plane.version);
    eprintln!(
        "Kubernetes {}: a regular init container resized: {}",
        env.plane.version,
        match &answer {
            Ok(_) => "stored".to_string(),
            Err(e) => format!("refused ({})", e.message),
        }
    );
    if minor >= 36 {
        let stored = answer.unwrap_or_else(|e| panic!("refused: {e}"));
        assert_eq!(
            stored["spec"]["initContainers"][0]["resources"]["limits"]["cpu"],
            "80m"
        );
    } else {
        let refused = answer.expect_err("before 1.36 a regular init container is not resized");
        assert!(
            refused.message.contains("denied the request: resize: the resize changes the resources of init container \"migrate\""),
            "{refused}"
        );
    }
}

/// Check 8: With `failurePolicy: Fail` and the webhook down, a create is refused with the API
/// server's webhook error and nothing is stored; with the webhook back, it succeeds.
#[test]
fn a_webhook_that_is_down_fails_closed() {
    let Some(env) = env() else { return };
    let label = "e2e.sidecars.dev/failure";
    let namespace = "failure";
    env.plane.namespace(namespace, json!({label: "true"}));
    let mut policy = env
        .policies
        .iter()
        .find(|p| p.name == "sidecar-lifecycle")
        .unwrap()
        .clone();
    policy.name = "sidecar-lifecycle-failure".into();
    policy.spec["failurePolicy"] = json!("Fail");
    policy.spec["namespaceSelector"] =
        json!({"matchExpressions": [{"key": label, "operator": "Exists"}]});
    let config = env.plane.dir.join("policies-failure.yml");
    let entry = policy.policies_yml_entry(&env::module_of(&policy));
    std::fs::write(&config, json!({policy.unique_name(): entry}).to_string()).unwrap();
    let mut webhook = Webhook::start(
        "sidecarctl-serve-failure",
        &config,
        &env.plane.dir,
        &env.plane.ca,
        free_port(),
    );
    let configuration = policy.webhook_configuration(&webhook.base, &env.plane.ca.pem);
    env.plane.create(None, &configuration, false).unwrap();

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}});
    webhook.stop();
    let refused = env
        .plane
        .create(Some(namespace), &pod, false)
        .expect_err("the webhook is down");
    assert!(
        refused.message.contains(
            "failed calling webhook \"clusterwide-sidecar-lifecycle-failure.kubewarden.admission\""
        ),
        "{refused}"
    );
    assert_eq!(
        env.plane
            .get(&format!("/api/v1/namespaces/{namespace}/pods/app"))
            .unwrap_err()
            .code,
        404
    );

    webhook.restart(&config);
    env.plane
        .create(Some(namespace), &pod, false)
        .unwrap_or_else(|e| panic!("with the webhook back: {e}"));
    env.plane
        .delete(&format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
            policy.unique_name()
        ))
        .unwrap();
}

/// Check 6: What the README and examples/pods/pod-level-budget.yaml say of pod-level budgets,
/// asked of the API server with no policy in the way: it refuses a pod whose containers'
/// aggregate requests (sidecars and the init peak included) exceed the pod-level requests,
/// and an app container whose limit exceeds the pod-level limit; it stores a sidecar or a
/// regular init container whose limit does. (Our reading until this suite ran was that it
/// left sidecars out of the requests too.)
#[test]
fn what_the_api_server_checks_of_a_pod_level_budget() {
    let Some(env) = env() else { return };
    let example = yaml(&common::root().join("examples/pods/pod-level-budget.yaml"));
    let refused = env
        .admitted_by_the_api_server(&example)
        .expect_err("the example's sidecar takes its containers past the budget");
    assert!(
        refused
            .message
            .contains("must be greater than or equal to aggregate container requests of 4100m"),
        "{refused}"
    );
    let pod = |init: Value, app: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "budget", "namespace": "default"},
            "spec": {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "4"}},
                "initContainers": [init],
                "containers": [{"name": "app", "image": "app:1", "resources": app}]}})
    };
    let sidecar = |resources: Value| json!({"name": "agent", "image": "agent:1", "restartPolicy": "Always", "resources": resources});
    let init =
        |resources: Value| json!({"name": "setup", "image": "setup:1", "resources": resources});
    let over_limit = json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "8"}});
    let app = json!({"requests": {"cpu": "1"}});
    for (what, object) in [
        (
            "a sidecar's limit over the pod-level limit",
            pod(sidecar(over_limit.clone()), app.clone()),
        ),
        (
            "a regular init container's limit over it",
            pod(init(over_limit), app.clone()),
        ),
    ] {
        if let Err(e) = env.admitted_by_the_api_server(&object) {
            panic!("{what} is refused by the API server: {e}");
        }
    }
    for (what, object, says) in [
        (
            "an app container's limit over the pod-level limit",
            pod(
                init(json!({})),
                json!({"requests": {"cpu": "1"}, "limits": {"cpu": "8"}}),
            ),
            "must be less than or equal to pod limits of 4",
        ),
        (
            "a regular init container's request over the pod-level request",
            pod(init(json!({"requests": {"cpu": "5"}})), app),
            "must be greater than or equal to aggregate container requests of 5",
        ),
    ] {
        let refused = env.admitted_by_the_api_server(&object).expect_err(what);
        assert!(refused.message.contains(says), "{what}: {refused}");
    }
}

/// Check 7: Kubewarden's CRDs, generated by controller-gen from Kubewarden's Go API types,
/// installed; every ClusterAdmissionPolicy under examples/policies and every one
/// `sidecarctl scaffold manifest` writes passes the API server's schema validation.
#[test]
fn every_cluster_admission_policy_passes_kubewardens_schema() {
    let Some(env) = env() else { return };
    let crds = common::root().join("build/crds");
    let file = crds.join("policies.kubewarden.io_clusteradmissionpolicies.yaml");
    assert!(
        file.is_file(),
        "{} is missing: make controlplane generates it",
        file.display()
    );
    let crd = yaml(&file);
    match env.plane.create(None, &crd, false) {
        Ok(_) => {}
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => panic!("installing the CRD: {e}"),
    }
    env.plane.wait(
        "the ClusterAdmissionPolicy CRD to be established",
        Duration::from_secs(30),
        || {
            env.plane
                .get("/apis/policies.kubewarden.io/v1/clusteradmissionpolicies")
                .is_ok()
        },
    );

    let mut manifests: Vec<(String, Value)> = Vec::new();
    let dir = common::root().join("examples/policies");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        for document in crate::documents(&path) {
            manifests.push((path.display().to_string(), document));
        }
    }
    for policy in env.policies.iter() {
        let output = common::run(&[
            "scaffold",
            "manifest",
            "--type",
            "ClusterAdmissionPolicy",
            common::p(&env::module_of(policy)),
        ]);
        assert!(output.status.success(), "{}", common::stderr(&output));
        let manifest: Value = serde_yaml_ng::from_str(&common::stdout(&output)).unwrap();
        manifests.push((format!("scaffold manifest of {}", policy.name), manifest));
    }
    assert!(manifests.len() >= 8, "{}", manifests.len());
    for (source, manifest) in &manifests {
        let stored = env
            .plane
            .create(None, manifest, true)
            .unwrap_or_else(|e| panic!("{source}: the API server refuses it: {e}"));
        // The CRD's defaults are the ones the tests' policies assume.
        let cap = ClusterAdmissionPolicy::from_manifest(&stored);
        assert_eq!(cap.spec["mode"], "protect", "{source}");
        assert_eq!(cap.spec["timeoutSeconds"], 10, "{source}");
    }
    // A typo in a field is refused by the schema, not silently dropped.
    let mut typo = manifests[0].1.clone();
    typo["spec"]["mutatin"] = json!(true);
    let refused = env
        .plane
        .raw(
            "POST",
            "/apis/policies.kubewarden.io/v1/clusteradmissionpolicies?dryRun=All&fieldValidation=Strict",
            Some(("application/json", &typo)),
        )
        .expect_err("an unknown field");
    assert!(refused.message.contains("mutatin"), "{refused}");
}

/// Check 5: The rules that say what the API server refuses agree with the API server of the
/// release under test: the lifecycle policy, told that release (`kubernetesVersion`),
/// refuses a pod by `field-placement` or `restart-rules` exactly when the API server
/// refuses it on its own; and both refuse a resize that changes the QoS class.
#[test]
fn the_api_validity_rules_agree_with_the_api_server() {
    let Some(env) = env() else { return };
    let version = env.plane.version.clone();
    let lifecycle = env.evaluator("sidecar-lifecycle", json!({"kubernetesVersion": version}));
    let pod = |init: Value, app: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rules", "namespace": "default"},
            "spec": {"initContainers": [init], "containers": [app]}})
    };
    let step = json!({"name": "setup", "image": "busybox:1.36"});
    let app = json!({"name": "app", "image": "nginx:1.27"});
    let with = |base: &Value, fields: Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        c
    };
    let rule = |action: &str, operator: &str, codes: Value| json!([{"action": action, "exitCodes": {"operator": operator, "values": codes}}]);
    let sidecar = with(&step, json!({"name": "agent", "restartPolicy": "Always"}));
    let cases = [
        (
            "an app container restartPolicy: Never",
            pod(step.clone(), with(&app, json!({"restartPolicy": "Never"}))),
        ),
        (
            "an app container restart rule",
            pod(
                step.clone(),
                with(
                    &app,
                    json!({"restartPolicy": "Never",
            "restartPolicyRules": rule("Restart", "In", json!([42]))}),
                ),
            ),
        ),
        (
            "an app container rule without its own restartPolicy",
            pod(
                step.clone(),
                with(
                    &app,
                    json!({
            "restartPolicyRules": rule("Restart", "In", json!([42]))}),
                ),
            ),
        ),
        (
            "an app container rule restarting every container",
            pod(
                step.clone(),
                with(
                    &app,
                    json!({"restartPolicy": "Never",
            "restartPolicyRules": rule("RestartAllContainers", "In", json!([42]))}),
                ),
            ),
        ),
        (
            "an operator other than In or NotIn",
            pod(
                step.clone(),
                with(
                    &app,
                    json!({"restartPolicy": "Never",
            "restartPolicyRules": rule("Restart", "Equals", json!([42]))}),
                ),
            ),
        ),
        (
            "a regular init container restartPolicy: Never",
            pod(with(&step, json!({"restartPolicy": "Never"})), app.clone()),
        ),
        (
            "a regular init container restartPolicy: OnFailure",
            pod(
                with(&step, json!({"restartPolicy": "OnFailure"})),
                app.clone(),
            ),
        ),
        (
            "a regular init container with a startupProbe",
            pod(
                with(
                    &step,
                    json!({
            "startupProbe": {"exec": {"command": ["true"]}}}),
                ),
                app.clone(),
            ),
        ),
        ("a native sidecar", pod(sidecar.clone(), app.clone())),
        (
            "an app container restartPolicy: Alway (a typo)",
            pod(step.clone(), with(&app, json!({"restartPolicy": "Alway"}))),
        ),
        (
            "an app container restartPolicy: \"\"",
            pod(step.clone(), with(&app, json!({"restartPolicy": ""}))),
        ),
        (
            "a regular init container restartPolicy: Alway (a typo)",
            pod(with(&step, json!({"restartPolicy": "Alway"})), app.clone()),
        ),
        (
            "a regular init container that restarts on resize",
            pod(
                with(
                    &step,
                    json!({"resizePolicy": [{"resourceName": "cpu", "restartPolicy": "RestartContainer"}]}),
                ),
                app.clone(),
            ),
        ),
        (
            "a native sidecar with a restart rule",
            pod(
                with(
                    &sidecar,
                    json!({"restartPolicyRules": rule("Restart", "In", json!([42]))}),
                ),
                app.clone(),
            ),
        ),
        (
            "a native sidecar restarting every container",
            pod(
                with(
                    &sidecar,
                    json!({"restartPolicyRules": rule("RestartAllContainers", "In", json!([42]))}),
                ),
                app.clone(),
            ),
        ),
    ];
    let mut disagreements = Vec::new();
    for (what, object) in cases {
        // What the API server does: refuses the pod, or stores it, with or without the
        // restart fields the user wrote (a release whose gate is off drops them silently).
        let api = match env.admitted_by_the_api_server(&object) {
            Err(e) => Some(format!("refuses it ({})", e.message)),
            Ok(admitted) => dropped_fields(&object, &admitted.as_stored)
                .map(|fields| format!("stores it without {fields}")),
        };
        let request = env::request_for(&object, "default", "CREATE", None);
        let answer = lifecycle.evaluate(&request).response;
        let message = answer.status.and_then(|s| s.message).unwrap_or_default();
        let policy_refuses = !answer.allowed
            && (message.contains("field-placement:") || message.contains("restart-rules:"));
        eprintln!(
            "Kubernetes {version}, {what}: API server {}, lifecycle policy {}",
            api.as_deref().unwrap_or("stores it as written"),
            if policy_refuses {
                format!("refuses it ({message})")
            } else {
                "lets it through".into()
            }
        );
        // A field dropped without a word is refused by the policy, saying so.
        if api.is_some() != policy_refuses
            || (api
                .as_ref()
                .is_some_and(|a| a.starts_with("stores it without"))
                && !message.contains("drops"))
        {
            disagreements.push(what);
        }
    }
    assert!(
        disagreements.is_empty(),
        "Kubernetes {version}: {disagreements:?}"
    );
}

/// The restart fields the user wrote on a container that the stored pod no longer has.
fn dropped_fields(sent: &Value, stored: &Value) -> Option<String> {
    let mut dropped = Vec::new();
    for list in ["initContainers", "containers"] {
        let sent = sent["spec"][list].as_array().cloned().unwrap_or_default();
        for (i, container) in sent.iter().enumerate() {
            for field in ["restartPolicy", "restartPolicyRules"] {
                if container.get(field).is_some() && stored["spec"][list][i].get(field).is_none() {
                    dropped.push(format!("{list}[{i}].{field}"));
                }
            }
        }
    }
    (!dropped.is_empty()).then(|| dropped.join(", "))
}
