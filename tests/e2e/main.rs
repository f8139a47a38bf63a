//! Every policy behind a real API server: kube-apiserver, kube-controller-manager and
//! etcd built from source at a pinned release (`make controlplane`), `sidecarctl serve`
//! as the webhook, the four example policies registered as Kubewarden registers them.
//! What the API server stores is held to what `sidecarctl run` of the same policies gives;
//! what it refuses must be refused by one of our policies, never by the API server after
//! one of our patches. Skips with one line when the control plane is not built.

#[path = "../common/mod.rs"]
mod common;
#[path = "../generate/mod.rs"]
mod generate;

mod admission;
mod cluster;
mod env;
mod export;
mod kubewarden;
mod rollout;
mod workloads;

use env::{Outcome, env};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The kinds the policies read; anything else in a fixture folder is not for them.
const KINDS: [&str; 8] = generate::KINDS;

/// An object to create, and where it came from.
struct Case {
    source: String,
    object: Value,
}

/// Documents of a YAML or JSON file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).into_iter().collect();
    }
    use serde::Deserialize;
    // A malformed document ends the file: the deserializer yields its error again and again.
    serde_yaml_ng::Deserializer::from_str(&text)
        .map_while(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// The object a document stands for: an object of a kind the policies read, or the
/// object of a CREATE request or review.
fn object_of(document: &Value) -> Option<Value> {
    let request = document.get("request").unwrap_or(document);
    let object = if request.get("operation").is_some() {
        if request["operation"] != "CREATE" {
            return None;
        }
        &request["object"]
    } else {
        document
    };
    KINDS
        .contains(&object["kind"].as_str()?)
        .then(|| object.clone())
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
}

/// Ready to create: what only the API server sets removed, a name of its own (so objects
/// from different files do not collide), and a namespace.
fn prepared(mut object: Value, index: usize) -> Value {
    let metadata = object["metadata"].as_object_mut().unwrap();
    for key in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "ownerReferences",
        "selfLink",
        "generation",
    ] {
        metadata.remove(key);
    }
    if let Some(name) = metadata.get("name").and_then(Value::as_str) {
        // CronJob names are limited to 52 characters.
        let stem: String = name.chars().take(40).collect();
        let stem = stem.trim_end_matches(['-', '.']);
        metadata.insert("name".into(), json!(format!("{stem}-e{index}")));
    } else if !metadata.contains_key("generateName") {
        metadata.insert("generateName".into(), json!("e2e-"));
    }
    metadata
        .entry("namespace")
        .or_insert_with(|| json!("default"));
    object.as_object_mut().unwrap().remove("status");
    object
}

fn example_and_fixture_cases() -> Vec<Case> {
    let root = common::root();
    let mut files = Vec::new();
    files_under(&root.join("examples/pods"), &mut files);
    files_under(&root.join("tests/fixtures"), &mut files);
    if let Some(corpus) = common::corpus() {
        files_under(&corpus, &mut files);
    }
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let source = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for document in documents(&file) {
            if let Some(object) = object_of(&document) {
                cases.push(Case {
                    source: source.clone(),
                    object,
                });
            }
        }
    }
    cases
}

/// `count` pods and workloads from the property tests' generators, the same every run.
fn generated_cases(count: usize) -> Vec<Case> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&0x5eed_e2e0_0001u64.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let strategy = generate::pod();
    let mut cases = Vec::new();
    while cases.len() < count {
        let pod = strategy.new_tree(&mut runner).unwrap().current();
        let object = pod.object();
        if generate::api_rules(&object).is_err() {
            continue;
        }
        cases.push(Case {
            source: format!("generated #{}", cases.len()),
            object,
        });
    }
    cases
}

/// A stored object's spec and the labels and annotations its policies may change, with
/// what differs from one creation to the next taken out: the ServiceAccount token
/// volume's random suffix, the uids a Job's selector carries, and the object's own name
/// (in a Job's labels).
fn comparable(object: &Value) -> Value {
    let text = json!({
        "spec": object["spec"],
        "labels": common::pod_metadata(object)["labels"],
        "annotations": common::pod_metadata(object)["annotations"],
    })
    .to_string();
    let volume = regex::Regex::new(r"kube-api-access-[a-z0-9]{5}").unwrap();
    let uid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let mut text = uid
        .replace_all(&volume.replace_all(&text, "kube-api-access"), "<uid>")
        .into_owned();
    if let Some(name) = object["metadata"]["name"].as_str() {
        text = text.replace(&format!("\"{name}\""), "\"<name>\"");
    }
    serde_json::from_str(&text).unwrap()
}

/// Where two values differ, a line per JSON pointer (the first few).
fn differences(got: &Value, want: &Value) -> String {
    fn walk(at: String, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (u, v) = (
                        x.get(key).unwrap_or(&Value::Null),
                        y.get(key).unwrap_or(&Value::Null),
                    );
                    walk(format!("{at}/{key}"), u, v, out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (u, v)) in x.iter().zip(y).enumerate() {
                    walk(format!("{at}/{i}"), u, v, out);
                }
            }
            _ if a != b => out.push(format!("  {at}: stored {a}, run {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(String::new(), got, want, &mut out);
    out.truncate(6);
    out.join("\n")
}

/// What happened to one object.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Verdict {
    /// Stored, equal to what the policies give locally.
    Stored,
    /// Refused by one of our policies, with its message.
    RefusedByPolicy,
    /// Refused by the API server for what the object itself says, with or without our
    /// policies (the same error through no webhook).
    InvalidAlone,
    /// Invalid alone, and stored after the policies fixed it.
    FixedByPolicies,
}

/// A stored Pod's `status.qosClass`, which the API server computes, against the QoS class
/// the resources model gives the stored spec on this version.
fn same_qos_class(env: &env::Env, stored: &Value) -> Result<(), String> {
    if stored["kind"] != "Pod" {
        return Ok(());
    }
    let version = sidecar_model::KubeVersion::parse(&env.plane.version).unwrap();
    let explained =
        sidecar_model::explain::explain(stored, &sidecar_model::KnownSidecars::default(), version)
            .map_err(|e| format!("the model cannot read the stored pod: {e}"))?
            .expect("a pod");
    let api = stored["status"]["qosClass"].as_str().unwrap_or("none");
    if api == explained.qos_class {
        Ok(())
    } else {
        Err(format!(
            "the API server stored qosClass {api}, the model says {} (spec.resources {})",
            explained.qos_class, stored["spec"]["resources"]
        ))
    }
}

fn judge(env: &env::Env, case: &Case, index: usize) -> Result<(Verdict, Option<Value>), String> {
    let (verdict, stored) = judge_storage(env, case, index)?;
    if let Some(stored) = &stored {
        same_qos_class(env, stored)?;
    }
    Ok((verdict, stored))
}

fn judge_storage(
    env: &env::Env,
    case: &Case,
    index: usize,
) -> Result<(Verdict, Option<Value>), String> {
    let object = prepared(case.object.clone(), index);
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    env.namespace(&namespace);
    let alone = env.admitted_by_the_api_server(&object);
    let stored = env.plane.create(Some(&namespace), &object, false);
    let Ok(admitted) = alone else {
        let alone = alone.unwrap_err();
        return Ok(match stored {
            Ok(stored) => (Verdict::FixedByPolicies, Some(stored)),
            Err(e) if e.message.contains("denied the request") => (Verdict::RefusedByPolicy, None),
            Err(e) => {
                eprintln!(
                    "  {}: refused with or without the policies:\n    alone: {}\n    with:  {}",
                    case.source, alone.message, e.message
                );
                (Verdict::InvalidAlone, None)
            }
        });
    };
    let reference = env.run_chain(&admitted, &namespace)?;
    match (stored, reference) {
        (Ok(stored), Outcome::Stored(expected)) => {
            let (got, want) = (comparable(&stored), comparable(&expected));
            if got == want {
                Ok((Verdict::Stored, Some(stored)))
            } else {
                Err(format!(
                    "stored differs from sidecarctl run of the chain:\n{}",
                    differences(&got, &want)
                ))
            }
        }
        (Err(e), Outcome::Refused { policy, message }) => {
            let webhook =
                format!("admission webhook \"{policy}.kubewarden.admission\" denied the request");
            if e.message.contains(&webhook) && e.message.contains(message.trim()) {
                Ok((Verdict::RefusedByPolicy, None))
            } else {
                Err(format!(
                    "refused, but not with {policy}'s message ({message}): {e}"
                ))
            }
        }
        (Ok(_), Outcome::Refused { policy, message }) => Err(format!(
            "stored, though {policy} refuses it locally: {message}"
        )),
        (Err(e), Outcome::Stored(_)) => Err(format!(
            "the API server refuses what the policies wrote: {e}"
        )),
    }
}

/// Runs `f` over `cases` on a few threads, in order of the cases.
fn over_cases<T: Send>(cases: &[Case], f: impl Fn(usize, &Case) -> T + Sync) -> Vec<T> {
    let threads = 4;
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                scope.spawn(move || {
                    cases
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % threads == t)
                        .map(|(i, case)| (i, f(i, case)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Check 1: Every example pod and workload, every fixture, every Istio corpus workload and
/// 1,000 generated pods and workloads (`E2E_GENERATED` to change the count): stored as
/// the policies leave them, or refused with a policy's message.
/// Check 2: Then the same objects again with every webhook reinvoked where needed
/// (`reinvocationPolicy: IfNeeded`): the stored objects are the same, since the policies'
/// output is a fixed point of the chain.
#[test]
fn the_api_server_refuses_nothing_the_policies_write() {
    let Some(env) = env() else { return };
    let generated = std::env::var("E2E_GENERATED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let mut cases = example_and_fixture_cases();
    let from_files = cases.len();
    cases.extend(generated_cases(generated));
    let results = over_cases(&cases, |i, case| judge(env, case, i));

    let mut counts: BTreeMap<(&str, Verdict), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, result) in results.iter().enumerate() {
        let group = if i < from_files { "files" } else { "generated" };
        match result {
            Ok((verdict, _)) => *counts.entry((group, *verdict)).or_insert(0) += 1,
            Err(e) => failures.push(format!("{}: {e}", cases[i].source)),
        }
    }
    eprintln!(
        "Kubernetes {}: {from_files} objects from examples, fixtures and the corpus, {generated} generated: {counts:?}",
        env.plane.version
    );
    // Every stored Pod's qosClass was held to the model's in `judge`: how many, of which.
    let mut classes: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for (_, stored) in results.iter().flatten() {
        if let Some(pod) = stored.as_ref().filter(|s| s["kind"] == "Pod") {
            let class = pod["status"]["qosClass"]
                .as_str()
                .unwrap_or("none")
                .to_string();
            *classes
                .entry((class, pod["spec"]["resources"].is_object()))
                .or_insert(0) += 1;
        }
    }
    eprintln!(
        "qosClass of the API server and of the model agree on every stored Pod ((class, pod-level resources): count): {classes:?}"
    );
    assert!(
        counts
            .get(&("files", Verdict::Stored))
            .copied()
            .unwrap_or(0)
            > 0
            && counts
                .get(&("generated", Verdict::Stored))
                .copied()
                .unwrap_or(0)
                > 0
    );
    assert!(
        failures.is_empty(),
        "{} of {} objects:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );

    // 2. Reinvoked where needed.
    let _never_again = env.reinvoke("IfNeeded");
    let again = over_cases(&cases, |i, case| {
        let object = prepared(case.object.clone(), 500_000 + i);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string();
        env.plane.create(Some(&namespace), &object, false)
    });
    let mut changed = Vec::new();
    let mut compared = 0;
    for (i, (first, second)) in results.iter().zip(&again).enumerate() {
        match (first, second) {
            (Ok((_, Some(first))), Ok(second)) => {
                compared += 1;
                if comparable(first) != comparable(second) {
                    changed.push(format!(
                        "{} (stored without reinvocation, run with):\n{}",
                        cases[i].source,
                        differences(&comparable(first), &comparable(second))
                    ));
                }
            }
            (Ok((_, None)), Err(_)) => {}
            (first, second) => changed.push(format!(
                "{}: {first:?} without reinvocation, {second:?} with",
                cases[i].source
            )),
        }
    }
    eprintln!(
        "reinvocationPolicy IfNeeded: {compared} stored objects compared, {} differ",
        changed.len()
    );
    assert!(
        changed.is_empty(),
        "{}",
        changed
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Check 9: What a user pays (`make e2e-bench`): `E2E_BENCH_PODS` pods (500) created through
/// the four policies and through no webhook, alternately, timed as the client sees each
/// creation. A benchmark: it prints, it asserts nothing about time.
/// The `p` quantile (0 to 1) of the timings, by nearest rank.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "a benchmark: make e2e-bench"]
fn pod_creation_with_and_without_the_policies() {
    let Some(env) = env() else { return };
    let count: usize = std::env::var("E2E_BENCH_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    // A namespace the injector's mesh set selects, so every policy has work to do.
    let with = "pay-bench";
    env.namespace(with);
    let pod = env::yaml(&common::root().join("examples/pods/shop-checkout-pod.yaml"));
    let time = |namespace: &str, i: usize| {
        let mut object = pod.clone();
        object["metadata"]["name"] = json!(format!("bench-{i}"));
        object["metadata"]["namespace"] = json!(namespace);
        let start = std::time::Instant::now();
        env.plane
            .create(Some(namespace), &object, false)
            .unwrap_or_else(|e| panic!("{namespace}: {e}"));
        start.elapsed().as_secs_f64() * 1000.0
    };
    let (mut through, mut around) = (Vec::new(), Vec::new());
    for i in 0..count {
        through.push(time(with, i));
        around.push(time(kubewarden::KUBEWARDEN_NAMESPACE, i));
    }
    let (t50, t99) = (
        percentile(&mut through, 0.5),
        percentile(&mut through, 0.99),
    );
    let (a50, a99) = (percentile(&mut around, 0.5), percentile(&mut around, 0.99));
    println!(
        "Kubernetes {}, {count} pods each, examples/pods/shop-checkout-pod.yaml (injected, converted, ordered, resourced):",
        env.plane.version
    );
    println!(
        "  through the four policies ({}): p50 {t50:.2} ms, p99 {t99:.2} ms",
        env::engine()
    );
    println!("  through no webhook: p50 {a50:.2} ms, p99 {a99:.2} ms");
    println!(
        "  added per pod creation: p50 {:.2} ms, p99 {:.2} ms",
        t50 - a50,
        t99 - a99
    );
}
