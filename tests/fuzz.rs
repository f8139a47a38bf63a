//! The bounded long run (`make fuzz`): `FUZZ_N` requests (2,000 by default, as `make
//! test` runs it), generated or taken from the Istio corpus, the fixtures and the
//! examples, then mutated (types changed, fields deleted, list entries duplicated, giant
//! strings, deep nesting, numbers out of range, lone surrogates and bytes that are not
//! UTF-8 in the payload's text), through every policy's wasm: a reused instance, a fresh
//! one for 1 in 100. Per policy it prints requests, traps, rejections, mutations,
//! property violations and evaluations per second; every input that trapped or broke a
//! property is saved under `build/fuzz/`, and the run fails.
//!
//! Properties held on every answer: an answer at all (no trap, deadline or guest error);
//! a validation response that parses; a rejection with a message and no serde position;
//! a mutated object that is an object, keeps the API server's container rules when the
//! input did, and (1 in 10) is left alone when the policy is run on it again.

mod common;
mod generate;
mod harness;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use sidecarctl::admission::{self, PolicyAnswer};
use sidecarctl::runtime::HostError;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::Harness;

/// The most inputs kept per policy: the first few say what is wrong.
const KEEP: usize = 20;

#[derive(Default)]
struct Tally {
    requests: u64,
    traps: u64,
    rejections: u64,
    mutations: u64,
    violations: u64,
    time: Duration,
    kept: Vec<PathBuf>,
}

/// Requests to start from: the corpus, the examples and the fixtures that are objects.
fn seeds() -> Vec<Value> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(dir) = common::corpus() {
        files.extend(common::corpus_requests(&dir).into_iter().map(|(p, _)| p));
    }
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
                out.push(path);
            }
        }
    }
    for dir in ["examples/pods", "examples/bench", "tests/fixtures"] {
        walk(&common::root().join(dir), &mut files);
    }
    files.sort();
    files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let doc = admission::parse_document(&text, &f.display().to_string()).ok()?;
            // Kept failures of the property tests are {property, namespace, object}.
            let doc = match doc.get("object") {
                Some(o) if doc.get("property").is_some() => o.clone(),
                _ => doc,
            };
            let request = admission::to_request(doc).ok()?;
            request["object"].get("kind").is_some().then_some(request)
        })
        .collect()
}

/// Every node's JSON pointer, up to a bound (a giant object need not be listed whole).
fn pointers(v: &Value, at: &mut String, out: &mut Vec<String>) {
    if out.len() >= 4000 {
        return;
    }
    out.push(at.clone());
    let len = at.len();
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                pointers(child, at, out);
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push('/');
                at.push_str(&i.to_string());
                pointers(child, at, out);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// 1 KiB, 64 KiB, and now and then 1 MiB (a third of the 3 MiB an API server sends).
fn giant(rng: &mut fastrand::Rng) -> String {
    let n = match rng.u8(..10) {
        0 => 1 << 20,
        1..5 => 64 << 10,
        _ => 1 << 10,
    };
    "x".repeat(n)
}

fn nested(depth: usize, inner: Value) -> Value {
    (0..depth).fold(inner, |v, _| Value::Array(vec![v]))
}

/// One change to the object (or the request around it).
fn mutate(request: &mut Value, rng: &mut fastrand::Rng) {
    if rng.u8(..20) == 0 {
        let ops = ["UPDATE", "DELETE", "CONNECT", "", "create"];
        request["operation"] = json!(ops[rng.usize(..ops.len())]);
        if rng.bool() {
            request["oldObject"] = request["object"].clone();
        }
        return;
    }
    let object = &mut request["object"];
    let mut all = Vec::new();
    pointers(object, &mut String::new(), &mut all);
    let at = all[rng.usize(..all.len())].clone();
    let Some(node) = object.pointer_mut(&at) else {
        return;
    };
    match rng.u8(..7) {
        // A value of another type.
        0 => {
            let others = [
                json!("x"),
                json!(7),
                json!(-1),
                json!(true),
                Value::Null,
                json!([]),
                json!({}),
                json!([node.clone()]),
                json!({"x": node.clone()}),
            ];
            *node = others[rng.usize(..others.len())].clone();
        }
        // A field or entry deleted.
        1 => {
            if let Some((parent, key)) = at.rsplit_once('/') {
                match object.pointer_mut(parent) {
                    Some(Value::Object(m)) => {
                        m.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = key.parse::<usize>()
                            && i < a.len()
                        {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        // A list entry twice (two containers, volumes or env vars of one name).
        2 => {
            if let Value::Array(a) = node
                && !a.is_empty()
            {
                let copy = a[rng.usize(..a.len())].clone();
                a.insert(rng.usize(..=a.len()), copy);
            } else if let Some((parent, _)) = at.rsplit_once('/')
                && let Some(Value::Array(a)) = object.pointer_mut(parent)
                && !a.is_empty()
            {
                let copy = a[rng.usize(..a.len())].clone();
                a.push(copy);
            }
        }
        3 => *node = json!(giant(rng)),
        // Deep nesting, around serde_json's recursion limit of 128 and beyond.
        4 => {
            let depth = [64, 125, 126, 127, 128, 129, 500][rng.usize(..7)];
            *node = nested(depth, node.take());
        }
        // Numbers out of range for what the field holds.
        5 => {
            let numbers = [
                json!(u64::MAX),
                json!(i64::MIN),
                json!(1e308),
                json!(-0.0),
                json!(0.5),
                json!(4294967296u64),
                json!(-2147483649i64),
            ];
            *node = numbers[rng.usize(..numbers.len())].clone();
        }
        // A string of odd characters: control codes, quotes, far planes.
        _ => *node = json!("\u{0}\u{1f}\"\\\u{7f}\u{fffd}\u{10ffff}é🙂"),
    }
}

/// Changes to the payload's text that no `Value` can hold: a lone surrogate escape, a
/// byte that is not UTF-8, a number beyond f64, a cut-off payload.
fn mutate_text(payload: &mut Vec<u8>, rng: &mut fastrand::Rng) {
    let quotes: Vec<usize> = payload
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'"')
        .map(|(i, _)| i)
        .collect();
    let at = quotes
        .get(rng.usize(..quotes.len().max(1)))
        .copied()
        .unwrap_or(0)
        + 1;
    let at = at.min(payload.len());
    let insert: &[u8] = match rng.u8(..5) {
        0 => br"\ud800",
        1 => &[0xff, 0xfe],
        2 => &[0xc3],
        // A number where a string was: beyond what f64 can hold.
        3 => b"1e400,\"",
        _ => {
            let cut = rng.usize(..payload.len().max(1));
            payload.truncate(cut);
            return;
        }
    };
    payload.splice(at..at, insert.iter().copied());
}

/// Saves an input that trapped or broke a property (raw payload bytes) and why.
fn keep(tally: &mut Tally, policy: &str, n: u64, payload: &[u8], why: &str) {
    eprintln!("{policy} #{n}: {why}");
    if tally.kept.len() >= KEEP {
        return;
    }
    let dir = common::root().join("build/fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{policy}-{n}.payload"));
    std::fs::write(&file, payload).unwrap();
    std::fs::write(file.with_extension("why"), why).unwrap();
    tally.kept.push(file);
}

#[test]
fn fuzz() {
    // Deep values are dropped and written recursively, here as in any serde_json user.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}

fn run() {
    let n: u64 = std::env::var("FUZZ_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xf022);
    let mut rng = fastrand::Rng::with_seed(seed);
    let seeds = seeds();
    assert!(!seeds.is_empty(), "no seed requests");
    let mut h = Harness::examples(100);
    let settings: Vec<String> = (0..h.policies.len())
        .map(|i| h.settings(i).to_string())
        .collect();
    let mut tallies: Vec<Tally> = (0..h.policies.len()).map(|_| Tally::default()).collect();
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut generator = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = generate::pod();
    let started = Instant::now();
    for i in 0..n {
        let mut request = if rng.u8(..10) < 3 {
            let pod = strategy.new_tree(&mut generator).unwrap().current();
            generate::create(&pod.object(), pod.namespace(), i)
        } else {
            seeds[rng.usize(..seeds.len())].clone()
        };
        request["uid"] = json!(format!("00000000-0000-4000-8000-{i:012x}"));
        let changes = [0, 1, 1, 2, 3][rng.usize(..5)];
        for _ in 0..changes {
            mutate(&mut request, &mut rng);
        }
        let valid_input = generate::api_rules(&request["object"]).is_ok();
        let text_change = rng.u8(..10) == 0;
        let request_text = request.to_string();
        for (p, tally) in tallies.iter_mut().enumerate() {
            let mut payload =
                format!(r#"{{"request":{request_text},"settings":{}}}"#, settings[p]).into_bytes();
            if text_change {
                mutate_text(&mut payload, &mut rng);
            }
            let name = h.policies[p].0.clone();
            tally.requests += 1;
            let t = Instant::now();
            let result = h.call(p, &payload);
            tally.time += t.elapsed();
            let answer = match result {
                Ok(bytes) => serde_json::from_slice::<PolicyAnswer>(&bytes),
                Err(e) => {
                    tally.traps += 1;
                    let kind = match e {
                        HostError::Timeout(_) => "deadline",
                        HostError::Guest { .. } => "guest error",
                        _ => "trap",
                    };
                    keep(tally, &name, i, &payload, &format!("{kind}: {e}"));
                    continue;
                }
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    tally.violations += 1;
                    keep(
                        tally,
                        &name,
                        i,
                        &payload,
                        &format!("not a validation response: {e}"),
                    );
                    continue;
                }
            };
            if !answer.accepted {
                tally.rejections += 1;
                let message = answer.message.clone().unwrap_or_default();
                if message.is_empty() || message.contains(" at line ") {
                    tally.violations += 1;
                    keep(
                        tally,
                        &name,
                        i,
                        &payload,
                        &format!("rejection message {message:?}"),
                    );
                }
                continue;
            }
            let Some(mutated) = answer.mutated_object.filter(|m| *m != request["object"]) else {
                continue;
            };
            tally.mutations += 1;
            if text_change {
                continue;
            }
            let broken = if !mutated.is_object() {
                Some("the mutated object is not an object".to_string())
            } else if valid_input {
                generate::api_rules(&mutated)
                    .err()
                    .map(|e| format!("broke an API rule: {e}"))
            } else {
                None
            };
            if let Some(why) = broken {
                tally.violations += 1;
                keep(tally, &name, i, &payload, &why);
                continue;
            }
            if rng.u8(..10) == 0 {
                let mut again = request.clone();
                again["object"] = mutated.clone();
                let payload = format!(r#"{{"request":{again},"settings":{}}}"#, settings[p]);
                let second = h
                    .call(p, payload.as_bytes())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<PolicyAnswer>(&b).ok());
                let settled = second.as_ref().is_some_and(|a| {
                    !a.accepted || a.mutated_object.as_ref().is_none_or(|m| *m == mutated)
                });
                if !settled {
                    tally.violations += 1;
                    keep(tally, &name, i, payload.as_bytes(), "not idempotent");
                }
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz: {n} requests from {} seeds and generated pods in {:.1} s (seed {seed})",
        seeds.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "{:<26} {:>9} {:>6} {:>10} {:>9} {:>10} {:>10}",
        "policy", "requests", "traps", "rejections", "mutations", "violations", "evals/s"
    );
    let mut failed = Vec::new();
    for ((name, _, _), t) in h.policies.iter().zip(&tallies) {
        println!(
            "{:<26} {:>9} {:>6} {:>10} {:>9} {:>10} {:>10.0}",
            name,
            t.requests,
            t.traps,
            t.rejections,
            t.mutations,
            t.violations,
            t.requests as f64 / t.time.as_secs_f64().max(1e-9)
        );
        failed.extend(t.kept.iter().map(|p| p.display().to_string()));
    }
    assert!(
        failed.is_empty(),
        "inputs that trapped or broke a property, kept:\n{}",
        failed.join("\n")
    );
}
