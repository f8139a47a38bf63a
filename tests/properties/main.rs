//! Property tests: generated pods and workloads through the compiled `.wasm` of every
//! policy, in wasmtime in-process (a reused instance, and a fresh one every so often),
//! with the example settings and with generated ones. A failure shrinks to a minimal
//! object, which is written to `tests/fixtures/properties/` (with the settings it failed
//! with) and replayed by `kept_failures_hold` from then on.
//!
//! `PROPTEST_CASES` sets the number of cases of each property (256 by default),
//! `PROPTEST_SEED` the seed (a fixed one by default, so CI runs the same cases).

#[path = "../common/mod.rs"]
mod common;

#[path = "../generate/mod.rs"]
mod generate;

#[path = "../harness/mod.rs"]
mod harness;

use generate::{GenPod, api_rules, create, nanos, spec_pointer};
use harness::{Harness, POLICIES, runtime};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Value, json};
use sidecarctl::admission::AdmissionResponse;
use sidecarctl::evaluation::Evaluator;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod api_rules;
mod commute;
mod injection;
mod ordering;
mod resources;

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

fn containers(object: &Value, list: &str) -> Vec<Value> {
    let kind = object["kind"].as_str().unwrap_or_default();
    object
        .pointer(spec_pointer(kind))
        .and_then(|s| s[list].as_array().cloned())
        .unwrap_or_default()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(common::root())
        .unwrap_or(path)
        .display()
        .to_string()
}
