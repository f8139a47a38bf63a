//! The ordering policy keeps every order the user wrote and every edge declared.

use super::*;

fn is_regular_init(c: &Value) -> bool {
    c.get("restartPolicy").and_then(Value::as_str) != Some("Always")
}

/// `after.sidecars.dev/<a>: b,c`: a → {b, c}.
fn declared_after(object: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let meta = match kind {
        "Pod" => &object["metadata"],
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["metadata"],
        _ => &object["spec"]["template"]["metadata"],
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (k, v) in meta["annotations"].as_object().into_iter().flatten() {
        if let Some(name) = k.strip_prefix("after.sidecars.dev/") {
            let list = v.as_str().unwrap_or_default();
            out.entry(name.into())
                .or_default()
                .extend(list.split(',').map(|s| s.trim().to_string()));
        }
    }
    out
}

/// Whether `a` must start after `b` through declared edges.
fn depends(edges: &BTreeMap<String, BTreeSet<String>>, a: &str, b: &str) -> bool {
    let mut todo = vec![a.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(x) = todo.pop() {
        if !seen.insert(x.clone()) {
            continue;
        }
        for y in edges.get(&x).into_iter().flatten() {
            if y == b {
                return true;
            }
            todo.push(y.clone());
        }
    }
    false
}

/// Property 4: ordering never reorders two regular init containers, nor two app
/// containers, unless a declared edge asks for it. With no edges in its settings: an
/// edge there may name any container (the example's `*/proxyv2` first also matches an
/// init step of that image), and the declared ones are what this test can follow.
#[test]
fn ordering_keeps_the_order_the_user_wrote() {
    let h = RefCell::new(
        Harness::new(FRESH_EVERY, |p| {
            (p == "sidecar-ordering-policy").then(|| json!({"mode": "mutate"}))
        })
        .unwrap(),
    );
    let ordering = h.borrow().index("sidecar-ordering-policy");
    check("ordering-keeps-order", generate::pod(), |object, ns| {
        let request = create(object, ns, 11);
        let r = h.borrow_mut().eval_case(ordering, &request)?;
        if r.patch.is_none() {
            return Ok(());
        }
        let out = patched(&request, &r)?;
        let mut edges = declared_after(object);
        // A mesh's own init steps lead the init containers with their proxy when it is
        // converted: the layout the mesh injects natively, asked for by the known-sidecar
        // list.
        let model =
            sidecar_model::PodModel::from_object(object, &sidecar_model::KnownSidecars::default())
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .expect("a pod");
        let mesh_steps: Vec<String> = model
            .init_steps_before
            .iter()
            .filter(|r| model.containers[r.sidecar].mesh.is_some())
            .map(|r| model.containers[r.step].name.clone())
            .collect();
        // That layout is an edge like a declared one: every other init step after each mesh
        // step. What a declared edge puts before a mesh step goes before those steps too.
        for step in containers(object, "initContainers")
            .iter()
            .filter(|c| is_regular_init(c))
            .filter_map(|c| c["name"].as_str())
            .filter(|n| !mesh_steps.iter().any(|m| m == n))
        {
            edges
                .entry(step.to_string())
                .or_default()
                .extend(mesh_steps.iter().cloned());
        }
        // Init steps and Standard app containers: what the user ordered. A type
        // (`PostSidecar` after every app container, a sidecar made native) is an edge too.
        let explained = sidecar_model::explain::explain(
            object,
            &sidecar_model::KnownSidecars::default(),
            sidecar_model::KubeVersion::DEFAULT,
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .expect("a pod");
        let typed = |name: &str, want: sidecar_model::LifecycleType| {
            explained
                .containers
                .iter()
                .any(|c| c.name == name && c.lifecycle == want)
        };
        for (list, want) in [
            ("initContainers", sidecar_model::LifecycleType::Init),
            ("containers", sidecar_model::LifecycleType::Standard),
        ] {
            let names = |o: &Value| -> Vec<String> {
                containers(o, list)
                    .iter()
                    .filter(|c| list == "containers" || is_regular_init(c))
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .filter(|n| typed(n, want))
                    .collect()
            };
            let (before, after) = (names(object), names(&out));
            // The order the user wrote is a dependency too: each after the one before it.
            let mut edges = edges.clone();
            for pair in before.windows(2) {
                edges
                    .entry(pair[1].clone())
                    .or_default()
                    .insert(pair[0].clone());
            }
            let position = |v: &[String], n: &str| v.iter().position(|x| x == n);
            for (i, a) in before.iter().enumerate() {
                for b in &before[i + 1..] {
                    // a came before b; if b now comes first, an edge must ask for it.
                    if let (Some(pa), Some(pb)) = (position(&after, a), position(&after, b))
                        && pb < pa
                    {
                        prop_assert!(
                            depends(&edges, a, b) || mesh_steps.contains(b),
                            "{list}: {b:?} moved before {a:?} with no edge asking ({before:?} -> {after:?})"
                        );
                    }
                }
            }
        }
        Ok(())
    });
}
