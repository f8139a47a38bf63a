//! Resource rules with sidecars in the picture: sidecars that ask for nothing, sidecars
//! that cost a Guaranteed pod its class, containers that break a pod-level budget, and
//! pods that reserve too much. Findings carry the numbers; the policy renders and decides.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::kube::ModelError;
use crate::kube::Quantity;
use crate::kube::keys;
use crate::kube::{ContainerInfo, PodModel};
use crate::kube::{KnownSidecars, KubeVersion, LifecycleType};
use crate::resources::effective::{
    self, Accounted, Breakdown, CPU, ContainerResources, MEMORY, PerResource, PodResources,
    QosClass,
};

/// Requests and limits to fill in for containers matching `name`/`image`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceDefault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
}

impl ResourceDefault {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_none() && self.image.is_none() {
            return Err("a default needs a name or an image pattern".into());
        }
        crate::kube::glob::validate_patterns(self.name.as_deref(), self.image.as_deref())?;
        if self.requests.is_empty() && self.limits.is_empty() {
            return Err("a default needs requests or limits".into());
        }
        for (name, request) in &self.requests {
            if let Some(limit) = self.limits.get(name)
                && request > limit
            {
                return Err(format!(
                    "requests.{name} {request} is more than limits.{name} {limit}"
                ));
            }
        }
        Ok(())
    }

    /// The first default matching `c`.
    pub fn find<'d>(
        defaults: &'d [ResourceDefault],
        c: &ContainerInfo,
    ) -> Option<&'d ResourceDefault> {
        defaults
            .iter()
            .find(|d| crate::kube::matches_fields(d.name.as_deref(), d.image.as_deref(), None, c))
    }
}

/// Which list of a container's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    Requests,
    Limits,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Requests => "requests",
            Field::Limits => "limits",
        }
    }
}

/// Set `resources.<field>.<resource>` of `model.containers[container]` to `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceEdit {
    pub container: usize,
    pub field: Field,
    pub resource: String,
    pub value: Quantity,
}

/// The pod's resources as the rules see them: per-container figures aligned with
/// `model.containers`, and the pod's effective figures.
#[derive(Debug, Clone)]
pub struct Accounting {
    pub containers: Vec<Accounted>,
    /// `spec.resources` as written.
    pub pod_level: Option<ContainerResources>,
    pub overhead: PerResource<Quantity>,
    /// What the pod runs on: how the API server defaults pod-level resources and which
    /// decide the QoS class.
    pub version: KubeVersion,
    /// The pod's figures, computed when first asked for: a policy that edits resources
    /// asks only after its edits.
    settled: OnceCell<PodResources>,
}

impl Accounting {
    pub fn of(model: &PodModel, version: KubeVersion) -> Result<Self, ModelError> {
        let spec = &model.workload.spec;
        let containers = effective::accounted_containers(spec)?;
        let pod_level = effective::pod_level(spec)?;
        let overhead = ContainerResources::read(
            || "spec.overhead".into(),
            Some(&k8s_openapi::api::core::v1::ResourceRequirements {
                requests: spec.overhead.clone(),
                ..Default::default()
            }),
        )?
        .requests;
        Ok(Accounting {
            containers,
            pod_level,
            overhead,
            version,
            settled: OnceCell::new(),
        })
    }

    /// The pod's effective requests and limits and its QoS class.
    pub fn pod(&self) -> &PodResources {
        self.settled.get_or_init(|| {
            effective::compute_from(
                &self.containers,
                self.pod_level.as_ref(),
                &self.overhead,
                self.version,
            )
        })
    }

    /// The accounting after `edits`, without touching any JSON; no edits, no copy.
    pub fn with(&self, edits: &[ResourceEdit]) -> Cow<'_, Accounting> {
        if edits.is_empty() {
            return Cow::Borrowed(self);
        }
        let mut containers = self.containers.clone();
        for e in edits {
            let r = &mut containers[e.container].resources;
            match e.field {
                Field::Requests => r.requests.insert(e.resource.clone(), e.value),
                Field::Limits => {
                    r.requests.entry(e.resource.clone()).or_insert(e.value);
                    r.limits.insert(e.resource.clone(), e.value)
                }
            };
        }
        Cow::Owned(Accounting {
            containers,
            pod_level: self.pod_level.clone(),
            overhead: self.overhead.clone(),
            version: self.version,
            settled: OnceCell::new(),
        })
    }
}

/// A sidecar missing cpu/memory requests (or limits, when they are required), and what
/// the defaults can fill in. What is missing after the edits is what remains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarGaps {
    pub missing: Vec<(usize, Field, String)>,
    pub fill: Vec<ResourceEdit>,
    /// Limits a default would set below what the sidecar requests: not filled, since the
    /// API server refuses requests above limits.
    pub below_request: Vec<LimitBelowRequest>,
}

/// A default limit below the sidecar's own request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitBelowRequest {
    pub container: String,
    pub resource: String,
    pub request: Quantity,
    pub default_limit: Quantity,
}

impl fmt::Display for LimitBelowRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sidecar {:?} requests {} {}, more than the default limit {}; set its limits.{}, or raise the default",
            self.container, self.request, self.resource, self.default_limit, self.resource
        )
    }
}

pub fn sidecar_gaps(
    model: &PodModel,
    acc: &Accounting,
    require_limits: bool,
    defaults: &[ResourceDefault],
) -> SidecarGaps {
    let mut missing = Vec::new();
    let mut fill = Vec::new();
    let mut below_request = Vec::new();
    for (i, c) in model.containers.iter().enumerate() {
        if c.lifecycle_type != LifecycleType::Sidecar {
            continue;
        }
        let own = &acc.containers[i].resources;
        let default = ResourceDefault::find(defaults, c);
        let mut wanted = vec![(Field::Requests, CPU), (Field::Requests, MEMORY)];
        if require_limits {
            wanted.extend([(Field::Limits, CPU), (Field::Limits, MEMORY)]);
        }
        for (field, resource) in wanted {
            let (present, source) = match field {
                Field::Requests => (
                    own.requests.contains_key(resource),
                    default.map(|d| &d.requests),
                ),
                Field::Limits => (
                    own.limits.contains_key(resource),
                    default.map(|d| &d.limits),
                ),
            };
            if present {
                continue;
            }
            // A limit filled from the defaults also stands in for a missing request, as
            // the API server's defaulting would make it.
            let filled_limit = field == Field::Requests
                && fill.iter().any(|e: &ResourceEdit| {
                    e.container == i && e.field == Field::Limits && e.resource == resource
                });
            let request = own.requests.get(resource);
            match source.and_then(|s| s.get(resource)) {
                Some(v) if field == Field::Limits && request.is_some_and(|r| r > v) => {
                    below_request.push(LimitBelowRequest {
                        container: c.name.clone(),
                        resource: resource.into(),
                        request: request.copied().unwrap_or_default(),
                        default_limit: *v,
                    });
                }
                Some(v) => fill.push(ResourceEdit {
                    container: i,
                    field,
                    resource: resource.into(),
                    value: *v,
                }),
                None if filled_limit => {}
                None => missing.push((i, field, resource.to_string())),
            }
        }
    }
    // Limits first, so a request filled next to a limit never exceeds it.
    fill.sort_by_key(|e| (e.container, std::cmp::Reverse(e.field)));
    SidecarGaps {
        missing,
        fill,
        below_request,
    }
}

/// The app containers alone would have `app_class`; the whole pod has `pod_class`
/// because of `offenders` (sidecars and the init steps of known helpers, such as
/// `istio-init`) or of `own_init_steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosDowngrade {
    pub app_class: QosClass,
    pub pod_class: QosClass,
    pub offenders: Vec<usize>,
    /// The pod's own init steps (no known-sidecar rule matches them) of another class:
    /// the class is then the user's choice, which Kubernetes admits, and no helper can
    /// give the pod back the class of its app containers.
    pub own_init_steps: Vec<usize>,
}

fn is_app(c: &ContainerInfo) -> bool {
    matches!(
        c.lifecycle_type,
        LifecycleType::Standard | LifecycleType::PostSidecar
    )
}

/// `None` when the pod keeps the class its app containers would have alone, or when
/// pod-level resources decide the class. `known` tells a helper's init step from the
/// pod's own.
pub fn qos_downgrade(
    model: &PodModel,
    acc: &Accounting,
    known: &KnownSidecars,
) -> Option<QosDowngrade> {
    if effective::pod_level_decides_qos(acc.pod_level.as_ref(), acc.version) {
        return None;
    }
    let apps = || {
        model
            .containers
            .iter()
            .zip(&acc.containers)
            .filter(|(c, _)| is_app(c))
            .map(|(_, a)| &a.resources)
    };
    apps().next()?;
    let app_class = effective::qos_of(apps());
    let pod_class = acc.pod().qos_class;
    if app_class == pod_class || app_class == QosClass::Burstable {
        return None;
    }
    let (own_init_steps, offenders) = model
        .containers
        .iter()
        .enumerate()
        .filter(|(i, c)| !is_app(c) && acc.containers[*i].resources.qos_class() != app_class)
        .map(|(i, c)| {
            let own = c.lifecycle_type == LifecycleType::Init
                && known.find(&c.name, c.image.as_deref()).is_none();
            (i, own)
        })
        .partition::<Vec<_>, _>(|(_, own)| *own);
    let indices = |v: Vec<(usize, bool)>| v.into_iter().map(|(i, _)| i).collect();
    Some(QosDowngrade {
        app_class,
        pod_class,
        offenders: indices(offenders),
        own_init_steps: indices(own_init_steps),
    })
}

/// What a fix does to what the pod reserves: one resource's effective requests before
/// and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIncrease {
    pub resource: String,
    pub before: Quantity,
    pub after: Quantity,
}

impl RequestIncrease {
    pub fn increase(&self) -> Quantity {
        self.after - self.before
    }
}

impl fmt::Display for RequestIncrease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} \u{2192} {}",
            self.resource, self.before, self.after
        )
    }
}

/// The increases above their resource's cap in `caps` (resources without one are free),
/// each with its cap.
pub fn increases_over_cap<'i>(
    increases: &'i [RequestIncrease],
    caps: &BTreeMap<String, Quantity>,
) -> Vec<(&'i RequestIncrease, Quantity)> {
    increases
        .iter()
        .filter_map(|inc| {
            let cap = caps.get(&inc.resource)?;
            (inc.increase() > *cap).then_some((inc, *cap))
        })
        .collect()
}

/// The resources whose effective requests grow from `before` to `after`.
pub fn request_increases(before: &PodResources, after: &PodResources) -> Vec<RequestIncrease> {
    after
        .requests
        .iter()
        .filter_map(|(resource, b)| {
            let was = before
                .requests
                .get(resource)
                .map(|b| b.effective)
                .unwrap_or_default();
            (b.effective > was).then(|| RequestIncrease {
                resource: resource.clone(),
                before: was,
                after: b.effective,
            })
        })
        .collect()
}

/// Edits that make each offender Guaranteed: requests equal to limits, limits from
/// requests where only requests are set, both from the defaults where neither is.
/// Returns the edits and the offenders that cannot be fixed (and which resource).
pub fn guarantee(
    model: &PodModel,
    acc: &Accounting,
    offenders: &[usize],
    defaults: &[ResourceDefault],
) -> (Vec<ResourceEdit>, Vec<(usize, String)>) {
    let mut edits = Vec::new();
    let mut stuck = Vec::new();
    for &i in offenders {
        let own = &acc.containers[i].resources;
        let default = ResourceDefault::find(defaults, &model.containers[i]);
        for resource in [CPU, MEMORY] {
            let edit = |field, value| ResourceEdit {
                container: i,
                field,
                resource: resource.to_string(),
                value,
            };
            match (own.requests.get(resource), own.limits.get(resource)) {
                (Some(r), Some(l)) if r == l && r.is_positive() => {}
                (_, Some(l)) if l.is_positive() => edits.push(edit(Field::Requests, *l)),
                (Some(r), None) if r.is_positive() => edits.push(edit(Field::Limits, *r)),
                _ => match default
                    .and_then(|d| d.requests.get(resource).or_else(|| d.limits.get(resource)))
                    .filter(|v| v.is_positive())
                {
                    Some(v) => {
                        edits.push(edit(Field::Limits, *v));
                        edits.push(edit(Field::Requests, *v));
                    }
                    None => stuck.push((i, resource.to_string())),
                },
            }
        }
    }
    (edits, stuck)
}

/// A resource where the containers do not fit `spec.resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLevelBreach {
    pub resource: String,
    pub field: Field,
    /// For requests: the sidecar-aware container aggregate and its parts.
    pub breakdown: Breakdown,
    /// For limits: the containers whose own limit is above the pod's.
    pub containers: Vec<(String, Quantity)>,
    pub pod_level: Quantity,
    /// Where `pod_level` is written: a request left out may not be above the limit either.
    pub written_in: Field,
}

impl fmt::Display for PodLevelBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.breakdown;
        match self.field {
            Field::Requests => {
                write!(
                    f,
                    "{} requests: the containers need {} (apps {} + sidecars {}, init peak {}) but spec.resources.{}.{} is {}",
                    self.resource,
                    b.aggregate(),
                    b.app_sum,
                    b.sidecar_sum,
                    b.init_peak,
                    self.written_in.as_str(),
                    self.resource,
                    self.pod_level,
                )?;
                match self.written_in {
                    Field::Requests => write!(f, " (effective {})", b.effective),
                    Field::Limits => f.write_str(
                        " and no pod-level request is set (the API server would default it to the containers' need, above the limit)",
                    ),
                }
            }
            Field::Limits => write!(
                f,
                "{} limits: {} above spec.resources.limits.{} {}",
                self.resource,
                self.containers
                    .iter()
                    .map(|(n, q)| format!("{n:?} limits {q}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.resource,
                self.pod_level
            ),
        }
    }
}

/// The resources `spec.resources` names that the API server refuses at pod level
/// (`validatePodResourceName`), by list.
pub fn unsupported_pod_level(acc: &Accounting) -> Vec<(Field, String)> {
    let Some(pod) = &acc.pod_level else {
        return Vec::new();
    };
    let named = |field: Field, list: &PerResource<Quantity>| {
        list.keys()
            .filter(|r| !effective::is_pod_level_resource(r))
            .map(move |r| (field, r.clone()))
            .collect::<Vec<_>>()
    };
    let mut out = named(Field::Requests, &pod.requests);
    out.extend(named(Field::Limits, &pod.limits));
    out
}

/// With pod-level resources: the container aggregate (sidecars and the init peak
/// included) must fit the pod-level requests, and every container's limit, init and
/// sidecar containers included, the pod-level limit.
pub fn pod_level_breaches(acc: &Accounting) -> Vec<PodLevelBreach> {
    let Some(pod) = &acc.pod_level else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // A request left out is defaulted from the containers, and may not be above the limit.
    let requests = pod.requests.iter().map(|(r, q)| (r, q, Field::Requests));
    let limits = pod
        .limits
        .iter()
        .filter(|(r, _)| !pod.requests.contains_key(*r));
    // A resource refused at pod level has a finding of its own (`unsupported_pod_level`).
    for (resource, bound, written_in) in requests
        .chain(limits.map(|(r, q)| (r, q, Field::Limits)))
        .filter(|(r, ..)| effective::is_pod_level_resource(r))
    {
        let Some(b) = acc.pod().requests.get(resource) else {
            continue;
        };
        if b.aggregate() > *bound {
            out.push(PodLevelBreach {
                resource: resource.clone(),
                field: Field::Requests,
                breakdown: b.clone(),
                containers: Vec::new(),
                pod_level: *bound,
                written_in,
            });
        }
    }
    for (resource, limit) in pod
        .limits
        .iter()
        .filter(|(r, _)| effective::is_pod_level_resource(r))
    {
        let over: Vec<(String, Quantity)> = acc
            .containers
            .iter()
            .filter_map(|c| {
                c.resources
                    .limits
                    .get(resource)
                    .filter(|q| *q > limit)
                    .map(|q| (c.name.clone(), *q))
            })
            .collect();
        if !over.is_empty() {
            out.push(PodLevelBreach {
                resource: resource.clone(),
                field: Field::Limits,
                breakdown: acc.pod().limits.get(resource).cloned().unwrap_or_default(),
                containers: over,
                pod_level: *limit,
                written_in: Field::Limits,
            });
        }
    }
    out
}

/// The sidecars request more than `max` percent of the pod's effective requests of
/// `resource`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareOver {
    pub resource: String,
    pub sidecars: Quantity,
    pub effective: Quantity,
    pub percent: f64,
    pub max: u32,
}

impl fmt::Display for ShareOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sidecars request {} of the pod's {} {} ({:.2}%), more than maxSidecarShare {}%",
            self.sidecars, self.effective, self.resource, self.percent, self.max
        )
    }
}

/// The sidecars' share of the effective requests, per resource, where it is above its
/// maximum in `max` (by resource, `*` for every resource).
pub fn sidecar_share_over(acc: &Accounting, max: &BTreeMap<String, u32>) -> Vec<ShareOver> {
    let mut out = Vec::new();
    for (resource, b) in &acc.pod().requests {
        let Some(limit) = max.get(resource).or_else(|| max.get("*")) else {
            continue;
        };
        // sidecar / effective > limit / 100, compared exactly.
        if b.effective.is_positive()
            && b.sidecar_sum.nanos() * 100 > b.effective.nanos() * i128::from(*limit)
        {
            out.push(ShareOver {
                resource: resource.clone(),
                sidecars: b.sidecar_sum,
                effective: b.effective,
                percent: b.sidecar_sum.percent_of(&b.effective).unwrap_or_default(),
                max: *limit,
            });
        }
    }
    out
}

/// The pod reserves more of `resource` than a maximum allows: `effective` is `None` when
/// the limit is unbounded, because `unbounded_on` set none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverMax {
    pub field: Field,
    pub resource: String,
    pub effective: Option<Quantity>,
    pub unbounded_on: Vec<String>,
    pub max: Quantity,
}

impl fmt::Display for OverMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let setting = match self.field {
            Field::Requests => "maxEffectiveRequests",
            Field::Limits => "maxEffectiveLimits",
        };
        let (field, resource, max) = (self.field.as_str(), &self.resource, self.max);
        match self.effective {
            Some(e) => write!(
                f,
                "the pod's effective {resource} {field} are {e}, more than {setting}.{resource} {max}"
            ),
            None => write!(
                f,
                "the pod's {resource} limit is unbounded (no limit on {}), but {setting}.{resource} is {max}",
                self.unbounded_on.join(", ")
            ),
        }
    }
}

/// The pod's effective requests and limits above the maxima (an unbounded limit is above
/// any maximum).
pub fn over_max(
    pod: &PodResources,
    max_requests: &BTreeMap<String, Quantity>,
    max_limits: &BTreeMap<String, Quantity>,
) -> Vec<OverMax> {
    let mut out = Vec::new();
    for (field, figures, max) in [
        (Field::Requests, &pod.requests, max_requests),
        (Field::Limits, &pod.limits, max_limits),
    ] {
        for (resource, cap) in max {
            let unbounded = (field == Field::Limits)
                .then(|| {
                    pod.unbounded_limits
                        .iter()
                        .find(|u| &u.resource == resource)
                })
                .flatten();
            let over = |effective, unbounded_on| OverMax {
                field,
                resource: resource.clone(),
                effective,
                unbounded_on,
                max: *cap,
            };
            if let Some(u) = unbounded {
                out.push(over(None, u.containers.clone()));
            } else if let Some(b) = figures.get(resource)
                && b.effective > *cap
            {
                out.push(over(Some(b.effective), Vec::new()));
            }
        }
    }
    out
}

impl PodResources {
    /// The audit annotations that record what the pod reserves and its QoS class.
    pub fn audit_annotations(&self) -> [(&'static str, String); 3] {
        [
            (keys::EFFECTIVE_REQUESTS, summary(&self.requests, &[])),
            (
                keys::EFFECTIVE_LIMITS,
                summary(&self.limits, &self.unbounded_limits),
            ),
            (keys::QOS_CLASS, self.qos_class.as_str().to_string()),
        ]
    }
}

/// `cpu=4100m,memory=9Gi`, for audit annotations; resources in `unbounded` read
/// `unbounded`, whatever the containers that set a limit add up to.
pub fn summary(
    figures: &PerResource<Breakdown>,
    unbounded: &[crate::resources::effective::Unbounded],
) -> String {
    use std::fmt::Write;
    let unbounded: Vec<&str> = unbounded.iter().map(|u| u.resource.as_str()).collect();
    let names: BTreeSet<&str> = figures
        .keys()
        .map(String::as_str)
        .chain(unbounded.iter().copied())
        .collect();
    // Written into one string: this runs on every request, for the audit annotations.
    let mut out = String::new();
    for name in names {
        if !out.is_empty() {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = match figures.get(name) {
            Some(b) if !unbounded.contains(&name) => write!(out, "{name}={}", b.effective),
            _ => write!(out, "{name}=unbounded"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::KnownSidecars;
    use serde_json::{Value, json};

    fn model(spec: Value) -> PodModel {
        PodModel::of(
            &json!({"kind": "Pod", "spec": spec}),
            &KnownSidecars::default(),
        )
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn istio_default() -> ResourceDefault {
        serde_json::from_value(json!({"image": "*/proxyv2",
            "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}})).unwrap()
    }

    fn guaranteed_app_with_proxy(proxy_resources: Value) -> PodModel {
        model(json!({
            "initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24", "restartPolicy": "Always",
                                "resources": proxy_resources}],
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]
        }))
    }

    #[test]
    fn gaps_are_filled_from_defaults_without_overwriting() {
        let m = guaranteed_app_with_proxy(json!({"requests": {"cpu": "300m"}}));
        let acc = Accounting::of(&m, KubeVersion::DEFAULT).unwrap();
        let gaps = sidecar_gaps(&m, &acc, true, &[istio_default()]);
        assert!(gaps.missing.is_empty());
        let filled: Vec<(Field, &str, String)> = gaps
            .fill
            .iter()
            .map(|e| (e.field, e.resource.as_str(), e.value.to_string()))
            .collect();
        assert_eq!(
            filled,
            [
                (Field::Limits, "cpu", "2".into()),
                (Field::Limits, "memory", "1Gi".into()),
                (Field::Requests, "memory", "128Mi".into())
            ]
        );
        let gaps = sidecar_gaps(&m, &acc, false, &[]);
        assert_eq!(gaps.missing, [(0, Field::Requests, "memory".to_string())]);
    }

    #[test]
    fn an_unlimited_proxy_downgrades_and_is_guaranteed_again() {
        let m = guaranteed_app_with_proxy(json!({"requests": {"cpu": "100m", "memory": "128Mi"}}));
        let acc = Accounting::of(&m, KubeVersion::DEFAULT).unwrap();
        let d = qos_downgrade(&m, &acc, &KnownSidecars::default()).unwrap();
        assert_eq!(
            (d.app_class, d.pod_class, d.offenders.clone()),
            (QosClass::Guaranteed, QosClass::Burstable, vec![0])
        );
        let (edits, stuck) = guarantee(&m, &acc, &d.offenders, &[]);
        assert!(stuck.is_empty());
        assert_eq!(acc.with(&edits).pod().qos_class, QosClass::Guaranteed);
        assert_eq!(
            acc.with(&edits).containers[0]
                .resources
                .limits
                .get("cpu")
                .copied()
                .unwrap(),
            q("100m")
        );
    }

    #[test]
    fn a_proxy_with_nothing_needs_defaults() {
        let m = guaranteed_app_with_proxy(json!({}));
        let acc = Accounting::of(&m, KubeVersion::DEFAULT).unwrap();
        let d = qos_downgrade(&m, &acc, &KnownSidecars::default()).unwrap();
        let (_, stuck) = guarantee(&m, &acc, &d.offenders, &[]);
        assert_eq!(stuck, [(0, "cpu".to_string()), (0, "memory".to_string())]);
        let (edits, stuck) = guarantee(&m, &acc, &d.offenders, &[istio_default()]);
        assert!(stuck.is_empty());
        let after = acc.with(&edits);
        assert_eq!(after.pod().qos_class, QosClass::Guaranteed);
        assert_eq!(
            after.containers[0]
                .resources
                .requests
                .get("memory")
                .copied()
                .unwrap(),
            q("128Mi")
        );
    }

    #[test]
    fn pod_level_breaches_carry_the_breakdown() {
        let m = model(json!({
            "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
            "initContainers": [{"name": "logs", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "5"}}}],
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "4", "memory": "8Gi"}}}]
        }));
        let acc = Accounting::of(&m, KubeVersion::DEFAULT).unwrap();
        let text: Vec<String> = pod_level_breaches(&acc)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "cpu requests: the containers need 4100m (apps 4 + sidecars 100m, init peak 100m) but spec.resources.requests.cpu is 4 (effective 4)",
                "memory requests: the containers need 9Gi (apps 8Gi + sidecars 1Gi, init peak 1Gi) but spec.resources.requests.memory is 8Gi (effective 8Gi)",
                "cpu limits: \"logs\" limits 5 above spec.resources.limits.cpu 4",
            ]
        );
    }

    #[test]
    fn sidecar_share_and_maxima() {
        let m = guaranteed_app_with_proxy(json!({"requests": {"cpu": "500m", "memory": "128Mi"}}));
        let acc = Accounting::of(&m, KubeVersion::DEFAULT).unwrap();
        let over = sidecar_share_over(&acc, &BTreeMap::from([("*".to_string(), 30)]));
        assert_eq!(
            over,
            [ShareOver {
                resource: "cpu".into(),
                sidecars: q("500m"),
                effective: q("1500m"),
                percent: 33.33,
                max: 30
            }]
        );
        let max = BTreeMap::from([
            ("cpu".to_string(), q("1")),
            ("memory".to_string(), q("4Gi")),
        ]);
        let over: Vec<String> = over_max(acc.pod(), &max, &max)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            over,
            [
                "the pod's effective cpu requests are 1500m, more than maxEffectiveRequests.cpu 1",
                "the pod's cpu limit is unbounded (no limit on istio-proxy), but maxEffectiveLimits.cpu is 1",
                "the pod's memory limit is unbounded (no limit on istio-proxy), but maxEffectiveLimits.memory is 4Gi",
            ]
        );
    }

    #[test]
    fn defaults_are_validated() {
        let bad: ResourceDefault = serde_json::from_value(
            json!({"image": "*/proxyv2", "requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        )
        .unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("requests.cpu 2 is more than limits.cpu 1")
        );
        let err = serde_json::from_value::<ResourceDefault>(
            json!({"image": "x", "requests": {"cpu": "lots"}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"lots\""), "{err}");
    }
}
