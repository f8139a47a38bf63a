//! Injection never gives a pod two containers, volumes or secrets of one name.

use super::*;

/// Generated sidecar sets: namespaces and container names that overlap on purpose.
fn sets() -> impl Strategy<Value = Value> {
    let set = (
        proptest::collection::vec(
            generate::one_of(&["team-?", "team-a", "team-*", "shop", "*", "pay-*", "t?am-b"]),
            0..3,
        ),
        proptest::collection::vec(
            generate::one_of(&["proxy", "logs", "agent", "istio-proxy", "app"]),
            1..3,
        ),
        proptest::option::of(generate::one_of(&["enabled", "off"])),
        proptest::collection::vec(generate::one_of(&["shared", "data", "logs"]), 0..3),
        any::<bool>(),
        any::<bool>(),
    );
    proptest::collection::vec(set, 1..4).prop_map(|sets| {
        let sets: Vec<Value> = sets
            .into_iter()
            .enumerate()
            .map(|(i, (namespaces, names, mesh, volumes, share, transfer))| {
                let containers: Vec<Value> = names
                    .iter()
                    .map(|n| {
                        json!({"name": n, "image": format!("example.com/{n}:1"),
                               "env": [{"name": "TZ", "value": "UTC"}],
                               "volumeMounts": volumes.iter().map(|v| json!({"name": v, "mountPath": format!("/set/{v}")})).collect::<Vec<_>>()})
                    })
                    .collect();
                let mut set = json!({
                    "name": format!("set-{i}"),
                    "namespaces": namespaces,
                    "containers": containers,
                    "volumes": volumes.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect::<Vec<_>>(),
                    "shareVolumes": share,
                });
                if let Some(m) = mesh {
                    set["selector"] = json!({"matchLabels": {"mesh": m}});
                }
                if transfer {
                    set["transferEnv"] = json!([{"sourceContainer": "app", "envName": "TZ"}, {"sourceContainer": "app", "envName": "LOG_LEVEL"}]);
                }
                set
            })
            .collect();
        json!({"sidecarSets": sets})
    })
}

/// Property 5: injection never adds a container, volume or env name twice, whatever
/// globs and overlaps the sets use; settings that could are refused.
#[test]
fn injection_never_duplicates_a_name() {
    let runtime = runtime();
    let path = common::module("wasm/sidecar-injector-policy.wasm");
    let policy = runtime
        .load_bytes(
            "injector",
            &std::fs::read(path).unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
    let mut runner = runner(cases() * 2);
    let refused = std::cell::Cell::new(0);
    let injected = std::cell::Cell::new(0);
    let result = runner.run(&(sets(), generate::bare_pod(8)), |(settings, pod)| {
        let object = pod.object();
        prop_assume!(api_rules(&object).is_ok());
        let Ok(evaluator) = Evaluator::new(policy.clone(), settings.clone()) else {
            refused.set(refused.get() + 1);
            return Ok(());
        };
        let request = create(&object, pod.namespace(), 3);
        let evaluation = evaluator.evaluate(&request);
        let r = evaluation.response;
        prop_assert!(evaluation.failure.is_none(), "{:?}", evaluation.failure);
        if r.patch.is_some() {
            injected.set(injected.get() + 1);
            let out = patched(&request, &r)?;
            api_rules(&out).map_err(|e| TestCaseError::fail(format!("{e}, with {settings}")))?;
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            eprintln!(
                "injection: {} generated settings refused, {} pods injected",
                refused.get(),
                injected.get()
            );
            // Cases that inject nothing would prove nothing.
            assert!(
                injected.get() * 10 >= cases() as usize,
                "too few injections"
            );
        }
        Err(TestError::Fail(reason, (settings, pod))) => {
            let kept = json!({"sidecar-injector-policy": settings});
            let path = keep("injection", &pod, Some(kept));
            panic!("{reason}\nminimal object and settings kept in {path}")
        }
        Err(e) => panic!("{e}"),
    }
}
