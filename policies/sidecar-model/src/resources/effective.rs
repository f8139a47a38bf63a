//! Effective pod requests and limits and the QoS class, as Kubernetes computes them
//! (component-helpers `PodRequests`/`PodLimits` with default options, `ComputePodQOS`).
//!
//! Containers are read as the API server stores them: a resource with a limit but no
//! request gets the limit as its request (core/v1 defaulting), so a workload template
//! gives the figures its pods will have.

use crate::kube::{Feature, KubeVersion, PodSpec, Text};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use litemap::LiteMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::kube::ModelError;
use crate::kube::Quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";

/// Per resource, the parts the effective value is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Breakdown {
    /// Sum over app containers (`containers`).
    pub app_sum: Quantity,
    /// Sum over native sidecars.
    pub sidecar_sum: Quantity,
    /// The largest need during initialisation: an init container plus the sidecars
    /// started before it, or all sidecars.
    pub init_peak: Quantity,
    /// `spec.overhead`, added to requests, and to limits that are set.
    pub overhead: Quantity,
    /// `spec.resources` (pod-level), which replaces the container aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_level: Option<Quantity>,
    /// What the scheduler (requests) or the kubelet (limits) uses.
    pub effective: Quantity,
}

impl Breakdown {
    /// `max(app + sidecars, init peak)`: the container aggregate before pod-level
    /// resources and overhead.
    pub fn aggregate(&self) -> Quantity {
        (self.app_sum + self.sidecar_sum).max(self.init_peak)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Figures per resource name, in name order. A sorted `Vec` rather than a `BTreeMap`: a
/// pod names two or three resources, a BTreeMap node has room for eleven, and every page
/// a fresh instance touches is a page the kernel zero-fills (a pod of 200 containers
/// holds 400 of these maps).
pub type PerResource<V> = LiteMap<String, V>;

/// A resource whose limit is unbounded because these containers set none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unbounded {
    pub resource: String,
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodResources {
    pub requests: PerResource<Breakdown>,
    pub limits: PerResource<Breakdown>,
    /// cpu and memory always; other resources when some container limits them.
    pub unbounded_limits: Vec<Unbounded>,
    pub qos_class: QosClass,
}

impl PodResources {
    pub fn effective_requests(&self) -> PerResource<Quantity> {
        self.requests
            .iter()
            .map(|(k, b)| (k.clone(), b.effective))
            .collect()
    }

    pub fn effective_limits(&self) -> PerResource<Quantity> {
        self.limits
            .iter()
            .map(|(k, b)| (k.clone(), b.effective))
            .collect()
    }
}

/// One container's requests and limits, parsed and defaulted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerResources {
    pub requests: PerResource<Quantity>,
    pub limits: PerResource<Quantity>,
}

impl ContainerResources {
    /// `owner` names the container in errors; it is only built for one (a pod of 200
    /// containers would otherwise format 200 labels for nothing).
    pub fn read(
        owner: impl Fn() -> String,
        resources: Option<&ResourceRequirements>,
    ) -> Result<Self, ModelError> {
        Self::from_lists(
            owner,
            typed_pairs(resources.and_then(|r| r.requests.as_ref())),
            typed_pairs(resources.and_then(|r| r.limits.as_ref())),
        )
        .map(Self::defaulted)
    }

    /// A container's resources from the text the model keeps.
    pub fn of(owner: impl Fn() -> String, resources: Option<&Text>) -> Result<Self, ModelError> {
        match resources {
            None => Ok(Self::default()),
            Some(text) => Self::read_text(owner, text.raw()),
        }
    }

    /// A container's `resources` as the JSON text the model keeps: the quantities are
    /// parsed from the text itself, with no k8s-openapi maps of strings in between.
    fn read_text(owner: impl Fn() -> String, text: &RawValue) -> Result<Self, ModelError> {
        /// `ResourceRequirements`, its quantities borrowed from the text (`claims` are
        /// not accounted).
        #[derive(Deserialize)]
        struct Requirements<'a> {
            #[serde(borrow, default)]
            requests: Option<Quantities<'a>>,
            #[serde(borrow, default)]
            limits: Option<Quantities<'a>>,
        }
        /// A quantity as JSON writes it: a string, or a number (`cpu: 1`), which the API
        /// server reads as the same quantity.
        struct Number<'a>(Cow<'a, str>);
        impl<'de: 'a, 'a> Deserialize<'de> for Number<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Text<'a>(std::marker::PhantomData<&'a ()>);
                impl<'de: 'a, 'a> serde::de::Visitor<'de> for Text<'a> {
                    type Value = Number<'a>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a quantity (a string or a number)")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                        Ok(Number(Cow::Borrowed(v)))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                        Ok(Number(Cow::Owned(v.to_string())))
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                        Ok(Number(Cow::Owned(v.to_string())))
                    }
                    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                        Ok(Number(Cow::Owned(v.to_string())))
                    }
                    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                        Ok(Number(Cow::Owned(v.to_string())))
                    }
                }
                d.deserialize_any(Text(std::marker::PhantomData))
            }
        }
        /// A map of quantities. LiteMap's own reader also takes a list of pairs, which
        /// the API server (and k8s-openapi) refuse.
        struct Quantities<'a>(LiteMap<Cow<'a, str>, Cow<'a, str>>);
        impl<'de: 'a, 'a> Deserialize<'de> for Quantities<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Map<'a>(std::marker::PhantomData<&'a ()>);
                impl<'de: 'a, 'a> serde::de::Visitor<'de> for Map<'a> {
                    type Value = Quantities<'a>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a map")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut out = LiteMap::new();
                        while let Some((k, Number(v))) =
                            map.next_entry::<Cow<'a, str>, Number<'a>>()?
                        {
                            out.insert(k, v);
                        }
                        Ok(Quantities(out))
                    }
                }
                d.deserialize_map(Map(std::marker::PhantomData))
            }
        }
        // A derived reader would also take a list, as fields in order; k8s-openapi's,
        // which reads the same field when it is not kept as text, takes objects only.
        if !text.get().trim_start().starts_with('{') {
            return Err(ModelError::Malformed(format!(
                "{} resources: invalid type: expected an object (ResourceRequirements)",
                owner()
            )));
        }
        let read: Requirements = serde_json::from_str(text.get()).map_err(|first| {
            let (path, why) = crate::kube::where_and_why(
                first,
                serde_path_to_error::deserialize::<_, Requirements>(
                    &mut serde_json::Deserializer::from_str(text.get()),
                ),
            );
            let path = path.map(|p| format!(".{p}")).unwrap_or_default();
            ModelError::Malformed(format!("{} resources{path}: {why}", owner()))
        })?;
        fn pairs<'t>(list: Option<&'t Quantities<'_>>) -> impl Iterator<Item = (&'t str, &'t str)> {
            list.into_iter()
                .flat_map(|l| l.0.iter())
                .map(|(name, q)| (name.as_ref(), q.as_ref()))
        }
        Self::from_lists(
            owner,
            pairs(read.requests.as_ref()),
            pairs(read.limits.as_ref()),
        )
        .map(Self::defaulted)
    }

    /// From `(resource, quantity text)` pairs, unique and in name order, as written.
    fn from_lists<'t>(
        owner: impl Fn() -> String,
        requests: impl Iterator<Item = (&'t str, &'t str)>,
        limits: impl Iterator<Item = (&'t str, &'t str)>,
    ) -> Result<Self, ModelError> {
        fn parse<'t>(
            owner: &dyn Fn() -> String,
            field: &str,
            list: impl Iterator<Item = (&'t str, &'t str)>,
        ) -> Result<PerResource<Quantity>, ModelError> {
            list.map(|(name, q)| {
                Quantity::parse(q)
                    .and_then(|v| match v.nanos() < 0 {
                        true => Err(crate::kube::QuantityError::Negative(q.to_string())),
                        false => Ok(v),
                    })
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| ModelError::Quantity {
                        at: format!("{} resources.{field}.{name}", owner()),
                        error: e,
                    })
            })
            .collect()
        }
        let limits = parse(&owner, "limits", limits)?;
        let requests = parse(&owner, "requests", requests)?;
        Ok(ContainerResources { requests, limits })
    }

    /// A container's missing requests are its limits (`SetDefaults_Pod`).
    fn defaulted(mut self) -> Self {
        for (name, limit) in &self.limits {
            if !self.requests.contains_key(name) {
                self.requests.insert(name.clone(), *limit);
            }
        }
        self
    }

    /// Without the container defaulting: pod-level requests are defaulted otherwise
    /// ([`pod_level_as_stored`]).
    fn as_written(
        owner: impl Fn() -> String,
        resources: &ResourceRequirements,
    ) -> Result<Self, ModelError> {
        Self::from_lists(
            owner,
            typed_pairs(resources.requests.as_ref()),
            typed_pairs(resources.limits.as_ref()),
        )
    }

    /// `resourceQOS` of one set of requirements.
    pub fn qos_class(&self) -> QosClass {
        if self.requests.is_empty() && self.limits.is_empty() {
            return QosClass::BestEffort;
        }
        let mut class = None;
        for r in [CPU, MEMORY] {
            let req = self.requests.get(r).copied().unwrap_or_default();
            let lim = self.limits.get(r).copied().unwrap_or_default();
            if req != lim {
                return QosClass::Burstable;
            }
            let this = if req.is_zero() {
                QosClass::BestEffort
            } else {
                QosClass::Guaranteed
            };
            match class {
                None => class = Some(this),
                Some(c) if c != this => return QosClass::Burstable,
                _ => {}
            }
        }
        class.unwrap_or(QosClass::BestEffort)
    }
}

/// A k8s-openapi quantity list as `(resource, quantity text)` pairs.
fn typed_pairs(list: Option<&BTreeMap<String, K8sQuantity>>) -> impl Iterator<Item = (&str, &str)> {
    list.into_iter()
        .flatten()
        .map(|(name, q)| (name.as_str(), q.0.as_str()))
}

/// Where a container sits, for the accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    App,
    Sidecar,
    Init,
}

/// A container as the accounting sees it.
#[derive(Debug, Clone)]
pub struct Accounted {
    pub name: String,
    pub role: Role,
    pub resources: ContainerResources,
    /// A `resizePolicy` says `RestartContainer`: a regular init container with one may not
    /// be resized.
    pub restarts_on_resize: bool,
}

/// The containers of `spec` in init-then-app order, with their parsed resources.
pub fn accounted_containers(spec: &PodSpec) -> Result<Vec<Accounted>, ModelError> {
    let mut out = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let role = if c.restart_policy.as_deref() == Some("Always") {
            Role::Sidecar
        } else {
            Role::Init
        };
        out.push(Accounted {
            name: c.name.clone(),
            role,
            resources: ContainerResources::of(
                || format!("initContainers[{i}] ({})", c.name),
                c.resources.as_ref(),
            )?,
            restarts_on_resize: c.restarts_on_resize(),
        });
    }
    for (i, c) in spec.containers.iter().enumerate() {
        out.push(Accounted {
            name: c.name.clone(),
            role: Role::App,
            resources: ContainerResources::of(
                || format!("containers[{i}] ({})", c.name),
                c.resources.as_ref(),
            )?,
            restarts_on_resize: c.restarts_on_resize(),
        });
    }
    Ok(out)
}

/// The pod-level resources (`spec.resources`) as written: [`pod_level_as_stored`] says
/// what the API server makes of them.
pub fn pod_level(spec: &PodSpec) -> Result<Option<ContainerResources>, ModelError> {
    spec.resources
        .as_ref()
        .map(|r| ContainerResources::as_written(|| "spec".into(), r))
        .transpose()
}

/// The pod-level resources as the API server stores them, given the containers it defaults
/// them from (ARCHITECTURE.md, "Pod-level resources as stored"):
/// - a missing cpu or memory request is the containers' aggregated request when any
///   container requests it, otherwise the pod-level limit; other resources' requests are
///   their limits (`defaultPodRequests`, and `defaultPodLevelRequests` from 1.37);
/// - up to 1.36 this happens only when pod-level limits are set, and from the containers
///   as they were before the admission webhooks (a validating policy already sees the
///   result in the object); from 1.37 it happens after the webhooks, when pod-level
///   requests or limits are set, and a missing limit of a resource every container limits
///   becomes the larger of the pod-level request and the containers' aggregated limit
///   (`defaultPodLevelLimits`).
///
/// Hugepages limits defaulted from the containers' are not modelled: no sidecar we know of
/// asks for hugepages.
pub fn pod_level_as_stored(
    written: &ContainerResources,
    containers: &[Accounted],
    version: KubeVersion,
) -> ContainerResources {
    let after_admission = version.supports(Feature::PodLevelDefaultsAfterAdmission);
    let runs = if after_admission {
        !written.requests.is_empty() || !written.limits.is_empty()
    } else {
        !written.limits.is_empty()
    };
    if !runs {
        return written.clone();
    }
    let none = PerResource::new();
    let requested = aggregate(containers, |c| &c.requests, None, &none, true);
    let mut stored = written.clone();
    for name in [CPU, MEMORY] {
        if let Some(b) = requested.get(name)
            && !stored.requests.contains_key(name)
        {
            stored.requests.insert(name.to_string(), b.aggregate());
        }
    }
    for (name, limit) in &written.limits {
        if is_pod_level_resource(name) && !stored.requests.contains_key(name) {
            stored.requests.insert(name.clone(), *limit);
        }
    }
    if after_admission {
        let limited = aggregate(containers, |c| &c.limits, None, &none, false);
        for (name, request) in stored.requests.clone().iter() {
            let every_container_limits = containers
                .iter()
                .all(|c| c.resources.limits.contains_key(name));
            if is_pod_level_resource(name)
                && !stored.limits.contains_key(name)
                && every_container_limits
                && let Some(b) = limited.get(name)
            {
                stored
                    .limits
                    .insert(name.clone(), b.aggregate().max(*request));
            }
        }
    }
    stored
}

/// Whether pod-level resources, not the containers, decide the pod's QoS class
/// (`ComputePodQOS`).
pub fn pod_level_decides_qos(pod_level: Option<&ContainerResources>, version: KubeVersion) -> bool {
    pod_level.is_some_and(|p| {
        !version.supports(Feature::PodLevelQosWhenSet)
            || p.requests
                .keys()
                .chain(p.limits.keys())
                .any(|name| is_pod_level_resource(name))
    })
}

/// Resources `spec.resources` may set (`IsSupportedPodLevelResource`).
pub fn is_pod_level_resource(name: &str) -> bool {
    name == CPU || name == MEMORY || name.starts_with("hugepages-")
}

/// Computes requests, limits, unbounded limits and QoS for `spec` on `version`.
pub fn compute(spec: &PodSpec, version: KubeVersion) -> Result<PodResources, ModelError> {
    let containers = accounted_containers(spec)?;
    let pod_level = pod_level(spec)?;
    let overhead = ContainerResources::read(
        || "spec.overhead".into(),
        Some(&ResourceRequirements {
            requests: spec.overhead.clone(),
            ..Default::default()
        }),
    )?
    .requests;
    Ok(compute_from(
        &containers,
        pod_level.as_ref(),
        &overhead,
        version,
    ))
}

/// The formula of ARCHITECTURE.md ("Effective pod requests and limits") over already parsed containers, so policies can ask "what if".
pub fn compute_from(
    containers: &[Accounted],
    pod_level: Option<&ContainerResources>,
    overhead: &PerResource<Quantity>,
    version: KubeVersion,
) -> PodResources {
    let stored = pod_level.map(|p| pod_level_as_stored(p, containers, version));
    let pod_level = stored.as_ref();
    let requests = aggregate(
        containers,
        |c| &c.requests,
        pod_level.map(|p| &p.requests),
        overhead,
        true,
    );
    let limits = aggregate(
        containers,
        |c| &c.limits,
        pod_level.map(|p| &p.limits),
        overhead,
        false,
    );

    let mut unbounded_limits = Vec::new();
    let mut resources: BTreeSet<&str> = [CPU, MEMORY].into();
    for c in containers {
        resources.extend(c.resources.limits.keys().map(String::as_str));
    }
    for r in resources {
        if pod_level.is_some_and(|p| p.limits.contains_key(r)) {
            continue;
        }
        let without: Vec<String> = containers
            .iter()
            .filter(|c| !c.resources.limits.contains_key(r))
            .map(|c| c.name.clone())
            .collect();
        if !without.is_empty() {
            unbounded_limits.push(Unbounded {
                resource: r.to_string(),
                containers: without,
            });
        }
    }

    PodResources {
        requests,
        limits,
        unbounded_limits,
        qos_class: qos(containers, pod_level, version),
    }
}

fn aggregate(
    containers: &[Accounted],
    list: impl Fn(&ContainerResources) -> &PerResource<Quantity>,
    pod_level: Option<&PerResource<Quantity>>,
    overhead: &PerResource<Quantity>,
    is_requests: bool,
) -> PerResource<Breakdown> {
    let mut out: PerResource<Breakdown> = LiteMap::new();
    for c in containers.iter().filter(|c| c.role == Role::App) {
        for (name, q) in list(&c.resources) {
            slot(&mut out, name).app_sum += *q;
        }
    }
    // Sidecars started so far, per resource, while walking init containers in order.
    let mut started: PerResource<Quantity> = LiteMap::new();
    for c in containers.iter().filter(|c| c.role != Role::App) {
        let own = list(&c.resources);
        if c.role == Role::Sidecar {
            for (name, q) in own {
                slot(&mut out, name).sidecar_sum += *q;
                *slot(&mut started, name) += *q;
            }
            for (name, q) in &started {
                let b = slot(&mut out, name);
                b.init_peak = b.init_peak.max(*q);
            }
        } else {
            // Each resource the init container or a started sidecar uses (a name in both
            // is counted once: the max is the same).
            for name in own.keys().chain(started.keys()) {
                let use_now = own.get(name).copied().unwrap_or_default()
                    + started.get(name).copied().unwrap_or_default();
                let b = slot(&mut out, name);
                b.init_peak = b.init_peak.max(use_now);
            }
        }
    }
    for (_, b) in out.iter_mut() {
        b.effective = b.aggregate();
    }
    for (name, q) in pod_level.into_iter().flatten() {
        if is_pod_level_resource(name) {
            let b = slot(&mut out, name);
            b.pod_level = Some(*q);
            b.effective = *q;
        }
    }
    for (name, q) in overhead {
        // PodLimits adds overhead only to limits that are set.
        if is_requests || out.contains_key(name) {
            let b = slot(&mut out, name);
            b.overhead = *q;
            b.effective += *q;
        }
    }
    out
}

/// The entry for `name`, added empty when missing: the key is copied only then (a pod of
/// 200 containers looks the same few names up thousands of times).
fn slot<'m, V: Default>(map: &'m mut PerResource<V>, name: &str) -> &'m mut V {
    if !map.contains_key(name) {
        map.insert(name.to_string(), V::default());
    }
    map.get_mut(name).expect("inserted above")
}

/// `ComputePodQOS`: pod-level resources alone decide when they do
/// ([`pod_level_decides_qos`]); otherwise every container, init and sidecar included.
fn qos(
    containers: &[Accounted],
    pod_level: Option<&ContainerResources>,
    version: KubeVersion,
) -> QosClass {
    match pod_level {
        Some(p) if pod_level_decides_qos(Some(p), version) => p.qos_class(),
        _ => qos_of(containers.iter().map(|c| &c.resources)),
    }
}

/// The QoS class of these containers together (no pod-level resources).
pub fn qos_of<'c>(containers: impl IntoIterator<Item = &'c ContainerResources>) -> QosClass {
    let mut class = None;
    for c in containers {
        let this = c.qos_class();
        if this == QosClass::Burstable {
            return QosClass::Burstable;
        }
        match class {
            None => class = Some(this),
            Some(c) if c != this => return QosClass::Burstable,
            _ => {}
        }
    }
    class.unwrap_or(QosClass::BestEffort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// On the policies' default version unless a test says otherwise.
    fn compute(spec: &PodSpec) -> Result<PodResources, ModelError> {
        super::compute(spec, KubeVersion::DEFAULT)
    }

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn c(name: &str, req: Value, lim: Value) -> Value {
        json!({"name": name, "resources": {"requests": req, "limits": lim}})
    }

    fn sc(name: &str, req: Value, lim: Value) -> Value {
        let mut v = c(name, req, lim);
        v["restartPolicy"] = json!("Always");
        v
    }

    fn effective(r: &PerResource<Breakdown>, name: &str) -> String {
        r.get(name).unwrap().effective.to_string()
    }

    /// Resources read from the kept text give the figures and the errors k8s-openapi's
    /// `ResourceRequirements` gives, and the errors name the container and the field.
    #[test]
    fn resources_read_from_text_account_as_k8s_openapi_reads_them() {
        let text = |v: Value| spec(v);
        // Each container's `resources` through k8s-openapi, then the same arithmetic.
        let typed = |v: &Value| -> Result<Vec<ContainerResources>, String> {
            v["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(v["initContainers"].as_array().into_iter().flatten())
                .map(|c| {
                    let r: Option<ResourceRequirements> =
                        serde_json::from_value(c["resources"].clone())
                            .map_err(|e| e.to_string())?;
                    ContainerResources::read(|| "c".into(), r.as_ref()).map_err(|e| e.to_string())
                })
                .collect()
        };
        let pods = [
            json!({"initContainers": [sc("proxy", json!({"cpu": "100m"}), json!({"memory": "1Gi"}))],
                   "containers": [c("app", json!({"cpu": "1", "memory": "1Gi"}), json!({"cpu": "2", "nvidia.com/gpu": "1"})),
                                  {"name": "bare"}, {"name": "nulls", "resources": {"requests": null, "claims": [{"name": "x"}]}}]}),
            json!({"containers": [{"name": "app"}, {"name": "web", "resources": {"requests": "lots"}}]}),
            json!({"containers": [{"name": "app", "resources": []}]}),
            json!({"containers": [c("app", json!({"cpu": "a lot"}), json!({}))]}),
        ];
        for pod in pods {
            let kept = text(pod.clone());
            let from_text: Result<Vec<ContainerResources>, String> = kept
                .containers
                .iter()
                .chain(kept.init_containers.iter().flatten())
                .map(|c| {
                    ContainerResources::of(|| "c".into(), c.resources.as_ref())
                        .map_err(|e| e.to_string())
                })
                .collect();
            match (from_text, typed(&pod)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{pod}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{pod}: {a:?} / {b:?}"),
            }
        }
        // A name twice in one list (only text can say it): the last one counts, as in
        // the API server's reading of JSON.
        let twice = r#"{"containers": [{"name": "app", "resources":
            {"requests": {"memory": "1Gi", "cpu": "1", "cpu": "250m"}, "limits": {"cpu": "2", "cpu": "500m"}}}]}"#;
        let r = compute(&serde_json::from_str::<PodSpec>(twice).unwrap()).unwrap();
        assert_eq!(effective(&r.requests, "cpu"), "250m");
        assert_eq!(effective(&r.requests, "memory"), "1Gi");
        assert_eq!(effective(&r.limits, "cpu"), "500m");
        let e = compute(&text(json!({"containers": [{"name": "app"}, {"name": "web", "resources": {"requests": "lots"}}]})))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("containers[1] (web) resources.requests: invalid type: string \"lots\"")
                && !e.contains("line"),
            "{e}"
        );
        let e = compute(&text(
            json!({"containers": [{"name": "app", "resources": []}]}),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("containers[0] (app) resources: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn apps_plus_sidecars() {
        let r = compute(&spec(json!({
            "initContainers": [sc("proxy", json!({"cpu": "100m", "memory": "128Mi"}), json!({}))],
            "containers": [
                c("app", json!({"cpu": "1", "memory": "1Gi"}), json!({})),
                c("web", json!({"cpu": "500m", "memory": "512Mi"}), json!({}))
            ]
        })))
        .unwrap();
        assert_eq!(effective(&r.requests, "cpu"), "1600m");
        assert_eq!(effective(&r.requests, "memory"), "1664Mi");
        assert_eq!(r.requests.get("cpu").unwrap().app_sum, q("1.5"));
        assert_eq!(r.requests.get("cpu").unwrap().sidecar_sum, q("100m"));
        assert_eq!(r.qos_class, QosClass::Burstable);
    }

    #[test]
    fn a_big_init_container_after_a_sidecar_counts_the_sidecar() {
        // proxy (200m) starts, then migrate (2) runs beside it: peak 2200m > 1200m.
        let r = compute(&spec(json!({
            "initContainers": [
                sc("proxy", json!({"cpu": "200m"}), json!({})),
                c("migrate", json!({"cpu": "2"}), json!({}))
            ],
            "containers": [c("app", json!({"cpu": "1"}), json!({}))]
        })))
        .unwrap();
        assert_eq!(r.requests.get("cpu").unwrap().init_peak, q("2200m"));
        assert_eq!(effective(&r.requests, "cpu"), "2200m");
    }

    #[test]
    fn a_big_init_container_before_a_sidecar_does_not() {
        let r = compute(&spec(json!({
            "initContainers": [
                c("migrate", json!({"cpu": "2"}), json!({})),
                sc("proxy", json!({"cpu": "200m"}), json!({}))
            ],
            "containers": [c("app", json!({"cpu": "1"}), json!({}))]
        })))
        .unwrap();
        assert_eq!(r.requests.get("cpu").unwrap().init_peak, q("2"));
        assert_eq!(effective(&r.requests, "cpu"), "2");
        // And the other way round, when the apps need more than the init peak.
        let r = compute(&spec(json!({
            "initContainers": [
                c("migrate", json!({"cpu": "500m"}), json!({})),
                sc("proxy", json!({"cpu": "200m"}), json!({}))
            ],
            "containers": [c("app", json!({"cpu": "1"}), json!({}))]
        })))
        .unwrap();
        assert_eq!(effective(&r.requests, "cpu"), "1200m");
    }

    #[test]
    fn overhead_goes_on_requests_and_on_set_limits_only() {
        let r = compute(&spec(json!({
            "overhead": {"cpu": "250m", "memory": "120Mi"},
            "containers": [c("app", json!({"cpu": "1", "memory": "1Gi"}), json!({"cpu": "2"}))]
        })))
        .unwrap();
        assert_eq!(effective(&r.requests, "cpu"), "1250m");
        assert_eq!(effective(&r.requests, "memory"), "1144Mi");
        assert_eq!(effective(&r.limits, "cpu"), "2250m");
        assert!(!r.limits.contains_key("memory"));
        assert_eq!(
            r.unbounded_limits,
            vec![Unbounded {
                resource: "memory".into(),
                containers: vec!["app".into()]
            }]
        );
    }

    #[test]
    fn pod_level_resources_replace_the_aggregate() {
        // The seed: a 4 CPU / 8Gi budget, containers asking 4.1 CPU / 9Gi.
        let r = compute(&spec(json!({
            "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
            "initContainers": [sc("proxy", json!({"cpu": "100m", "memory": "1Gi"}), json!({}))],
            "containers": [c("app", json!({"cpu": "4", "memory": "8Gi"}), json!({}))]
        })))
        .unwrap();
        let cpu = r.requests.get("cpu").unwrap();
        assert_eq!(cpu.aggregate().to_string(), "4100m");
        assert_eq!(cpu.pod_level, Some(q("4")));
        assert_eq!(cpu.effective, q("4"));
        assert_eq!(
            r.requests.get("memory").unwrap().aggregate().to_string(),
            "9Gi"
        );
        assert_eq!(r.qos_class, QosClass::Guaranteed);
        assert!(r.unbounded_limits.is_empty());
    }

    fn on(version: &str, v: Value) -> PodResources {
        super::compute(&spec(v), KubeVersion::parse(version).unwrap()).unwrap()
    }

    #[test]
    fn pod_level_requests_left_out_are_the_containers_requests_first() {
        // The API server's defaultPodRequests: cpu from the containers' aggregated request
        // (app 500m + sidecar 100m), memory, which no container requests, from the limit.
        let pod = json!({
            "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
            "initContainers": [sc("proxy", json!({"cpu": "100m"}), json!({}))],
            "containers": [c("app", json!({"cpu": "500m"}), json!({}))]
        });
        for version in ["1.34", "1.36", "1.37"] {
            let r = on(version, pod.clone());
            assert_eq!(effective(&r.requests, "cpu"), "600m", "{version}");
            assert_eq!(effective(&r.requests, "memory"), "2Gi", "{version}");
            assert_eq!(r.qos_class, QosClass::Burstable, "{version}");
        }
        // No container requests anything: the limits, and the pod is Guaranteed.
        let r = on(
            "1.36",
            json!({"resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
                   "containers": [{"name": "app"}]}),
        );
        assert_eq!(effective(&r.requests, "cpu"), "2");
        assert_eq!(r.qos_class, QosClass::Guaranteed);
    }

    #[test]
    fn from_1_37_pod_level_limits_left_out_are_the_containers_limits() {
        let stored = |version: &str, request: &str| {
            let s = spec(json!({
                "resources": {"requests": {"cpu": request}},
                "initContainers": [sc("proxy", json!({}), json!({"cpu": "300m"}))],
                "containers": [c("app", json!({}), json!({"cpu": "800m"}))]
            }));
            let written = pod_level(&s).unwrap().unwrap();
            let containers = accounted_containers(&s).unwrap();
            pod_level_as_stored(&written, &containers, KubeVersion::parse(version).unwrap())
                .limits
                .get(CPU)
                .map(ToString::to_string)
        };
        // Every container limits cpu: the aggregate (1100m), or the request when larger.
        assert_eq!(stored("1.37", "1").as_deref(), Some("1100m"));
        assert_eq!(stored("1.37", "2").as_deref(), Some("2"));
        // Up to 1.36 nothing is defaulted without pod-level limits.
        assert_eq!(stored("1.36", "1"), None);
    }

    #[test]
    fn a_sidecars_ephemeral_storage_counts_like_its_cpu() {
        // The kubelet enforces a sidecar's ephemeral-storage limit (kubernetes PR 137755):
        // its request and limit add to the pod's, as the app's do, and an app without a
        // limit leaves the pod's unbounded.
        let storage = |q: &str| json!({"ephemeral-storage": q});
        let r = compute(&spec(json!({
            "initContainers": [sc("fluent-bit", storage("1Gi"), storage("2Gi"))],
            "containers": [c("app", storage("4Gi"), storage("8Gi"))]
        })))
        .unwrap();
        assert_eq!(effective(&r.requests, "ephemeral-storage"), "5Gi");
        assert_eq!(effective(&r.limits, "ephemeral-storage"), "10Gi");
        assert!(
            r.unbounded_limits
                .iter()
                .all(|u| u.resource != "ephemeral-storage")
        );
        let r = compute(&spec(json!({
            "initContainers": [sc("fluent-bit", storage("1Gi"), storage("2Gi"))],
            "containers": [c("app", storage("4Gi"), json!({}))]
        })))
        .unwrap();
        assert!(
            r.unbounded_limits
                .iter()
                .any(|u| u.resource == "ephemeral-storage" && u.containers == ["app"])
        );
    }

    #[test]
    fn empty_pod_level_resources_decide_the_qos_class_until_1_37() {
        let guaranteed = json!({"cpu": "1", "memory": "1Gi"});
        let pod = json!({"resources": {},
                         "containers": [c("app", guaranteed.clone(), guaranteed)]});
        assert_eq!(on("1.36", pod.clone()).qos_class, QosClass::BestEffort);
        assert_eq!(on("1.37", pod).qos_class, QosClass::Guaranteed);
    }

    #[test]
    fn missing_limits_add_nothing_and_are_unbounded() {
        let r = compute(&spec(json!({
            "initContainers": [sc("proxy", json!({"cpu": "100m"}), json!({}))],
            "containers": [c("app", json!({"cpu": "1"}), json!({"cpu": "1", "memory": "1Gi"}))]
        })))
        .unwrap();
        assert_eq!(effective(&r.limits, "cpu"), "1");
        assert_eq!(
            r.unbounded_limits,
            vec![
                Unbounded {
                    resource: "cpu".into(),
                    containers: vec!["proxy".into()]
                },
                Unbounded {
                    resource: "memory".into(),
                    containers: vec!["proxy".into()]
                },
            ]
        );
    }

    #[test]
    fn limits_default_requests() {
        let r = compute(&spec(json!({
            "containers": [c("app", json!({}), json!({"cpu": "1", "memory": "1Gi"}))]
        })))
        .unwrap();
        assert_eq!(effective(&r.requests, "cpu"), "1");
        assert_eq!(r.qos_class, QosClass::Guaranteed);
    }

    #[test]
    fn qos_classes() {
        let guaranteed = json!({"cpu": "1", "memory": "1Gi"});
        let cases = [
            // Every container equal: Guaranteed.
            (
                json!({"containers": [c("a", guaranteed.clone(), guaranteed.clone())]}),
                QosClass::Guaranteed,
            ),
            // Nothing anywhere: BestEffort.
            (json!({"containers": [{"name": "a"}]}), QosClass::BestEffort),
            // An injected sidecar without limits downgrades a Guaranteed pod.
            (
                json!({
                    "initContainers": [sc("proxy", json!({"cpu": "100m", "memory": "128Mi"}), json!({}))],
                    "containers": [c("a", guaranteed.clone(), guaranteed.clone())]
                }),
                QosClass::Burstable,
            ),
            // A sidecar with nothing at all: BestEffort beside Guaranteed is Burstable.
            (
                json!({"initContainers": [{"name": "p", "restartPolicy": "Always"}],
                       "containers": [c("a", guaranteed.clone(), guaranteed.clone())]}),
                QosClass::Burstable,
            ),
            // A regular init container counts too.
            (
                json!({"initContainers": [c("i", json!({"cpu": "1"}), json!({}))],
                       "containers": [c("a", guaranteed.clone(), guaranteed.clone())]}),
                QosClass::Burstable,
            ),
            // cpu only, equal: cpu matches but memory is zero on one side only → Burstable.
            (
                json!({"containers": [c("a", json!({"cpu": "1"}), json!({"cpu": "1"}))]}),
                QosClass::Burstable,
            ),
            // Only an extended resource: neither cpu nor memory → BestEffort.
            (
                json!({"containers": [c("a", json!({"ephemeral-storage": "1Gi"}), json!({}))]}),
                QosClass::BestEffort,
            ),
            // Pod-level resources alone decide, as the API server stores them: the cpu
            // request left out is the container's 1, not the limit.
            (
                json!({"resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
                       "containers": [c("a", json!({"cpu": "1"}), json!({}))]}),
                QosClass::Burstable,
            ),
            (
                json!({"resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
                       "containers": [c("a", json!({}), json!({}))]}),
                QosClass::Guaranteed,
            ),
            (
                json!({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "2Gi"}},
                       "containers": [c("a", guaranteed.clone(), guaranteed.clone())]}),
                QosClass::Burstable,
            ),
        ];
        for (i, (s, expected)) in cases.into_iter().enumerate() {
            assert_eq!(compute(&spec(s)).unwrap().qos_class, expected, "case {i}");
        }
    }

    #[test]
    fn invalid_quantities_name_the_container() {
        let err = compute(&spec(
            json!({"containers": [c("app", json!({"cpu": "lots"}), json!({}))]}),
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("containers[0] (app) resources.requests.cpu"),
            "{text}"
        );
        assert!(text.contains("\"lots\""), "{text}");
    }
}
