//! Generated pods and workloads for the property tests and the fuzz run: every kind the
//! policies read, 0–40 containers across `initContainers` and `containers`, native and
//! legacy sidecars from the known list, the sidecar annotations (valid, dangling, cyclic,
//! malformed), resources in every quantity form, pod-level resources, overhead, probes
//! and hooks. Generated pods satisfy the API server's container rules, so a property can
//! hold a policy's output to them.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

pub const KINDS: [&str; 8] = [
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

/// Names a pod's containers take: helpers the known list types, and plain ones.
const NAMES: [&str; 16] = [
    "app",
    "web",
    "worker",
    "migrate",
    "setup",
    "istio-proxy",
    "istio-init",
    "linkerd-proxy",
    "fluent-bit",
    "vault-agent",
    "otel-collector",
    "envoy",
    "daprd",
    "cloud-sql-proxy",
    "cache",
    "metrics",
];

const IMAGES: [&str; 9] = [
    "nginx:1.27",
    "registry.example.com/shop/app:2",
    "busybox:1.36",
    "docker.io/istio/proxyv2:1.22.3",
    "cr.l5d.io/linkerd/proxy:stable-2.14",
    "cr.fluentbit.io/fluent/fluent-bit:3.1.9",
    "hashicorp/vault:1.17",
    "otel/opentelemetry-collector-contrib:0.110.0",
    "registry:5000/org/worker@sha256:0123456789abcdef",
];

/// Each resource's quantities in the forms Kubernetes accepts: milli, decimal fractions,
/// exponents, binary and decimal suffixes, zero.
const CPU: [&str; 10] = [
    "0", "10m", "100m", "250m", "0.5", "1", "1500m", "2", "5e-1", "0.1e1",
];
const MEMORY: [&str; 10] = [
    "0", "40Mi", "64Mi", "128Mi", "256Mi", "512M", "1Gi", "1e9", "1.5Gi", "2Gi",
];
const STORAGE: [&str; 3] = ["1Gi", "500M", "2G"];

pub const VOLUMES: [&str; 3] = ["data", "logs", "config"];
pub const NAMESPACES: [&str; 5] = ["shop", "team-a", "team-b", "pay-eu", "default"];
const TYPES: [&str; 6] = [
    "Sidecar",
    "PreSidecar",
    "PostSidecar",
    "Init",
    "Standard",
    "Bogus",
];

/// Where a generated container sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Init,
    Native,
    App,
}

#[derive(Debug, Clone)]
pub struct GenContainer {
    place: Place,
    name: usize,
    image: usize,
    /// (request, limit) index pairs per resource; `None` is absent.
    cpu: (Option<usize>, Option<usize>),
    memory: (Option<usize>, Option<usize>),
    storage: Option<usize>,
    startup_probe: bool,
    readiness_probe: bool,
    pre_stop: Option<u8>,
    mounts: Vec<usize>,
    env: bool,
}

/// A pod-wide annotation about one container: by the container's index.
#[derive(Debug, Clone)]
pub enum GenAnnotation {
    Lifecycle(usize, usize),
    /// after: other containers by index; `dangling` adds a name no container has.
    After(usize, Vec<usize>, bool),
    Optional(usize, bool),
}

#[derive(Debug, Clone)]
pub struct GenPod {
    kind: usize,
    namespace: usize,
    restart_never: bool,
    containers: Vec<GenContainer>,
    annotations: Vec<GenAnnotation>,
    /// cpu, memory, and which lists say them: 0 both (equal), 1 limits only, 2 requests
    /// only, 3 neither (`resources: {}`).
    pod_level: Option<(usize, usize, u8)>,
    overhead: bool,
    grace: Option<u8>,
    labels: (bool, bool, bool),
}

fn container() -> impl Strategy<Value = GenContainer> {
    let quantity = || {
        (
            proptest::option::of(0..10usize),
            proptest::option::of(0..10usize),
        )
    };
    (
        prop_oneof![3 => Just(Place::App), 2 => Just(Place::Init), 2 => Just(Place::Native)],
        0..NAMES.len(),
        0..IMAGES.len(),
        quantity(),
        quantity(),
        proptest::option::weighted(0.1, 0..STORAGE.len()),
        any::<bool>(),
        any::<bool>(),
        proptest::option::weighted(0.3, 0..40u8),
        proptest::collection::btree_set(0..VOLUMES.len(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(place, name, image, cpu, memory, storage, sp, rp, pre_stop, mounts, env)| {
                GenContainer {
                    place,
                    name,
                    image,
                    cpu,
                    memory,
                    storage,
                    startup_probe: sp,
                    readiness_probe: rp,
                    pre_stop,
                    mounts: mounts.into_iter().collect(),
                    env,
                }
            },
        )
}

fn annotation() -> impl Strategy<Value = GenAnnotation> {
    prop_oneof![
        (0..40usize, 0..TYPES.len()).prop_map(|(c, t)| GenAnnotation::Lifecycle(c, t)),
        (
            0..40usize,
            proptest::collection::vec(0..40usize, 1..3),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(c, after, dangling)| GenAnnotation::After(c, after, dangling)),
        (0..40usize, any::<bool>()).prop_map(|(c, v)| GenAnnotation::Optional(c, v)),
    ]
}

/// Pods with up to `max` containers and up to `annotations` sidecar annotations.
pub fn pod_with(max: usize, annotations: usize) -> impl Strategy<Value = GenPod> {
    (
        0..KINDS.len(),
        0..NAMESPACES.len(),
        any::<bool>(),
        proptest::collection::vec(container(), 0..=max),
        proptest::collection::vec(annotation(), 0..=annotations),
        proptest::option::weighted(
            0.15,
            (
                0..10usize,
                0..10usize,
                prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
            ),
        ),
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.2, 0..120u8),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                kind,
                namespace,
                restart_never,
                containers,
                annotations,
                pod_level,
                overhead,
                grace,
                labels,
            )| {
                GenPod {
                    kind,
                    namespace,
                    restart_never,
                    containers,
                    annotations,
                    pod_level,
                    overhead,
                    grace,
                    labels,
                }
            },
        )
}

/// Pods only (no workloads): what the injector injects into.
pub fn bare_pod(max: usize) -> impl Strategy<Value = GenPod> {
    annotated_bare_pod(max, 0)
}

/// Pods only, with up to `annotations` sidecar annotations.
pub fn annotated_bare_pod(max: usize, annotations: usize) -> impl Strategy<Value = GenPod> {
    pod_with(max, annotations).prop_map(|mut p| {
        p.kind = 0;
        p
    })
}

/// The usual generated pod: up to 40 containers, a few annotations.
pub fn pod() -> impl Strategy<Value = GenPod> {
    pod_with(40, 6)
}

/// The number of a quantity in nanounits: the test's own reading, so that reference
/// figures do not come from the model.
pub fn nanos(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let negative = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    let digits = format!("{int}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: i128 = digits.parse().ok()?;
    // value * 10^-frac.len() * multiplier, in nanos (10^9).
    let mut exp10: i32 = 9 - frac.len() as i32;
    let mut binary: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => binary = 1 << 10,
        "Mi" => binary = 1 << 20,
        "Gi" => binary = 1 << 30,
        "Ti" => binary = 1 << 40,
        "Pi" => binary = 1 << 50,
        "Ei" => binary = 1 << 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    value *= binary;
    while exp10 > 0 {
        value *= 10;
        exp10 -= 1;
    }
    while exp10 < 0 {
        if value % 10 != 0 {
            // Finer than a nanounit: Kubernetes rounds up.
            value = value / 10 + 1;
        } else {
            value /= 10;
        }
        exp10 += 1;
    }
    Some(if negative { -value } else { value })
}

fn pair(pool: &[&str], (r, l): (Option<usize>, Option<usize>)) -> (Option<String>, Option<String>) {
    let (mut r, mut l) = (r.map(|i| pool[i]), l.map(|i| pool[i]));
    // The API server refuses requests above limits: swap a generated pair that is.
    if let (Some(a), Some(b)) = (r, l)
        && nanos(a) > nanos(b)
    {
        (r, l) = (Some(b), Some(a));
    }
    (r.map(str::to_string), l.map(str::to_string))
}

fn resources(c: &GenContainer) -> Option<Value> {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for (resource, pool, generated) in [("cpu", &CPU[..], c.cpu), ("memory", &MEMORY[..], c.memory)]
    {
        let (r, l) = pair(pool, generated);
        if let Some(r) = r {
            requests.insert(resource.into(), json!(r));
        }
        if let Some(l) = l {
            limits.insert(resource.into(), json!(l));
        }
    }
    if let Some(s) = c.storage {
        requests.insert("ephemeral-storage".into(), json!(STORAGE[s]));
    }
    if requests.is_empty() && limits.is_empty() {
        return None;
    }
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Some(Value::Object(out))
}

impl GenPod {
    /// The containers' names, made unique as the API server requires.
    fn names(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let base = NAMES[c.name].to_string();
                if seen.insert(base.clone()) {
                    base
                } else {
                    let name = format!("{base}-{i}");
                    seen.insert(name.clone());
                    name
                }
            })
            .collect()
    }

    pub fn kind(&self) -> &'static str {
        KINDS[self.kind]
    }

    pub fn namespace(&self) -> &'static str {
        NAMESPACES[self.namespace]
    }

    /// The object: a pod, or a workload whose template is the pod.
    pub fn object(&self) -> Value {
        let names = self.names();
        let mut init = Vec::new();
        let mut apps = Vec::new();
        let mut mounted = BTreeSet::new();
        for (c, name) in self.containers.iter().zip(&names) {
            let mut o = Map::new();
            o.insert("name".into(), json!(name));
            o.insert("image".into(), json!(IMAGES[c.image]));
            if let Some(r) = resources(c) {
                o.insert("resources".into(), r);
            }
            // Probes and hooks only where the API server allows them: app containers and
            // native sidecars.
            if c.place != Place::Init {
                if c.startup_probe {
                    o.insert(
                        "startupProbe".into(),
                        json!({"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 1}),
                    );
                }
                if c.readiness_probe {
                    o.insert(
                        "readinessProbe".into(),
                        json!({"tcpSocket": {"port": 8080}}),
                    );
                }
                // The API server wants a sleep shorter than the grace period (30 s unset).
                let grace = self.grace.map_or(30, u16::from);
                if let Some(s) = c.pre_stop.filter(|&s| u16::from(s) < grace) {
                    o.insert(
                        "lifecycle".into(),
                        json!({"preStop": {"sleep": {"seconds": s}}}),
                    );
                }
            }
            if !c.mounts.is_empty() {
                let mounts: Vec<Value> = c
                    .mounts
                    .iter()
                    .map(|&v| {
                        mounted.insert(v);
                        json!({"name": VOLUMES[v], "mountPath": format!("/mnt/{}", VOLUMES[v])})
                    })
                    .collect();
                o.insert("volumeMounts".into(), Value::Array(mounts));
            }
            if c.env {
                o.insert(
                    "env".into(),
                    json!([{"name": "TZ", "value": "UTC"}, {"name": "LOG_LEVEL", "value": "info"}]),
                );
            }
            match c.place {
                Place::Init => init.push(Value::Object(o)),
                Place::Native => {
                    o.insert("restartPolicy".into(), json!("Always"));
                    init.push(Value::Object(o));
                }
                Place::App => apps.push(Value::Object(o)),
            }
        }
        let mut spec = Map::new();
        if !init.is_empty() {
            spec.insert("initContainers".into(), Value::Array(init));
        }
        spec.insert("containers".into(), Value::Array(apps));
        if !mounted.is_empty() {
            let volumes: Vec<Value> = mounted
                .iter()
                .map(|&v| json!({"name": VOLUMES[v], "emptyDir": {}}))
                .collect();
            spec.insert("volumes".into(), Value::Array(volumes));
        }
        let runs_to_completion = matches!(self.kind(), "Job" | "CronJob");
        if runs_to_completion {
            spec.insert(
                "restartPolicy".into(),
                json!(if self.restart_never {
                    "Never"
                } else {
                    "OnFailure"
                }),
            );
        } else if self.kind() == "Pod" && self.restart_never {
            spec.insert("restartPolicy".into(), json!("Never"));
        }
        if let Some((cpu, memory, lists)) = self.pod_level {
            let both = json!({"cpu": CPU[cpu.max(1)], "memory": MEMORY[memory.max(1)]});
            let resources = match lists {
                0 => json!({"requests": both, "limits": both}),
                1 => json!({"limits": both}),
                2 => json!({"requests": both}),
                _ => json!({}),
            };
            spec.insert("resources".into(), resources);
        }
        if self.overhead {
            spec.insert("overhead".into(), json!({"cpu": "250m", "memory": "120Mi"}));
        }
        if let Some(g) = self.grace {
            spec.insert("terminationGracePeriodSeconds".into(), json!(g));
        }

        let mut annotations = Map::new();
        let name_of = |i: usize| names.get(i % names.len().max(1)).cloned();
        for a in &self.annotations {
            if names.is_empty() {
                break;
            }
            match a {
                GenAnnotation::Lifecycle(c, t) => {
                    annotations.insert(
                        format!("lifecycle.sidecars.dev/{}", name_of(*c).unwrap()),
                        json!(TYPES[*t]),
                    );
                }
                GenAnnotation::After(c, after, dangling) => {
                    let mut list: Vec<String> = after.iter().filter_map(|&i| name_of(i)).collect();
                    if *dangling {
                        list.push("ghost".into());
                    }
                    annotations.insert(
                        format!("after.sidecars.dev/{}", name_of(*c).unwrap()),
                        json!(list.join(",")),
                    );
                }
                GenAnnotation::Optional(c, v) => {
                    annotations.insert(
                        format!("optional.sidecars.dev/{}", name_of(*c).unwrap()),
                        json!(if *v { "true" } else { "maybe" }),
                    );
                }
            }
        }
        let mut labels = Map::new();
        labels.insert("app".into(), json!("gen"));
        if self.labels.0 {
            labels.insert("mesh".into(), json!("enabled"));
        }
        if self.labels.1 {
            labels.insert("logs".into(), json!("ship"));
        }
        if self.labels.2 {
            labels.insert("mesh-canary".into(), json!("true"));
        }
        let pod_meta = json!({"labels": labels, "annotations": annotations});
        let pod_spec = Value::Object(spec);
        let (api, kind) = (
            match self.kind() {
                "Pod" | "ReplicationController" => "v1",
                "Job" | "CronJob" => "batch/v1",
                _ => "apps/v1",
            },
            self.kind(),
        );
        let template = json!({"metadata": pod_meta, "spec": pod_spec});
        match kind {
            "Pod" => {
                let mut meta = pod_meta.clone();
                meta["generateName"] = json!("gen-7d4b9c-");
                meta["namespace"] = json!(self.namespace());
                json!({"apiVersion": api, "kind": kind, "metadata": meta, "spec": pod_spec})
            }
            "CronJob" => json!({"apiVersion": api, "kind": kind,
                "metadata": {"name": "gen", "namespace": self.namespace()},
                "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
            // The API server makes a Job's selector itself.
            "Job" => json!({"apiVersion": api, "kind": kind,
                "metadata": {"name": "gen", "namespace": self.namespace()},
                "spec": {"template": template}}),
            "ReplicationController" => json!({"apiVersion": api, "kind": kind,
                "metadata": {"name": "gen", "namespace": self.namespace()},
                "spec": {"selector": {"app": "gen"}, "template": template}}),
            _ => json!({"apiVersion": api, "kind": kind,
                "metadata": {"name": "gen", "namespace": self.namespace()},
                "spec": {"selector": {"matchLabels": {"app": "gen"}}, "template": template}}),
        }
    }
}

/// The AdmissionRequest the API server sends for a CREATE of `object`.
pub fn create(object: &Value, namespace: &str, uid: u64) -> Value {
    json!({
        "uid": format!("00000000-0000-4000-8000-{uid:012x}"),
        "kind": {"group": "", "version": "v1", "kind": object["kind"]},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": namespace,
        "name": object["metadata"]["name"],
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": object,
        "oldObject": null,
        "dryRun": false,
    })
}

/// JSON pointer of the pod spec in an object of `kind`.
pub fn spec_pointer(kind: &str) -> &'static str {
    match kind {
        "Pod" => "/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    }
}

/// The API server's container rules a policy's output must keep: names unique across
/// every list, `restartPolicy` on an init container only `Always`, probes and hooks
/// among init containers only on sidecars, requests never above limits, and every
/// volume mount naming a volume (volume names unique).
pub fn api_rules(object: &Value) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(spec) = object.pointer(spec_pointer(kind)) else {
        return Err("no pod spec".into());
    };
    let list = |field: &str| spec[field].as_array().cloned().unwrap_or_default();
    let (init, apps, ephemeral) = (
        list("initContainers"),
        list("containers"),
        list("ephemeralContainers"),
    );
    let mut names = BTreeSet::new();
    for c in init.iter().chain(&apps).chain(&ephemeral) {
        let name = c["name"].as_str().unwrap_or_default();
        if !names.insert(name.to_string()) {
            return Err(format!("container name {name:?} appears twice"));
        }
    }
    for c in &init {
        let name = &c["name"];
        match c.get("restartPolicy").and_then(Value::as_str) {
            None => {
                for field in [
                    "startupProbe",
                    "readinessProbe",
                    "livenessProbe",
                    "lifecycle",
                ] {
                    if c.get(field).is_some_and(|v| !v.is_null()) {
                        return Err(format!("init container {name} has {field}"));
                    }
                }
            }
            Some("Always") => {}
            Some(other) => return Err(format!("init container {name} has restartPolicy {other}")),
        }
    }
    let mut volumes = BTreeSet::new();
    for v in list("volumes") {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if !volumes.insert(name.clone()) {
            return Err(format!("volume {name:?} appears twice"));
        }
    }
    for c in init.iter().chain(&apps) {
        let name = &c["name"];
        let r = &c["resources"];
        if let (Some(requests), Some(limits)) = (r["requests"].as_object(), r["limits"].as_object())
        {
            for (resource, q) in requests {
                if let (Some(q), Some(l)) = (
                    q.as_str().and_then(nanos),
                    limits.get(resource).and_then(Value::as_str).and_then(nanos),
                ) && q > l
                {
                    return Err(format!(
                        "{name}: requests.{resource} above limits.{resource}"
                    ));
                }
            }
        }
        let mut paths = BTreeSet::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let volume = m["name"].as_str().unwrap_or_default();
            if !volumes.contains(volume) {
                return Err(format!(
                    "{name} mounts {volume:?}, which is no volume of the pod"
                ));
            }
            let path = m["mountPath"].as_str().unwrap_or_default();
            if !paths.insert(path.to_string()) {
                return Err(format!("{name} mounts two volumes at {path}"));
            }
        }
        let mut env = BTreeSet::new();
        for e in c["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap_or_default();
            if !env.insert(var.to_string()) {
                return Err(format!("{name} has env {var:?} twice"));
            }
        }
    }
    Ok(())
}

/// Names from a pool, for settings and sets.
pub fn one_of(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    select(pool)
}
