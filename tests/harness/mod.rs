//! The four policies' compiled `.wasm` in wasmtime in-process, the way the property tests
//! and the fuzz run drive them: each with its settings and an instance reused across
//! calls, and a fresh instance every so often, as policy-server gives every request one.
#![allow(dead_code)]

use serde_json::Value;
use sidecarctl::admission::AdmissionResponse;
use sidecarctl::evaluation::Evaluator;
use sidecarctl::runtime::{HostError, Instance, Runtime};
use std::time::Duration;

use crate::common;

pub const POLICIES: [&str; 4] = [
    "sidecar-lifecycle-policy",
    "sidecar-ordering-policy",
    "sidecar-resources-policy",
    "sidecar-injector-policy",
];

pub struct Harness {
    pub policies: Vec<(String, Evaluator, Instance)>,
    /// One in this many calls gets a fresh instance.
    fresh_every: usize,
    pub calls: usize,
}

pub fn example_settings(policy: &str) -> Value {
    let path = common::root()
        .join("examples/settings")
        .join(format!("{policy}.yaml"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn runtime() -> Runtime {
    // The compiled modules are cached on disk where the other tests' sidecarctl keeps them.
    Runtime::with_cache(Some(common::root().join("target/sidecarctl-test-cache"))).unwrap()
}

impl Harness {
    /// Every policy with the settings `settings` gives it (`None`: the example's).
    pub fn new(
        fresh_every: usize,
        settings: impl Fn(&str) -> Option<Value>,
    ) -> Result<Self, String> {
        let runtime = runtime();
        let mut policies = Vec::new();
        for name in POLICIES {
            let path = common::module(&format!("wasm/{name}.wasm"));
            let bytes = std::fs::read(&path).unwrap();
            let policy = runtime
                .load_bytes(name, &bytes, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            let settings = settings(name).unwrap_or_else(|| example_settings(name));
            let evaluator = Evaluator::new(policy, settings).map_err(|e| e.to_string())?;
            let instance = evaluator.policy.instantiate().map_err(|e| e.to_string())?;
            policies.push((name.to_string(), evaluator, instance));
        }
        Ok(Harness {
            policies,
            fresh_every,
            calls: 0,
        })
    }

    pub fn examples(fresh_every: usize) -> Self {
        Self::new(fresh_every, |_| None).unwrap()
    }

    pub fn index(&self, policy: &str) -> usize {
        self.policies.iter().position(|p| p.0 == policy).unwrap()
    }

    fn fresh_now(&mut self) -> bool {
        self.calls += 1;
        self.calls.is_multiple_of(self.fresh_every)
    }

    /// A reused instance that failed is gone; the next call gets a new one.
    fn replace_instance(&mut self, i: usize) {
        if let Ok(new) = self.policies[i].1.policy.instantiate() {
            self.policies[i].2 = new;
        }
    }

    /// The AdmissionResponse of policy `i`; a trap, a deadline or a 500 is an error.
    pub fn eval(&mut self, i: usize, request: &Value) -> Result<AdmissionResponse, String> {
        let fresh = self.fresh_now();
        let (name, evaluator, instance) = &self.policies[i];
        let evaluation = evaluator.evaluate_in((!fresh).then_some(instance), request);
        let response = evaluation.response;
        if let Some(failure) = evaluation.failure {
            let message = format!("{name} failed: {failure}");
            self.replace_instance(i);
            return Err(message);
        }
        if response.status.as_ref().and_then(|s| s.code) == Some(500) {
            return Err(format!("{name} answered 500: {response:?}"));
        }
        Ok(response)
    }

    /// `validate` of policy `i` on a payload as bytes (which may be anything at all).
    pub fn call(&mut self, i: usize, payload: &[u8]) -> Result<Vec<u8>, HostError> {
        let fresh = self.fresh_now();
        let (_, evaluator, instance) = &self.policies[i];
        let result = if fresh {
            evaluator.policy.call("validate", payload)
        } else {
            instance.call("validate", payload)
        };
        if result.is_err() {
            self.replace_instance(i);
        }
        result
    }

    pub fn settings(&self, i: usize) -> &Value {
        self.policies[i].1.settings()
    }
}
