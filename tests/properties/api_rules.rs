//! Every policy, alone and with generated settings, never traps and never writes what the
//! API server would refuse; malformed objects are refused naming the field; kept failures
//! stay fixed.

use super::*;

#[test]
fn no_trap_and_mutations_keep_the_api_rules() {
    let h = RefCell::new(Harness::examples(FRESH_EVERY));
    check("api-rules", generate::pod(), |object, ns| {
        each_policy_keeps_the_rules(&mut h.borrow_mut(), object, ns)
    });
}

/// The same with the policies' default settings (`{}`).
#[test]
fn default_settings_keep_the_api_rules() {
    let h = RefCell::new(Harness::new(FRESH_EVERY, |_| Some(json!({}))).unwrap());
    check("api-rules-defaults", generate::pod(), |object, ns| {
        each_policy_keeps_the_rules(&mut h.borrow_mut(), object, ns)
    });
}

/// Malformed objects: a field of the wrong type, anywhere the model reads. Every policy
/// answers (no trap, no 500), and a rejection names the field and no serde position.
#[test]
fn malformed_objects_are_rejected_naming_the_field() {
    let h = RefCell::new(Harness::examples(FRESH_EVERY));
    let corruptions: [(&str, Value, &str); 6] = [
        ("/containers", json!("app"), "containers"),
        ("/containers/0/name", json!(7), "name"),
        ("/containers/0/ports", json!({"containerPort": 80}), "ports"),
        ("/containers/0/env", json!("TZ=UTC"), "env"),
        ("/initContainers", json!({"name": "x"}), "initContainers"),
        (
            "/containers/0/resources/requests",
            json!(["cpu"]),
            "requests",
        ),
    ];
    check("malformed", generate::pod_with(6, 2), |object, ns| {
        let kind = object["kind"].as_str().unwrap();
        for (at, bad, field) in &corruptions {
            let mut broken = object.clone();
            let pointer = format!("{}{at}", spec_pointer(kind));
            let Some(slot) = broken.pointer_mut(&pointer) else {
                continue;
            };
            *slot = bad.clone();
            let request = create(&broken, ns, 9);
            let mut h = h.borrow_mut();
            for i in 0..h.policies.len() {
                let r = h.eval_case(i, &request)?;
                let text = message(&r);
                let name = &h.policies[i].0;
                prop_assert!(!text.contains(" at line "), "{}: {}", name, text);
                if !r.allowed && text.contains("malformed") {
                    prop_assert!(
                        text.contains(field),
                        "{}: {:?} does not name {}",
                        name,
                        text,
                        field
                    );
                }
            }
        }
        Ok(())
    });
}

/// Every failure a property run kept: each policy on it, with the checks of
/// `each_policy_keeps_the_rules`.
#[test]
fn kept_failures_hold() {
    let dir = kept_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no kept failures in {}", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
    {
        let kept: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let ns = kept["namespace"].as_str().unwrap_or("default");
        let settings = |policy: &str| kept.get("settings").and_then(|s| s.get(policy)).cloned();
        let mut h = Harness::new(FRESH_EVERY, settings)
            .unwrap_or_else(|e| panic!("{}: {e}", relative(file)));
        each_policy_keeps_the_rules(&mut h, &kept["object"], ns)
            .unwrap_or_else(|e| panic!("{}: {e}", relative(file)));
    }
}

/// Settings for the three policies other than the injector (whose sets
/// `injection_never_duplicates_a_name` generates): levels, switches, versions, edges,
/// defaults and caps, from the values each accepts.
fn generated_settings() -> impl Strategy<Value = (Value, Value, Value)> {
    let level = || generate::one_of(&["deny", "warn", "off"]);
    let lifecycle = (
        any::<bool>(),
        generate::one_of(&["1.29", "v1.33.2", "1.34", "v1.35.0-eks-1", "1.36"]),
        level(),
        level(),
        level(),
    )
        .prop_map(|(convert, version, legacy, placement, probe)| {
            json!({"convert": convert, "kubernetesVersion": version,
                   "rules": {"legacy-sidecar": legacy, "field-placement": placement, "startup-probe": probe}})
        });
    let ordering = (
        generate::one_of(&["mutate", "validate"]),
        any::<bool>(),
        proptest::collection::vec(
            (
                generate::one_of(&["istio-proxy", "vault-agent", "fluent-bit", "app", "migrate"]),
                generate::one_of(&["Init", "Sidecar", "Standard"]),
            ),
            0..3,
        ),
    )
        .prop_map(|(mode, probe, edges)| {
            let edges: Vec<Value> = edges
                .iter()
                .map(|(name, t)| json!({"before": {"name": name}, "after": {"type": t}}))
                .collect();
            json!({"mode": mode, "requireStartupProbe": probe, "edges": edges})
        });
    let resources = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(generate::one_of(&["0", "100m", "1", "4"])),
        proptest::option::of(1..100u32),
        level(),
    )
        .prop_map(|(preserve, fill, limits, cap, share, qos)| {
            let mut s = json!({"preserveQos": preserve, "fillSidecarRequests": fill,
                "requireSidecarLimits": limits, "rules": {"qos": qos},
                "defaults": [{"image": "*/proxyv2", "requests": {"cpu": "100m", "memory": "128Mi"}},
                             {"name": "vault-agent", "requests": {"cpu": "50m"}, "limits": {"cpu": "200m", "memory": "64Mi"}}]});
            if let Some(cap) = cap {
                s["preserveQosMaxIncrease"] = json!({"cpu": cap});
            }
            if let Some(share) = share {
                s["maxSidecarShare"] = json!(share);
            }
            s
        });
    (lifecycle, ordering, resources)
}

/// Property 1 and 2 with generated settings: whatever a platform engineer sets, no trap,
/// and a mutation keeps the API server's container rules and is idempotent.
#[test]
fn generated_settings_keep_the_api_rules() {
    let mut runner = runner(cases());
    let result = runner.run(
        &(generated_settings(), generate::pod_with(12, 4)),
        |((lifecycle, ordering, resources), pod)| {
            let object = pod.object();
            prop_assume!(api_rules(&object).is_ok());
            let settings = |p: &str| match p {
                "sidecar-lifecycle-policy" => Some(lifecycle.clone()),
                "sidecar-ordering-policy" => Some(ordering.clone()),
                "sidecar-resources-policy" => Some(resources.clone()),
                _ => None,
            };
            let mut h = Harness::new(FRESH_EVERY, settings)
                .map_err(|e| TestCaseError::fail(format!("settings refused: {e}")))?;
            each_policy_keeps_the_rules(&mut h, &object, pod.namespace())
        },
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ((l, o, r), pod))) => {
            let kept = json!({"sidecar-lifecycle-policy": l, "sidecar-ordering-policy": o,
                              "sidecar-resources-policy": r});
            let path = keep("generated-settings", &pod, Some(kept));
            panic!("{reason}\nminimal object and settings kept in {path}")
        }
        Err(e) => panic!("{e}"),
    }
}
