//! Helpers for the integration tests: the built modules and the sidecarctl binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A module `make wasm` built. Missing modules fail the test: it cannot pass without them.
pub fn module(relative: &str) -> PathBuf {
    let path = root().join("build").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `make wasm` (or `make test`) first",
        path.display()
    );
    path
}

pub fn null_policy() -> PathBuf {
    module("test-policies/null-policy.wasm")
}

pub fn test_mutator() -> PathBuf {
    module("test-policies/test-mutator.wasm")
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// The shared corpus of Istio-injected workloads, when this checkout has ../shared beside it.
pub fn corpus() -> Option<PathBuf> {
    let dir = root().join("../shared/corpus/istio");
    if dir.join("index.json").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/corpus/istio is not present in this checkout");
        None
    }
}

pub fn sidecarctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecarctl"));
    cmd.env(
        "SIDECARCTL_CACHE_DIR",
        root().join("target/sidecarctl-test-cache"),
    );
    cmd
}

pub fn run(args: &[&str]) -> Output {
    sidecarctl()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sidecarctl runs")
}

pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = sidecarctl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sidecarctl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}
