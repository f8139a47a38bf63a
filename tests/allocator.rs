//! The policies allocate from a bump arena (policy-shell's `arena`) that must give a call's
//! memory back when the call ends. In a fresh instance per request (policy-server) a leak
//! would not show; in a reused one (kwctl, `--instance reused`) it would grow the linear
//! memory until the waPC host fails past 2 GiB. So each policy evaluates a 16 MiB request
//! 100 times in one instance: with nothing given back that is over 3 GiB (a build that
//! never rewinds fails all four within the 100), with the arena rewinding it stays at
//! one request's worth.

mod common;

use common::*;
use serde_json::{Value, json};

const SAMPLES: usize = 100;

/// The shop's checkout pod, which the injector injects into and the others read, with a
/// 16 MiB annotation: the payload, the annotation's text and the injector's answer are
/// each that big, in every call.
fn big_request(dir: &std::path::Path) -> std::path::PathBuf {
    let mut blob = "x".repeat(16 << 20);
    blob.push('\n');
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "labels": {"app": "checkout", "mesh": "enabled", "logs": "ship"},
            "annotations": {"example.com/blob": blob},
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example.com/shop/checkout:2.4.0",
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
            }],
            "volumes": [{"name": "logs", "emptyDir": {}}],
        },
    });
    let path = dir.join("big-pod.json");
    std::fs::write(&path, serde_json::to_vec(&pod).unwrap()).unwrap();
    path
}

fn evaluates_again_and_again_in_one_instance(policy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let request = big_request(dir.path());
    let module = module(&format!("wasm/{policy}.wasm"));
    let samples = SAMPLES.to_string();
    let out = run(&[
        "bench",
        "-p",
        p(&module),
        "-r",
        p(&request),
        "--settings-dir",
        p(&root().join("examples/settings")),
        "--instance",
        "reused",
        "--samples",
        &samples,
        "--warmup",
        "0",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{policy}: {}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let validate = rows
        .iter()
        .find(|r| r["operation"] == "validate")
        .unwrap_or_else(|| panic!("{policy}: no validate row in {rows:?}"));
    assert_eq!(validate["samples"], SAMPLES);
}

#[test]
fn the_injector_gives_its_memory_back_after_each_call() {
    evaluates_again_and_again_in_one_instance("sidecar-injector-policy");
}

#[test]
fn the_resources_policy_gives_its_memory_back_after_each_call() {
    evaluates_again_and_again_in_one_instance("sidecar-resources-policy");
}

#[test]
fn the_ordering_policy_gives_its_memory_back_after_each_call() {
    evaluates_again_and_again_in_one_instance("sidecar-ordering-policy");
}

#[test]
fn the_lifecycle_policy_gives_its_memory_back_after_each_call() {
    evaluates_again_and_again_in_one_instance("sidecar-lifecycle-policy");
}
