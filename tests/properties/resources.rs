//! The resources the policies report equal a reference written from the Kubernetes formula,
//! and explain's.

use super::*;

/// Effective requests and limits per ARCHITECTURE.md, and the QoS class of
/// `ComputePodQOS`, computed here from the object (not by the model).
#[derive(Debug, PartialEq)]
struct Reference {
    requests: BTreeMap<String, i128>,
    /// `None`: unbounded.
    limits: BTreeMap<String, Option<i128>>,
    qos: &'static str,
}

fn quantities(v: &Value) -> BTreeMap<String, i128> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), nanos(q.as_str()?)?)))
        .collect()
}

fn reference(object: &Value, sidecar: impl Fn(&Value) -> bool) -> Reference {
    let kind = object["kind"].as_str().unwrap_or_default();
    let spec = object.pointer(spec_pointer(kind)).unwrap();
    let init = containers(object, "initContainers");
    let apps = containers(object, "containers");
    // API defaulting: a limit without a request is the request.
    let own = |c: &Value| {
        let limits = quantities(&c["resources"]["limits"]);
        let mut requests = quantities(&c["resources"]["requests"]);
        for (r, l) in &limits {
            requests.entry(r.clone()).or_insert(*l);
        }
        (requests, limits)
    };
    let mut names: BTreeSet<String> = BTreeSet::new();
    for c in init.iter().chain(&apps) {
        let (r, l) = own(c);
        names.extend(r.into_keys());
        names.extend(l.into_keys());
    }
    let pod_limits = quantities(&spec["resources"]["limits"]);
    let mut pod_requests = quantities(&spec["resources"]["requests"]);
    let overhead = quantities(&spec["overhead"]);
    // PodRequests adds the overhead's resources whatever the containers name.
    names.extend(overhead.keys().cloned());
    let aggregate = |x: &dyn Fn(&Value) -> Option<i128>| -> i128 {
        let mut agg: i128 = apps.iter().filter_map(x).sum();
        let (mut sidecars, mut peak) = (0i128, 0i128);
        for c in &init {
            let v = x(c).unwrap_or(0);
            let using = if sidecar(c) {
                agg += v;
                sidecars += v;
                sidecars
            } else {
                v + sidecars
            };
            peak = peak.max(using);
        }
        agg.max(peak)
    };
    // defaultPodRequests (the policies' default version, 1.34): with pod-level limits, a
    // pod-level cpu or memory request left out is the containers' aggregated request when
    // one of them requests it; any other left out is the limit.
    if !pod_limits.is_empty() {
        for r in ["cpu", "memory"] {
            let requested = init.iter().chain(&apps).any(|c| own(c).0.contains_key(r));
            if requested && !pod_requests.contains_key(r) {
                pod_requests.insert(r.to_string(), aggregate(&|c| own(c).0.get(r).copied()));
            }
        }
        for (r, l) in &pod_limits {
            pod_requests.entry(r.clone()).or_insert(*l);
        }
    }
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for r in names
        .iter()
        .chain(["cpu".to_string(), "memory".to_string()].iter())
    {
        let req = match pod_requests.get(r) {
            Some(p) if is_pod_level(r) => *p,
            _ => aggregate(&|c| own(c).0.get(r).copied()),
        };
        let req = req + overhead.get(r).copied().unwrap_or(0);
        if names.contains(r) || pod_requests.contains_key(r) {
            requests.insert(r.clone(), req);
        }
        let bounded = init.iter().chain(&apps).all(|c| own(c).1.contains_key(r));
        let lim = match pod_limits.get(r) {
            Some(p) if is_pod_level(r) => Some(*p),
            _ if !bounded => None,
            _ => Some(aggregate(&|c| own(c).1.get(r).copied())),
        };
        let lim = lim.map(|l| {
            if l != 0 {
                l + overhead.get(r).copied().unwrap_or(0)
            } else {
                l
            }
        });
        limits.insert(r.clone(), lim);
    }
    // ComputePodQOS: pod-level resources alone when present; otherwise every container.
    let qos = {
        let supported = |m: &BTreeMap<String, i128>| -> BTreeMap<String, i128> {
            m.iter()
                .filter(|(k, v)| (k.as_str() == "cpu" || k.as_str() == "memory") && **v != 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        // Up to 1.36 (the policies' default version is 1.34) any `spec.resources`, even
        // `{}`, decides; from 1.37 only one that names a resource.
        let pod_level = spec["resources"].is_object();
        let sets: Vec<(BTreeMap<String, i128>, BTreeMap<String, i128>)> = if pod_level {
            vec![(supported(&pod_requests), supported(&pod_limits))]
        } else {
            init.iter()
                .chain(&apps)
                .map(|c| {
                    let (r, l) = own(c);
                    (supported(&r), supported(&l))
                })
                .collect()
        };
        let mut req_sum: BTreeMap<String, i128> = BTreeMap::new();
        let mut lim_sum: BTreeMap<String, i128> = BTreeMap::new();
        let mut guaranteed = true;
        for (r, l) in &sets {
            for (k, v) in r {
                *req_sum.entry(k.clone()).or_default() += v;
            }
            for (k, v) in l {
                *lim_sum.entry(k.clone()).or_default() += v;
            }
            if !(l.contains_key("cpu") && l.contains_key("memory")) {
                guaranteed = false;
            }
        }
        if req_sum.is_empty() && lim_sum.is_empty() {
            "BestEffort"
        } else if guaranteed && req_sum == lim_sum {
            "Guaranteed"
        } else {
            "Burstable"
        }
    };
    Reference {
        requests,
        limits,
        qos,
    }
}

/// Pod-level resources (KEP-2837) cover cpu, memory and hugepages.
fn is_pod_level(resource: &str) -> bool {
    resource == "cpu" || resource == "memory" || resource.starts_with("hugepages-")
}

/// `cpu=600m,memory=unbounded` → figures.
fn summary(text: &str) -> BTreeMap<String, Option<i128>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.to_string(),
                if v == "unbounded" { None } else { nanos(v) },
            )
        })
        .collect()
}

/// Property 6: the effective requests, limits and QoS the resources policy reports
/// (wasm) equal the reference computed here and `explain` run natively.
#[test]
fn reported_resources_equal_the_reference_and_explain() {
    let h = RefCell::new(Harness::examples(FRESH_EVERY));
    let resources = h.borrow().index("sidecar-resources-policy");
    let known = sidecar_model::KnownSidecars::default();
    check("resources-reference", generate::pod(), |object, ns| {
        let request = create(object, ns, 5);
        let r = h.borrow_mut().eval_case(resources, &request)?;
        let Some(audit) = r.audit_annotations.clone() else {
            return Ok(());
        };
        // The figures are those of the pod as the policy leaves it.
        let out = patched(&request, &r)?;
        let explained =
            sidecar_model::explain::explain(&out, &known, sidecar_model::KubeVersion::DEFAULT)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .expect("a pod");
        let sidecar_names: BTreeSet<String> = explained
            .containers
            .iter()
            .filter(|c| c.lifecycle == sidecar_model::LifecycleType::Sidecar)
            .map(|c| c.name.clone())
            .collect();
        let want = reference(&out, |c| {
            // A sidecar where Kubernetes counts one: an init container with restartPolicy Always.
            c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
                && sidecar_names.contains(c["name"].as_str().unwrap_or_default())
        });
        let reported_requests: BTreeMap<String, i128> =
            summary(&audit["sidecars.dev/effective-requests"])
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect();
        let reported_limits = summary(&audit["sidecars.dev/effective-limits"]);
        prop_assert_eq!(&reported_requests, &want.requests, "requests of {}", out);
        for (r, want_limit) in &want.limits {
            let got = reported_limits.get(r).copied();
            // A resource nobody limits may be left out of the summary or read unbounded.
            match (want_limit, got) {
                (None, None | Some(None)) => {}
                (Some(w), Some(Some(g))) => prop_assert_eq!(*w, g, "limits.{} of {}", r, out),
                (Some(0), None) => {}
                (w, g) => prop_assert!(false, "limits.{r}: want {w:?}, got {g:?} of {out}"),
            }
        }
        prop_assert_eq!(
            audit["sidecars.dev/qos-class"].as_str(),
            want.qos,
            "qos of {}",
            out
        );
        // explain, natively, agrees with the wasm policy.
        let explained_requests: BTreeMap<String, i128> = explained
            .effective_requests
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), nanos(v)?)))
            .collect();
        prop_assert_eq!(
            &explained_requests,
            &reported_requests,
            "explain of {}",
            out
        );
        prop_assert_eq!(explained.qos_class.as_str(), want.qos);
        Ok(())
    });
}
