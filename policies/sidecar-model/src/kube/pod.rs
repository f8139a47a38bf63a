//! A pod seen through the sidecar vocabulary: every container with its lifecycle type and
//! why, the declared start dependencies, and what is wrong with the annotations.

use crate::kube::spec::Container;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::kube::error::ModelError;
use crate::kube::finding::Finding;
use crate::kube::keys;
use crate::kube::lifecycle_type::{ContainerList, KnownSidecars, LifecycleType, TypeReason};
use crate::kube::mesh::Mesh;
use crate::kube::workload::Workload;

/// One container of the pod and its lifecycle type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub list: ContainerList,
    pub index: usize,
    #[serde(rename = "type")]
    pub lifecycle_type: LifecycleType,
    pub reason: TypeReason,
    /// For a sidecar the known-sidecar list recognises as a mesh's proxy: that mesh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<Mesh>,
}

impl ContainerInfo {
    /// A native sidecar already: an init container with `restartPolicy: Always`.
    pub fn is_native_sidecar(&self) -> bool {
        self.reason == TypeReason::NativeSidecar
    }

    /// Typed `Sidecar` but sitting in `containers`: a sidecar the old way.
    pub fn is_legacy_sidecar(&self) -> bool {
        self.lifecycle_type == LifecycleType::Sidecar && self.list == ContainerList::Containers
    }

    /// `containers[1] (istio-proxy)`, for messages.
    pub fn location(&self) -> String {
        format!("{}[{}]", self.list.field(), self.index)
    }
}

/// `after.sidecars.dev/<after>: <before>`: `before` starts first. Indices into
/// [`PodModel::containers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredAfter {
    pub before: usize,
    pub after: usize,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct PodModel {
    pub workload: Workload,
    /// `initContainers` in order, then `containers` in order.
    pub containers: Vec<ContainerInfo>,
    pub declared_after: Vec<DeclaredAfter>,
    /// Init steps that belong before a sidecar, as the known-sidecar list says (a mesh's
    /// traffic redirection before its proxy). Indices into `containers`.
    pub init_steps_before: Vec<InitStepOf>,
    pub findings: Vec<Finding>,
}

/// `step` is an init container that belongs before `sidecar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitStepOf {
    pub step: usize,
    pub sidecar: usize,
}

/// Sets each sidecar's mesh and returns the init steps that belong before each: only
/// sidecars are looked up again, and most pods have one or none.
fn sidecar_relations(containers: &mut [ContainerInfo], known: &KnownSidecars) -> Vec<InitStepOf> {
    let mut out = Vec::new();
    for sidecar in 0..containers.len() {
        let c = &containers[sidecar];
        if c.lifecycle_type != LifecycleType::Sidecar {
            continue;
        }
        let Some(rule) = known.find(&c.name, c.image.as_deref()) else {
            continue;
        };
        if !rule.init_steps.is_empty() {
            out.extend(
                containers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| {
                        s.list == ContainerList::InitContainers
                            && s.lifecycle_type == LifecycleType::Init
                            && rule.init_steps.include(&s.name)
                    })
                    .map(|(step, _)| InitStepOf { step, sidecar }),
            );
        }
        containers[sidecar].mesh = rule.mesh;
    }
    out
}

impl PodModel {
    /// The model of `object`'s pod; `Ok(None)` for kinds that hold none.
    pub fn from_object(object: &Value, known: &KnownSidecars) -> Result<Option<Self>, ModelError> {
        Ok(Workload::from_object(object)?.map(|pod| Self::new(pod, known)))
    }

    /// The model of the object whose JSON text is `text` (as an admission request carries
    /// it), read in one pass without a `Value` in between.
    pub fn from_json(text: &str, known: &KnownSidecars) -> Result<Option<Self>, ModelError> {
        Ok(Workload::from_json(text)?.map(|pod| Self::new(pod, known)))
    }

    /// The model after `edit` changes the pod the way a policy changed the object: no
    /// re-read of the whole object (the edit functions in the policy rooms and `inject` keep the
    /// two in step, and their tests compare them with a re-read).
    /// Consumes the model: its workload is edited in place, not copied (a 200-container pod's
    /// copy cost the injector as much as the edit).
    pub fn with_workload(self, known: &KnownSidecars, edit: impl FnOnce(&mut Workload)) -> Self {
        let mut pod = self.workload;
        edit(&mut pod);
        Self::new(pod, known)
    }

    /// The model after `added` containers are appended to their lists and `annotations`
    /// set, as injection does. Only the added containers are classified when nothing
    /// added can change how the others read: no annotation of the sidecar vocabulary on
    /// the pod or among the added, only init containers added (app containers decide
    /// whether the pod is helpers alone), and no name taken twice. Otherwise the pod is
    /// read again ([`PodModel::with_workload`]); a 200-container pod's second reading was a
    /// sixth of the injector's work.
    pub fn with_added(
        mut self,
        known: &KnownSidecars,
        added: Vec<(ContainerList, Container)>,
        annotations: Vec<(String, String)>,
    ) -> Self {
        let mut names: Vec<&str> = added.iter().map(|(_, c)| c.name.as_str()).collect();
        names.sort_unstable();
        let clash = names.windows(2).any(|w| w[0] == w[1])
            || names
                .iter()
                .any(|n| n.is_empty() || self.index_of(n).is_some());
        let incremental = !clash
            && added
                .iter()
                .all(|(list, _)| *list == ContainerList::InitContainers)
            && !self
                .workload
                .annotations
                .keys()
                .any(|k| keys::in_vocabulary(k))
            && !annotations.iter().any(|(k, _)| keys::in_vocabulary(k));
        if !incremental {
            return self.with_workload(known, |workload| {
                for (list, container) in added {
                    workload.list_mut(list).push(container);
                }
                workload.annotations.extend(annotations);
            });
        }
        // Classified as a fresh reading would (no annotation types them here); their
        // entries go after the pod's init containers, before its app containers.
        let first = self
            .containers
            .iter()
            .filter(|c| c.list == ContainerList::InitContainers)
            .count();
        for (at, (_, container)) in (first..).zip(added) {
            let (lifecycle, reason) = classify(
                &self.workload,
                ContainerList::InitContainers,
                &container,
                known,
                false,
                &mut self.findings,
            );
            let list = self.workload.list_mut(ContainerList::InitContainers);
            self.containers.insert(
                at,
                ContainerInfo {
                    name: container.name.clone(),
                    image: container.image.clone(),
                    list: ContainerList::InitContainers,
                    index: list.len(),
                    lifecycle_type: lifecycle,
                    reason,
                    mesh: None,
                },
            );
            list.push(container);
        }
        self.workload.annotations.extend(annotations);
        for c in &mut self.containers {
            c.mesh = None;
        }
        self.init_steps_before = sidecar_relations(&mut self.containers, known);
        self
    }

    pub fn new(pod: Workload, known: &KnownSidecars) -> Self {
        let mut findings = Vec::new();
        let mut containers = Vec::new();
        let lists = [
            (
                ContainerList::InitContainers,
                pod.spec.init_containers.as_deref(),
            ),
            (
                ContainerList::Containers,
                Some(pod.spec.containers.as_slice()),
            ),
        ];
        let typed_by_annotations = pod
            .annotations
            .range::<str, _>((Bound::Included(keys::LIFECYCLE_PREFIX), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(keys::LIFECYCLE_PREFIX));
        for (list, items) in lists {
            for (index, c) in items.unwrap_or_default().iter().enumerate() {
                if c.name.is_empty() {
                    findings.push(Finding::UnnamedContainer {
                        list: list.field().into(),
                        index,
                    });
                }
                let (lifecycle, reason) =
                    classify(&pod, list, c, known, typed_by_annotations, &mut findings);
                containers.push(ContainerInfo {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    list,
                    index,
                    lifecycle_type: lifecycle,
                    reason,
                    mesh: None,
                });
            }
        }

        // A pod whose app containers all look like helpers (an Istio gateway: a proxy and
        // nothing else) runs them as its application; only an annotation says otherwise.
        let apps = || {
            containers
                .iter()
                .filter(|c: &&ContainerInfo| c.list == ContainerList::Containers)
        };
        if apps().count() > 0 && apps().all(|c| matches!(c.reason, TypeReason::KnownSidecar { .. }))
        {
            for c in containers
                .iter_mut()
                .filter(|c| c.list == ContainerList::Containers)
            {
                if let TypeReason::KnownSidecar { rule } = &c.reason {
                    c.reason = TypeReason::KnownSidecarAlone { rule: rule.clone() };
                    c.lifecycle_type = LifecycleType::Standard;
                }
            }
        }

        let by_name = Names::of(&containers);
        for i in by_name.repeated() {
            findings.push(Finding::DuplicateContainerName {
                container: containers[i].name.clone(),
            });
        }

        let declared_after = read_annotations(&pod.annotations, &by_name, &mut findings);
        let init_steps_before = sidecar_relations(&mut containers, known);
        PodModel {
            workload: pod,
            containers,
            declared_after,
            init_steps_before,
            findings,
        }
    }

    /// The Kubernetes container behind `containers[i]`.
    pub fn container(&self, i: usize) -> &Container {
        let info = &self.containers[i];
        match info.list {
            ContainerList::InitContainers => &self
                .workload
                .spec
                .init_containers
                .as_deref()
                .unwrap_or_default()[info.index],
            ContainerList::Containers => &self.workload.spec.containers[info.index],
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.containers.iter().position(|c| c.name == name)
    }

    pub fn of_type(&self, lifecycle: LifecycleType) -> impl Iterator<Item = &ContainerInfo> {
        self.containers
            .iter()
            .filter(move |c| c.lifecycle_type == lifecycle)
    }

    /// Containers typed `Sidecar` that run as regular app containers (legacy sidecars).
    pub fn legacy_sidecars(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers.iter().filter(|c| c.is_legacy_sidecar())
    }

    /// A legacy sidecar that conversion leaves where it is: its mesh's annotation keeps
    /// it legacy.
    pub fn stays_legacy(&self, c: &ContainerInfo) -> bool {
        c.is_legacy_sidecar()
            && (self.mesh_opt_out(c).is_some() || self.kept_legacy_by_mesh(c).is_some())
    }

    /// A legacy sidecar that conversion makes native: every one its mesh does not keep
    /// legacy.
    pub fn converts(&self, c: &ContainerInfo) -> bool {
        c.is_legacy_sidecar() && !self.stays_legacy(c)
    }

    /// The label by which the mesh keeps the proxy of one of its own pods legacy even in
    /// native mode (Linkerd's identity), if it does.
    pub fn kept_legacy_by_mesh(&self, c: &ContainerInfo) -> Option<&'static str> {
        c.mesh?.keeps_legacy(&self.workload.labels)
    }

    /// The mesh annotation by which the pod keeps its proxy `c` in the mesh's legacy
    /// layout (`sidecar.istio.io/nativeSidecar: "false"`), if one does.
    pub fn mesh_opt_out(&self, c: &ContainerInfo) -> Option<(Mesh, &str)> {
        let mesh = c.mesh?;
        mesh.opt_out(&self.workload.annotations)
            .map(|key| (mesh, key))
    }

    /// `optional.sidecars.dev/<name>: "true"`.
    pub fn is_optional(&self, name: &str) -> bool {
        self.workload
            .annotations
            .get(&keys::container_key(keys::OPTIONAL_PREFIX, name))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Sidecars marked optional whose readiness probe still gates the pod's readiness
    /// (indices into `containers`).
    pub fn optional_sidecars_gating_readiness(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.containers.len()).filter(|&i| {
            let c = &self.containers[i];
            c.lifecycle_type == LifecycleType::Sidecar
                && self.is_optional(&c.name)
                && self.container(i).readiness_probe.is_some()
        })
    }

    /// The run-to-completion flag of the pod (Job, CronJob, restartPolicy Never/OnFailure).
    pub fn runs_to_completion(&self) -> bool {
        self.workload.runs_to_completion()
    }
}

/// Models for the model's own tests.
#[cfg(test)]
impl PodModel {
    /// The model of an object that must hold a pod.
    pub(crate) fn of(object: &Value, known: &KnownSidecars) -> PodModel {
        PodModel::from_object(object, known)
            .expect("a well-formed pod")
            .expect("an object that holds a pod")
    }

    /// A Pod with these annotations, init containers and containers.
    pub(crate) fn pod(annotations: Value, init: Value, containers: Value) -> Value {
        serde_json::json!({"kind": "Pod", "metadata": {"annotations": annotations},
                           "spec": {"initContainers": init, "containers": containers}})
    }
}

fn classify(
    pod: &Workload,
    list: ContainerList,
    c: &Container,
    known: &KnownSidecars,
    typed_by_annotations: bool,
    findings: &mut Vec<Finding>,
) -> (LifecycleType, TypeReason) {
    // Most pods carry no lifecycle annotation: then no key is built and looked up for
    // each of their containers.
    let annotation = typed_by_annotations
        .then(|| keys::container_key(keys::LIFECYCLE_PREFIX, &c.name))
        .and_then(|key| pod.annotations.get(&key).map(|value| (key, value)));
    let (key, annotated) = match annotation {
        Some((key, value)) => match value.parse::<LifecycleType>() {
            Ok(parsed) => (key, Some(parsed)),
            Err(_) => {
                findings.push(Finding::UnknownLifecycleType {
                    key: key.clone(),
                    value: value.clone(),
                    container: c.name.clone(),
                });
                (key, None)
            }
        },
        None => (String::new(), None),
    };

    // 1. Position.
    if list == ContainerList::InitContainers {
        let (actual, reason) = if c.restart_policy.as_deref() == Some("Always") {
            (LifecycleType::Sidecar, TypeReason::NativeSidecar)
        } else {
            (LifecycleType::Init, TypeReason::InitContainer)
        };
        if let Some(annotated) = annotated.filter(|a| *a != actual) {
            findings.push(Finding::TypeAnnotationIgnored {
                key,
                container: c.name.clone(),
                annotated,
                actual,
            });
        }
        return (actual, reason);
    }
    // 2. The pod annotation.
    if let Some(annotated) = annotated {
        return (annotated, TypeReason::Annotation { key });
    }
    // 3. Known sidecars, unless the pod is named after the container: its own data plane.
    if let Some(rule) = known.find(&c.name, c.image.as_deref()) {
        if let Some(label) = ["app.kubernetes.io/name", "app"]
            .into_iter()
            .find(|l| pod.labels.get(*l).is_some_and(|v| *v == c.name))
        {
            return (
                LifecycleType::Standard,
                TypeReason::KnownSidecarNamedByPod {
                    rule: rule.describe(),
                    label: format!("{label}: {}", c.name),
                },
            );
        }
        return (
            rule.lifecycle,
            TypeReason::KnownSidecar {
                rule: rule.describe(),
            },
        );
    }
    // 4. The application.
    (LifecycleType::Standard, TypeReason::Default)
}

/// Container names to indices, sorted once: annotations name containers, and a
/// 200-container pod hashed every name twice (SipHash, in wasm) to build a map.
struct Names<'m>(Vec<(&'m str, usize)>);

impl<'m> Names<'m> {
    fn of(containers: &'m [ContainerInfo]) -> Self {
        let mut names: Vec<(&str, usize)> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        // Stable: the containers of one name stay in spec order.
        names.sort_by(|a, b| a.0.cmp(b.0));
        Names(names)
    }

    /// The first container of that name: the one annotations refer to.
    fn get(&self, name: &str) -> Option<usize> {
        let at = self.0.partition_point(|(n, _)| *n < name);
        self.0.get(at).filter(|(n, _)| *n == name).map(|&(_, i)| i)
    }

    /// Every named container after the first of its name, in spec order.
    fn repeated(&self) -> Vec<usize> {
        let mut repeated: Vec<usize> = self
            .0
            .windows(2)
            .filter(|w| w[0].0 == w[1].0 && !w[1].0.is_empty())
            .map(|w| w[1].1)
            .collect();
        repeated.sort_unstable();
        repeated
    }
}

fn read_annotations(
    annotations: &BTreeMap<String, String>,
    by_name: &Names,
    findings: &mut Vec<Finding>,
) -> Vec<DeclaredAfter> {
    let mut declared = Vec::new();
    for (key, value) in annotations {
        for prefix in [keys::LIFECYCLE_PREFIX, keys::OPTIONAL_PREFIX] {
            if let Some(container) = keys::container_of(prefix, key)
                && by_name.get(container).is_none()
            {
                findings.push(Finding::AnnotationForMissingContainer {
                    key: key.clone(),
                    container: container.into(),
                });
            }
        }
        if let Some(container) = keys::container_of(keys::OPTIONAL_PREFIX, key)
            && !matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false")
        {
            findings.push(Finding::MalformedOptional {
                key: key.clone(),
                value: value.clone(),
                container: container.into(),
            });
        }
        let Some(container) = keys::container_of(keys::AFTER_PREFIX, key) else {
            continue;
        };
        let Some(after) = by_name.get(container) else {
            findings.push(Finding::AnnotationForMissingContainer {
                key: key.clone(),
                container: container.into(),
            });
            continue;
        };
        let names: Vec<&str> = value.split(',').map(str::trim).collect();
        if names.iter().any(|n| n.is_empty()) {
            findings.push(Finding::MalformedAfter {
                key: key.clone(),
                value: value.clone(),
                container: container.into(),
            });
            continue;
        }
        for name in names {
            match by_name.get(name) {
                None => findings.push(Finding::AfterMissingContainer {
                    key: key.clone(),
                    container: container.into(),
                    missing: name.into(),
                }),
                Some(before) if before == after => findings.push(Finding::AfterSelf {
                    key: key.clone(),
                    container: container.into(),
                }),
                Some(before) => {
                    let edge = DeclaredAfter {
                        before,
                        after,
                        key: key.clone(),
                    };
                    if !declared.contains(&edge) {
                        declared.push(edge);
                    }
                }
            }
        }
    }
    declared
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(object: Value) -> PodModel {
        PodModel::of(&object, &KnownSidecars::default())
    }

    fn types(m: &PodModel) -> Vec<(&str, LifecycleType)> {
        m.containers
            .iter()
            .map(|c| (c.name.as_str(), c.lifecycle_type))
            .collect()
    }

    #[test]
    fn position_then_annotation_then_known_image_then_standard() {
        let m = model(json!({
            "kind": "Pod",
            "metadata": {"annotations": {
                "lifecycle.sidecars.dev/logs": "PostSidecar",
                "lifecycle.sidecars.dev/agent": "PreSidecar",
                "lifecycle.sidecars.dev/istio-proxy": "Standard"
            }},
            "spec": {
                "initContainers": [
                    {"name": "setup", "image": "busybox"},
                    {"name": "native", "image": "busybox", "restartPolicy": "Always"}
                ],
                "containers": [
                    {"name": "app", "image": "nginx"},
                    {"name": "logs", "image": "busybox"},
                    {"name": "agent", "image": "busybox"},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24"},
                    {"name": "envoy", "image": "envoyproxy/envoy:v1"},
                    {"name": "mesh", "image": "registry.istio.io/testing/proxyv2:latest"}
                ]
            }
        }));
        assert_eq!(
            types(&m),
            vec![
                ("setup", LifecycleType::Init),
                ("native", LifecycleType::Sidecar),
                ("app", LifecycleType::Standard),
                ("logs", LifecycleType::PostSidecar),
                ("agent", LifecycleType::Sidecar),
                ("istio-proxy", LifecycleType::Standard),
                ("envoy", LifecycleType::Sidecar),
                ("mesh", LifecycleType::Sidecar),
            ]
        );
        assert_eq!(m.containers[1].reason, TypeReason::NativeSidecar);
        assert!(matches!(
            m.containers[3].reason,
            TypeReason::Annotation { .. }
        ));
        assert!(matches!(
            m.containers[7].reason,
            TypeReason::KnownSidecar { .. }
        ));
        assert_eq!(
            m.legacy_sidecars()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["agent", "envoy", "mesh"]
        );
        assert!(m.findings.is_empty(), "{:?}", m.findings);
    }

    #[test]
    fn a_proxy_the_pod_is_named_after_is_the_application() {
        // Contour's Envoy DaemonSet: envoy beside its shutdown manager; Envoy is the app.
        let m = model(json!({"kind": "DaemonSet", "spec": {"template": {
            "metadata": {"labels": {"app": "envoy"}},
            "spec": {"containers": [
                {"name": "shutdown-manager", "image": "ghcr.io/projectcontour/contour:v1.30"},
                {"name": "envoy", "image": "docker.io/envoyproxy/envoy:v1.31.0"}]}}}}));
        assert_eq!(m.containers[1].lifecycle_type, LifecycleType::Standard);
        assert_eq!(
            m.containers[1].reason.to_string(),
            "known sidecar (image */envoyproxy/envoy*), but the pod's label app: envoy names it: the application"
        );
        assert_eq!(m.legacy_sidecars().count(), 0);
    }

    #[test]
    fn a_proxy_alone_is_the_application() {
        let m = model(
            json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24"}
            ]}}}}),
        );
        assert_eq!(m.containers[0].lifecycle_type, LifecycleType::Standard);
        assert!(matches!(
            m.containers[0].reason,
            TypeReason::KnownSidecarAlone { .. }
        ));
        assert_eq!(m.legacy_sidecars().count(), 0);
        // An annotation still decides.
        let m = model(
            json!({"kind": "Pod", "metadata": {"annotations": {"lifecycle.sidecars.dev/envoy": "Sidecar"}},
            "spec": {"containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1"}]}}),
        );
        assert_eq!(m.containers[0].lifecycle_type, LifecycleType::Sidecar);
    }

    #[test]
    fn position_beats_annotations_and_says_so() {
        let m = model(json!({
            "kind": "Pod",
            "metadata": {"annotations": {"lifecycle.sidecars.dev/setup": "Sidecar"}},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]}
        }));
        assert_eq!(m.containers[0].lifecycle_type, LifecycleType::Init);
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].code(), "typeAnnotationIgnored");
        assert!(m.findings[0].to_string().contains("restartPolicy: Always"));
    }

    #[test]
    fn after_annotations_become_declared_edges() {
        let m = model(json!({
            "kind": "Pod",
            "metadata": {"annotations": {"after.sidecars.dev/app": "proxy, vault"}},
            "spec": {
                "initContainers": [
                    {"name": "vault", "restartPolicy": "Always"},
                    {"name": "proxy", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "app"}]
            }
        }));
        let edges: Vec<(usize, usize)> = m
            .declared_after
            .iter()
            .map(|e| (e.before, e.after))
            .collect();
        assert_eq!(edges, vec![(1, 2), (0, 2)]);
        assert!(m.findings.is_empty());
    }

    #[test]
    fn malformed_annotations_are_findings() {
        let m = model(json!({
            "kind": "Pod",
            "metadata": {"annotations": {
                "lifecycle.sidecars.dev/app": "Sidekick",
                "lifecycle.sidecars.dev/ghost": "Sidecar",
                "after.sidecars.dev/app": "app",
                "after.sidecars.dev/proxy": "app,,x",
                "after.sidecars.dev/nobody": "app",
                "after.sidecars.dev/web": "missing",
                "optional.sidecars.dev/proxy": "maybe"
            }},
            "spec": {"containers": [{"name": "app"}, {"name": "proxy"}, {"name": "web"}, {"name": "web"}]}
        }));
        let mut codes: Vec<&str> = m.findings.iter().map(Finding::code).collect();
        codes.sort();
        assert_eq!(
            codes,
            [
                "afterMissingContainer",
                "afterSelf",
                "annotationForMissingContainer",
                "annotationForMissingContainer",
                "duplicateContainerName",
                "malformedAfter",
                "malformedOptional",
                "unknownLifecycleType",
            ]
        );
        // An unknown type falls through to the next rule instead of failing.
        assert_eq!(m.containers[0].lifecycle_type, LifecycleType::Standard);
        assert!(m.declared_after.is_empty());
        for f in &m.findings {
            assert!(!f.to_string().is_empty());
        }
    }

    #[test]
    fn optional_sidecars() {
        let m = model(json!({
            "kind": "Pod",
            "metadata": {"annotations": {"optional.sidecars.dev/logs": "True"}},
            "spec": {"containers": [{"name": "app"}, {"name": "logs"}]}
        }));
        assert!(m.is_optional("logs"));
        assert!(!m.is_optional("app"));
    }

    /// Adding containers to a model gives what a fresh reading of the grown pod gives,
    /// on either path.
    #[test]
    fn added_containers_read_as_a_fresh_model() {
        let known = KnownSidecars::default();
        let pods = [
            json!({"kind": "Pod", "spec": {"containers": [{"name": "app"}]}}),
            json!({"kind": "Pod", "metadata": {"annotations": {"team": "shop"}},
                   "spec": {"initContainers": [{"name": "setup"}, {"name": "mesh", "restartPolicy": "Always"}],
                            "containers": [{"name": "app"}, {"name": "istio-proxy", "image": "istio/proxyv2"}]}}),
            // Only helpers: the proxy is the application.
            json!({"kind": "Pod", "spec": {"containers": [{"name": "istio-proxy", "image": "x/proxyv2"}]}}),
            json!({"kind": "Pod", "metadata": {"annotations": {"after.sidecars.dev/app": "logs"}},
                   "spec": {"containers": [{"name": "app"}]}}),
            json!({"kind": "Pod", "metadata": {"annotations": {"lifecycle.sidecars.dev/app": "Sidecar"}},
                   "spec": {"containers": [{"name": "app"}, {"name": "web"}]}}),
            json!({"kind": "Pod", "spec": {"containers": [{"name": "app"}, {"name": "app"}, {"name": ""}]}}),
        ];
        let container = |name: &str, always: bool| Container {
            name: name.into(),
            image: Some(format!("{name}:1")),
            restart_policy: always.then(|| "Always".into()),
            ..Container::default()
        };
        let init = ContainerList::InitContainers;
        type Addition = (Vec<(ContainerList, Container)>, Vec<(String, String)>);
        let additions: Vec<Addition> = vec![
            (vec![(init, container("logs", true))], vec![]),
            (
                vec![
                    (init, container("init", false)),
                    (init, container("proxy", true)),
                ],
                vec![("injected.sidecars.dev/mesh".into(), "abc".into())],
            ),
            // An app container, a name the pod has, a name twice, vocabulary annotations.
            (
                vec![(ContainerList::Containers, container("otel", false))],
                vec![],
            ),
            (vec![(init, container("app", true))], vec![]),
            (
                vec![(init, container("x", true)), (init, container("x", false))],
                vec![],
            ),
            (
                vec![(init, container("logs", true))],
                vec![("after.sidecars.dev/app".into(), "logs".into())],
            ),
        ];
        for pod in &pods {
            for (added, annotations) in &additions {
                let incremental =
                    model(pod.clone()).with_added(&known, added.clone(), annotations.clone());
                let fresh = model(pod.clone()).with_workload(&known, |workload| {
                    for (list, c) in added.clone() {
                        workload.list_mut(list).push(c);
                    }
                    workload.annotations.extend(annotations.clone());
                });
                let case = format!("{pod} + {added:?} {annotations:?}");
                assert_eq!(incremental.containers, fresh.containers, "{case}");
                assert_eq!(incremental.declared_after, fresh.declared_after, "{case}");
                assert_eq!(incremental.findings, fresh.findings, "{case}");
                assert_eq!(
                    incremental.workload.annotations, fresh.workload.annotations,
                    "{case}"
                );
                assert_eq!(incremental.workload.spec, fresh.workload.spec, "{case}");
            }
        }
    }
}
