//! Property tests: generated pods and workloads through the compiled `.wasm` of every
//! policy, in wasmtime in-process (a reused instance, and a fresh one every so often),
//! with the example settings and with generated ones. A failure shrinks to a minimal
//! object, which is written to `tests/fixtures/properties/` (with the settings it failed
//! with) and replayed by `kept_failures_hold` from then on.
//!
//! `PROPTEST_CASES` sets the number of cases of each property (256 by default),
//! `PROPTEST_SEED` the seed (a fixed one by default, so CI runs the same cases).

mod common;
mod generate;
mod harness;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Value, json};
use sidecarctl::admission::AdmissionResponse;
use sidecarctl::evaluation::Evaluator;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use generate::{GenPod, api_rules, create, nanos, spec_pointer};
use harness::{Harness, POLICIES, runtime};

/// One in this many evaluations gets a fresh instance, as policy-server gives every one.
const FRESH_EVERY: usize = 8;

/// The harness's evaluation as a property's failure.
trait Eval {
    fn eval_case(&mut self, i: usize, request: &Value) -> Result<AdmissionResponse, TestCaseError>;
}

impl Eval for Harness {
    fn eval_case(&mut self, i: usize, request: &Value) -> Result<AdmissionResponse, TestCaseError> {
        self.eval(i, request).map_err(TestCaseError::fail)
    }
}

fn message(r: &AdmissionResponse) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// The object after the response's patch.
fn patched(request: &Value, r: &AdmissionResponse) -> Result<Value, TestCaseError> {
    r.patched(&request["object"])
        .map_err(|e| TestCaseError::fail(format!("the patch does not apply: {e:#}")))
}

fn with_object(request: &Value, object: &Value) -> Value {
    let mut again = request.clone();
    again["object"] = object.clone();
    again
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// The same cases on every run unless `PROPTEST_SEED` asks for others (CI stays
/// reproducible; a long local run explores with new seeds).
fn runner(cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_0001);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn kept_dir() -> PathBuf {
    common::root().join("tests/fixtures/properties")
}

/// Runs `property` on objects from `strategy`; a failure is shrunk, kept as a fixture
/// and reported with its path.
fn check<S: Strategy<Value = GenPod>>(
    name: &str,
    strategy: S,
    property: impl Fn(&Value, &str) -> Result<(), TestCaseError>,
) {
    let mut runner = runner(cases());
    let result = runner.run(&strategy, |pod| {
        let object = pod.object();
        prop_assume!(api_rules(&object).is_ok());
        property(&object, pod.namespace())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, pod)) => {
            let path = keep(name, &pod, None);
            panic!("{name}: {reason}\nminimal object kept in {path}");
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Keeps a shrunk failure as a fixture `kept_failures_hold` replays: the object, its
/// namespace, and the settings per policy it failed with (the examples' otherwise).
fn keep(name: &str, pod: &GenPod, settings: Option<Value>) -> String {
    let dir = kept_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut kept = json!({"property": name, "namespace": pod.namespace(), "object": pod.object()});
    if let Some(settings) = settings {
        kept["settings"] = settings;
    }
    let text = serde_json::to_string_pretty(&kept).unwrap();
    let digest = text
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let path = dir.join(format!("{name}-{digest:016x}.json"));
    std::fs::write(&path, text).unwrap();
    relative(&path)
}

/// Property 1, and the rules of property 2 for each policy on its own: no trap, no
/// deadline, no 500; a mutation keeps the API server's container rules; a rejection
/// says what and never where in serde's terms.
fn each_policy_keeps_the_rules(
    h: &mut Harness,
    object: &Value,
    ns: &str,
) -> Result<(), TestCaseError> {
    let request = create(object, ns, h.calls as u64);
    for i in 0..h.policies.len() {
        let r = h.eval_case(i, &request)?;
        let text = message(&r);
        prop_assert!(!text.contains(" at line "), "{}: {text}", h.policies[i].0);
        if r.patch.is_some() {
            let out = patched(&request, &r)?;
            api_rules(&out).map_err(|e| {
                TestCaseError::fail(format!("{} broke an API rule: {e}", h.policies[i].0))
            })?;
            // Property 3: run on its own output it changes nothing more.
            let again = h.eval_case(i, &with_object(&request, &out))?;
            prop_assert!(
                again.patch.is_none(),
                "{} is not idempotent: {:?}",
                h.policies[i].0,
                again.decoded_patch().ok().flatten()
            );
        }
    }
    Ok(())
}

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

/// The mutating policies applied in `order`, each reinvoked after the others as the
/// API server does (until nothing changes); `None` when one rejects.
fn chain(
    h: &mut Harness,
    request: &Value,
    order: &[usize],
) -> Result<Option<Value>, TestCaseError> {
    let mut object = request["object"].clone();
    for _round in 0..4 {
        let mut changed = false;
        for &i in order {
            let current = with_object(request, &object);
            let r = h.eval_case(i, &current)?;
            if !r.allowed {
                return Ok(None);
            }
            if r.patch.is_some() {
                object = patched(&current, &r)?;
                changed = true;
            }
        }
        if !changed {
            return Ok(Some(object));
        }
    }
    Err(TestCaseError::fail(format!(
        "the policies in order {order:?} never settle"
    )))
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// Property 3: the four mutating policies reach the same pod in every order.
#[test]
fn the_policies_commute() {
    let h = RefCell::new(Harness::examples(FRESH_EVERY));
    let orders = permutations(POLICIES.len());
    check("commute", generate::pod_with(12, 4), |object, ns| {
        let request = create(object, ns, 7);
        let mut reached: Vec<(Vec<usize>, Value)> = Vec::new();
        for order in &orders {
            if let Some(out) = chain(&mut h.borrow_mut(), &request, order)? {
                api_rules(&out).map_err(|e| {
                    TestCaseError::fail(format!("order {order:?} broke an API rule: {e}"))
                })?;
                if let Some((first, seen)) = reached.first() {
                    prop_assert_eq!(
                        seen,
                        &out,
                        "order {:?} and order {:?} reach different pods",
                        first,
                        order
                    );
                }
                reached.push((order.clone(), out));
            }
        }
        Ok(())
    });
}

fn containers(object: &Value, list: &str) -> Vec<Value> {
    let kind = object["kind"].as_str().unwrap_or_default();
    object
        .pointer(spec_pointer(kind))
        .and_then(|s| s[list].as_array().cloned())
        .unwrap_or_default()
}

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
        let edges = declared_after(object);
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
        // Init steps and Standard app containers: what the user ordered. A type
        // (`PostSidecar` after every app container, a sidecar made native) is an edge too.
        let explained =
            sidecar_model::explain::explain(object, &sidecar_model::KnownSidecars::default())
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
    for (r, l) in &pod_limits {
        pod_requests.entry(r.clone()).or_insert(*l);
    }
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
    // ComputePodQOS: pod-level resources alone when set; otherwise every container.
    let qos = {
        let supported = |m: &BTreeMap<String, i128>| -> BTreeMap<String, i128> {
            m.iter()
                .filter(|(k, v)| (k.as_str() == "cpu" || k.as_str() == "memory") && **v != 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let pod_level = !supported(&pod_requests).is_empty() || !supported(&pod_limits).is_empty();
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
        let explained = sidecar_model::explain::explain(&out, &known)
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

fn relative(path: &Path) -> String {
    path.strip_prefix(common::root())
        .unwrap_or(path)
        .display()
        .to_string()
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
