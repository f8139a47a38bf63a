//! The injector's unit tests: settings, matching, placement, canaries and revisions.

use super::*;
use crate::json::Deferred;
use crate::kube::PodModel;
use serde_json::Value;

use crate::kube::KnownSidecars;
use serde_json::json;

fn set(v: Value) -> SidecarSet {
    serde_json::from_value(v).unwrap()
}

fn mesh() -> SidecarSet {
    set(json!({
        "name": "mesh",
        "selector": {"matchLabels": {"mesh": "on"}},
        "namespaces": ["shop", "pay-*"],
        "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
                        "startupProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}}],
        "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.1", "type": "Init"}],
        "volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}],
        "imagePullSecrets": ["mesh-pull"],
        "podAnnotations": {"prometheus.io/port": "15020"},
        "transferEnv": [{"sourceContainer": "app", "envName": "TZ"}],
        "shareVolumes": true,
        "after": [{"before": {"name": "istio-proxy"}, "after": {"type": "Init"}}]
    }))
}

/// A set with every field, odd strings and numbers: what a revision hashes.
fn rich() -> SidecarSet {
    set(json!({
        "name": "rich",
        "selector": {"matchLabels": {"b": "2", "a": "1"},
                     "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x", "é\u{1F600}"]}]},
        "containers": [{"name": "proxy", "image": "p:1", "type": "Sidecar",
                        "canary": {"image": "p:2", "percent": 10},
                        "args": ["quote \" back \\ tab \t nl \n ctl \u{1} del \u{7f}"],
                        "ports": [{"containerPort": 15090, "name": "metrics"}],
                        "securityContext": {"runAsUser": 1337, "runAsNonRoot": true},
                        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
                        "env": [{"name": "Z", "value": "z"}, {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
        "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi", "medium": "Memory"}}],
        "podAnnotations": {"z": "last", "a/b": "first"},
        "after": [{"name": "r", "before": {"name": "proxy"}, "after": {"type": "Standard"}}]
    }))
}

/// Pods record their set's revision: the bytes hashed must never change, or every
/// running pod would read as outdated.
#[test]
fn revisions_are_stable() {
    assert_eq!(mesh().revision().unwrap(), "78853c8b65");
    assert_eq!(rich().revision().unwrap(), "fc6fc5da35");
}

fn pod(labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "labels": labels, "annotations": annotations},
        "spec": {"initContainers": [{"name": "setup", "image": "busybox"}],
                 "containers": [{"name": "app", "image": "nginx", "env": [{"name": "TZ", "value": "UTC"}],
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {}}]}})
}

fn run(object: &mut Value, sets: &[SidecarSet], ns: &str) -> Vec<SetOutcome> {
    run_request(object, sets, ns, "4f1c2d3e-0000-4000-8000-000000000000")
}

fn run_request(object: &mut Value, sets: &[SidecarSet], ns: &str, uid: &str) -> Vec<SetOutcome> {
    let m = PodModel::of(object, &KnownSidecars::default());
    crate::json::edit_value(object, |d| {
        inject(d, m, sets, ns, uid, &KnownSidecars::default())
    })
    .unwrap()
}

#[test]
fn injects_in_place_and_order() {
    let mut object = pod(json!({"mesh": "on"}), json!({}));
    let outcomes = run(&mut object, &[mesh()], "shop");
    assert!(
        matches!(&outcomes[0], SetOutcome::Injected { containers, .. } if containers.len() == 2)
    );
    let spec = &object["spec"];
    let init: Vec<&str> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // The proxy before every init step, as the set's edge asks, but its own mesh's
    // iptables step, which belongs before it.
    assert_eq!(init, ["istio-init", "istio-proxy", "setup"]);
    assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        spec["initContainers"][1]["env"],
        json!([{"name": "TZ", "value": "UTC"}])
    );
    assert_eq!(
        spec["initContainers"][1]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data"}])
    );
    // The pod's own volume of the same name wins.
    assert_eq!(
        spec["volumes"],
        json!([{"name": "data", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {}}])
    );
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "mesh-pull"}]));
    assert_eq!(
        object["metadata"]["annotations"]["prometheus.io/port"],
        "15020"
    );
    assert_eq!(
        object["metadata"]["annotations"]["injected.sidecars.dev/mesh"],
        json!(mesh().revision().unwrap())
    );
    // Again: present, untouched.
    let before = object.clone();
    let again = run(&mut object, &[mesh()], "shop");
    assert_eq!(again, [SetOutcome::Present { set: "mesh".into() }]);
    assert_eq!(object, before);
}

#[test]
fn selection_namespaces_and_opt_out() {
    for (labels, annotations, ns, injected) in [
        (json!({"mesh": "on"}), json!({}), "pay-eu", true),
        (json!({"mesh": "on"}), json!({}), "default", false),
        (json!({"mesh": "off"}), json!({}), "shop", false),
        (
            json!({"mesh": "on"}),
            json!({"inject.sidecars.dev": "false"}),
            "shop",
            false,
        ),
        (
            json!({"mesh": "on"}),
            json!({"inject.sidecars.dev/mesh": "false"}),
            "shop",
            false,
        ),
        (
            json!({"mesh": "on"}),
            json!({"inject.sidecars.dev/other": "false"}),
            "shop",
            true,
        ),
    ] {
        let mut object = pod(labels.clone(), annotations.clone());
        let outcomes = run(&mut object, &[mesh()], ns);
        let did = outcomes
            .iter()
            .any(|o| matches!(o, SetOutcome::Injected { .. }));
        assert_eq!(did, injected, "{labels} {annotations} {ns}");
    }
}

#[test]
fn outdated_revisions_name_the_images() {
    let mut object = pod(json!({"mesh": "on"}), json!({}));
    run(&mut object, &[mesh()], "shop");
    let mut upgraded = mesh();
    upgraded.containers.get_mut().unwrap()[0]
        .spec
        .insert("image".into(), json!("docker.io/istio/proxyv2:1.25.0"));
    let m = PodModel::of(&object, &KnownSidecars::default());
    let outcomes = survey(&m, &[upgraded.clone()], "shop").unwrap();
    let SetOutcome::Outdated {
        images, current, ..
    } = &outcomes[0]
    else {
        panic!("{outcomes:?}")
    };
    assert_eq!(current, &upgraded.revision().unwrap());
    assert!(images.contains(&(
        "istio-proxy".into(),
        "docker.io/istio/proxyv2:1.24.1".into(),
        "docker.io/istio/proxyv2:1.25.0".into()
    )));
}

fn is_canary(outcomes: &[SetOutcome]) -> bool {
    matches!(&outcomes[0], SetOutcome::Injected { canary, .. } if !canary.is_empty())
}

fn with_canary(percent: u32) -> SidecarSet {
    let mut s = mesh();
    s.containers.get_mut().unwrap()[0].canary = Some(Canary {
        image: "docker.io/istio/proxyv2:1.25.0".into(),
        percent: Some(percent),
        selector: None,
    });
    s
}

#[test]
fn canary_shares_are_close_and_stable() {
    let s = with_canary(20);
    let mut canaries = 0;
    for i in 0..1000 {
        let mut object = pod(json!({"mesh": "on"}), json!({}));
        object["metadata"]["name"] = json!(format!("web-{i}"));
        let first = run(&mut object.clone(), std::slice::from_ref(&s), "shop");
        let outcomes = run(&mut object, std::slice::from_ref(&s), "shop");
        assert_eq!(first, outcomes, "stable for the same pod");
        canaries += usize::from(is_canary(&outcomes));
    }
    assert!((170..=230).contains(&canaries), "{canaries} of 1000");
}

/// The pods of one ReplicaSet all carry the same `generateName` and no name at
/// admission: the share holds over them, one request each, and a pod keeps what it
/// got when the webhook is called again on it.
#[test]
fn canary_shares_hold_over_the_pods_of_one_replicaset() {
    let s = with_canary(20);
    let mut canaries = 0;
    for i in 0..1000 {
        let mut object = pod(json!({"mesh": "on"}), json!({}));
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.remove("name");
        meta.insert("generateName".into(), json!("web-7d4b9c-"));
        let uid = format!("7c0a{i:04}-1b2c-4d3e-8f00-000000000000");
        let outcomes = run_request(&mut object, std::slice::from_ref(&s), "shop", &uid);
        let image = object["spec"]["initContainers"][0]["image"].clone();
        canaries += usize::from(is_canary(&outcomes));
        // Reinvoked (a new request uid): present, left as it is.
        let before = object.clone();
        let again = run_request(&mut object, std::slice::from_ref(&s), "shop", "other");
        assert_eq!(again, [SetOutcome::Present { set: "mesh".into() }]);
        assert_eq!(object, before);
        assert_eq!(object["spec"]["initContainers"][0]["image"], image);
    }
    assert!((170..=230).contains(&canaries), "{canaries} of 1000");
}

#[test]
fn settings_conflicts_are_found() {
    let a = mesh();
    let mut b = mesh();
    b.name = "mesh-two".into();
    assert!(
        validate_sets(&[a.clone(), b.clone()])
            .unwrap_err()
            .contains("both inject istio-init, istio-proxy")
    );
    b.selector = serde_json::from_value(json!({"matchLabels": {"mesh": "legacy"}})).unwrap();
    b.volumes = Deferred::new(vec![json!({"name": "istio-envoy", "emptyDir": {}})]);
    assert!(
        validate_sets(&[a.clone(), b.clone()])
            .unwrap_err()
            .contains("volume \"istio-envoy\" with different contents")
    );
    // The same volume, its keys in another order, is one volume.
    b.volumes = Deferred::new(vec![
        json!({"emptyDir": {"medium": "Memory"}, "name": "istio-envoy"}),
    ]);
    validate_sets(&[a.clone(), b.clone()]).unwrap();
    b.volumes = Deferred::default();
    validate_sets(&[a.clone(), b.clone()]).unwrap();
    // One pod annotation with two values on pods both may select: which wins would depend
    // on the order the sets run in. The same value is no conflict.
    let mut logs = mesh();
    logs.name = "logs".into();
    logs.containers = Deferred::new(Vec::new());
    logs.init_containers =
        serde_json::from_value(json!([{"name": "shipper", "image": "s:1"}])).unwrap();
    logs.pod_annotations = [("team".to_string(), "logs".to_string())].into();
    let mut owned = a.clone();
    owned.pod_annotations = [("team".to_string(), "mesh".to_string())].into();
    assert!(
        validate_sets(&[owned.clone(), logs.clone()])
            .unwrap_err()
            .contains("both set pod annotation \"team\" (\"mesh\" and \"logs\")")
    );
    logs.pod_annotations = owned.pod_annotations.clone();
    validate_sets(&[owned, logs]).unwrap();
    // Namespaces are compared as patterns: `team-?` covers `team-a`, and a pod there
    // would get two containers of one name.
    let mut c = mesh();
    c.name = "mesh-team".into();
    for (ours, theirs, clash) in [
        (vec!["team-?"], vec!["team-a"], true),
        (vec!["team-*"], vec!["*-a"], true),
        (vec!["team-?"], vec!["team-ab"], false),
        (vec!["shop"], vec!["pay-*"], false),
    ] {
        let mut a = a.clone();
        a.namespaces = ours.iter().map(|n| n.to_string()).collect();
        c.namespaces = theirs.iter().map(|n| n.to_string()).collect();
        let result = validate_sets(&[a, c.clone()]);
        assert_eq!(result.is_err(), clash, "{ours:?} {theirs:?}: {result:?}");
    }
    // A 1.37 field k8s-openapi does not know yet is no typo either; one beside it is.
    let bind = json!({"name": "x", "volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "p", "image": "i",
        "volumeMounts": [{"name": "v", "mountPath": "/v", "bindMountOptions": ["noexec"]}]}]});
    validate_sets(&[set(bind.clone())]).unwrap();
    let mut typo = bind;
    typo["containers"][0]["volumeMounts"][0]["bindMountOption"] = json!(["noexec"]);
    assert!(
        set(typo)
            .validate()
            .unwrap_err()
            .contains("unknown field \"volumeMounts[0].bindMountOption\"")
    );
    // A null where a field could be is no typo.
    validate_sets(&[set(
        json!({"name": "x", "containers": [{"name": "p", "image": "i", "stdin": null, "volumeMount": null}]}),
    )])
    .unwrap();
    for (bad, part) in [
        (
            json!({"name": "x", "containers": [{"name": "p", "image": "i", "imagePullPolcy": "Always"}]}),
            "unknown field \"imagePullPolcy\"",
        ),
        (
            json!({"name": "x", "containers": [{"name": "p", "image": "i", "resources": {"limts": {"cpu": "1"}}}]}),
            "unknown field \"resources.limts\"",
        ),
        (
            json!({"name": "x", "containers": [{"name": "p", "image": "i", "ports": [{"containerPort": 80, "protocl": "TCP"}]}]}),
            "unknown field \"ports[0].protocl\"",
        ),
        (
            json!({"name": "x", "containers": [{"name": "p", "image": "i", "resources": {"requests": {"cpu": "lots"}}}]}),
            "\"lots\"",
        ),
        (
            json!({"name": "x", "selector": {"matchExpressions": [{"key": "a", "operator": "Within", "values": ["b"]}]}, "containers": [{"name": "p", "image": "i"}]}),
            "unknown operator",
        ),
        (
            json!({"name": "x", "containers": [{"name": "p", "image": "i", "canary": {"image": "j"}}]}),
            "either percent or selector",
        ),
        (json!({"name": "x"}), "injects no container"),
    ] {
        let err = set(bad.clone()).validate().unwrap_err();
        assert!(err.contains(part), "{bad}: {err}");
    }
}
