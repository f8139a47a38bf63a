//! Start and stop ordering: what a pod's start graph asks for, what Kubernetes cannot
//! honour, and the spec order that honours the rest.

use serde::{Deserialize, Serialize};

use crate::kube::ContainerSelector;
use crate::kube::LifecycleType;
use crate::kube::PodModel;
use crate::kube::{Finding, quoted};
use crate::ordering::graph::{self, Edge, EdgeOrigin, StartGraph};

/// A cluster-wide start dependency from settings: every container matching `before` is
/// started before every container matching `after`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeRule {
    /// A name for messages; the selectors when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub before: ContainerSelector,
    pub after: ContainerSelector,
}

impl EdgeRule {
    pub fn validate(&self) -> Result<(), String> {
        self.before.validate().map_err(|e| format!("before: {e}"))?;
        self.after.validate().map_err(|e| format!("after: {e}"))?;
        if self.before == self.after {
            return Err("before and after select the same containers".into());
        }
        Ok(())
    }

    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{{{}}} before {{{}}}", self.before, self.after))
    }

    /// The edges this rule puts into `model`'s graph.
    pub fn edges(&self, model: &PodModel) -> Vec<Edge> {
        let pick = |s: &ContainerSelector| -> Vec<usize> {
            (0..model.containers.len())
                .filter(|&i| s.matches(&model.containers[i]))
                .collect()
        };
        let (before, after) = (pick(&self.before), pick(&self.after));
        let mut edges = Vec::new();
        for &from in &before {
            for &to in &after {
                if from != to {
                    edges.push(Edge {
                        from,
                        to,
                        origin: EdgeOrigin::Settings { rule: self.label() },
                    });
                }
            }
        }
        edges
    }
}

/// What the ordering analysis finds, worst first within a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "code",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum OrderFinding {
    /// An `after.sidecars.dev` annotation that cannot be read or names no container.
    BrokenAnnotation { finding: Finding },
    /// A declared edge whose direction the lifecycle types forbid.
    ImpossibleEdge {
        before: String,
        before_type: LifecycleType,
        after: String,
        after_type: LifecycleType,
        origin: String,
    },
    /// The graph has a cycle: the path starts and ends with the same container.
    Cycle { path: Vec<String> },
    /// A sidecar others declare they start after, without a `startupProbe`.
    NoStartupProbe {
        sidecar: String,
        dependents: Vec<String>,
    },
    /// An app container declared to start after another app container that has no
    /// `postStart` hook: Kubernetes does not wait for it.
    AppNotAwaited {
        before: String,
        after: String,
        origin: String,
    },
    /// A sidecar that runs as a regular container cannot be ordered before the app.
    LegacySidecar { sidecar: String },
    /// The spec starts `after` before `before`, against an edge.
    Violated {
        before: String,
        after: String,
        origin: String,
    },
}

impl OrderFinding {
    pub fn code(&self) -> &'static str {
        match self {
            OrderFinding::BrokenAnnotation { .. } => "brokenAnnotation",
            OrderFinding::ImpossibleEdge { .. } => "impossibleEdge",
            OrderFinding::Cycle { .. } => "cycle",
            OrderFinding::NoStartupProbe { .. } => "noStartupProbe",
            OrderFinding::AppNotAwaited { .. } => "appNotAwaited",
            OrderFinding::LegacySidecar { .. } => "legacySidecar",
            OrderFinding::Violated { .. } => "violated",
        }
    }
}

impl std::fmt::Display for OrderFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderFinding::BrokenAnnotation { finding } => write!(f, "{finding}"),
            OrderFinding::ImpossibleEdge {
                before,
                before_type,
                after,
                after_type,
                origin,
            } => write!(
                f,
                "{origin} makes {after_type} container {after:?} start after {before_type} container {before:?}, which Kubernetes cannot do: {}; remove the edge or change a type",
                if *after_type == LifecycleType::Init || *after_type == LifecycleType::Sidecar {
                    "init containers and sidecars all start before app containers"
                } else {
                    "app containers start before post-sidecars"
                }
            ),
            OrderFinding::Cycle { path } => crate::kube::cycle(f, path),
            OrderFinding::NoStartupProbe {
                sidecar,
                dependents,
            } => write!(
                f,
                "sidecar {sidecar:?} has no startupProbe, but {} must start after it: Kubernetes counts a sidecar started as soon as its process runs, so they may start before it is ready; add a startupProbe to {sidecar:?}",
                quoted(dependents)
            ),
            OrderFinding::AppNotAwaited {
                before,
                after,
                origin,
            } => write!(
                f,
                "{origin}: app container {after:?} is placed after {before:?}, but Kubernetes starts app containers without waiting for the previous one unless it has a postStart hook; give {before:?} a postStart hook that returns once it is ready, or make it a sidecar"
            ),
            OrderFinding::LegacySidecar { sidecar } => write!(
                f,
                "sidecar {sidecar:?} runs as a regular container, so nothing waits for it; make it a native sidecar (initContainers with restartPolicy: Always)"
            ),
            OrderFinding::Violated {
                before,
                after,
                origin,
            } => write!(
                f,
                "{after:?} starts before {before:?}, but {origin} says it must start after it; move {before:?} before {after:?}"
            ),
        }
    }
}

/// The analysis of one pod.
#[derive(Debug, Clone)]
pub struct OrderPlan {
    pub graph: StartGraph,
    /// The start order the graph asks for; `None` when it has a cycle.
    pub start: Option<Vec<usize>>,
    /// Problems that make the pod's graph unusable: broken annotations, impossible
    /// edges, cycles.
    pub errors: Vec<OrderFinding>,
    /// Problems with readiness: sidecars without startup probes, app containers nobody
    /// waits for.
    pub readiness: Vec<OrderFinding>,
}

impl OrderPlan {
    /// In validation mode: sidecars that are not native, then the declared or implied
    /// edges the spec as it is breaks.
    pub fn violations(&self, model: &PodModel) -> Vec<OrderFinding> {
        let mut out: Vec<OrderFinding> = model
            .legacy_sidecars()
            .map(|c| OrderFinding::LegacySidecar {
                sidecar: c.name.clone(),
            })
            .collect();
        let current = graph::spec_order(model);
        out.extend(
            self.graph
                .violations(&current)
                .into_iter()
                .map(|e| OrderFinding::Violated {
                    before: model.containers[e.from].name.clone(),
                    after: model.containers[e.to].name.clone(),
                    origin: e.origin.to_string(),
                }),
        );
        out
    }
}

/// The lists a type puts a container in, in start order: init steps and sidecars, then
/// app containers, then post-sidecars.
fn phase(t: LifecycleType) -> u8 {
    match t {
        LifecycleType::Init | LifecycleType::Sidecar => 0,
        LifecycleType::Standard => 1,
        LifecycleType::PostSidecar => 2,
    }
}

/// Analyses `model` with the cluster-wide `rules`.
pub fn plan(model: &PodModel, rules: &[EdgeRule]) -> OrderPlan {
    let mut errors: Vec<OrderFinding> = model
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f,
                Finding::MalformedAfter { .. }
                    | Finding::AfterMissingContainer { .. }
                    | Finding::AfterSelf { .. }
            ) || matches!(f, Finding::AnnotationForMissingContainer { key, .. } if key.starts_with(crate::kube::keys::AFTER_PREFIX))
        })
        .map(|f| OrderFinding::BrokenAnnotation { finding: f.clone() })
        .collect();

    let graph = StartGraph::build(model, rules.iter().flat_map(|r| r.edges(model)));
    let explicit: &[Edge] = graph.declared();

    errors.extend(impossible_edges(model, explicit));

    // Impossible edges always close a cycle with an implied edge: report them alone.
    let start = if errors
        .iter()
        .any(|f| matches!(f, OrderFinding::ImpossibleEdge { .. }))
    {
        None
    } else {
        match graph.order() {
            Ok(order) => Some(order),
            Err(cycle) => {
                errors.push(OrderFinding::Cycle {
                    path: graph::names(model, &cycle.path),
                });
                None
            }
        }
    };

    let readiness = readiness(model, explicit);
    OrderPlan {
        graph,
        start,
        errors,
        readiness,
    }
}

/// Declared edges Kubernetes cannot honour: from a later phase to an earlier one (an app
/// container before an init step, say).
fn impossible_edges<'m>(
    model: &'m PodModel,
    explicit: &'m [Edge],
) -> impl Iterator<Item = OrderFinding> + 'm {
    let name = |i: usize| model.containers[i].name.clone();
    let kind = |i: usize| model.containers[i].lifecycle_type;
    explicit
        .iter()
        .filter(move |e| phase(kind(e.from)) > phase(kind(e.to)))
        .map(move |e| OrderFinding::ImpossibleEdge {
            before: name(e.from),
            before_type: kind(e.from),
            after: name(e.to),
            after_type: kind(e.to),
            origin: e.origin.to_string(),
        })
}

/// What the declared edges ask of readiness: a sidecar others wait for needs a startup
/// probe, and an app container waited for needs a `postStart` hook (nothing else makes
/// the next app container wait).
fn readiness(model: &PodModel, explicit: &[Edge]) -> Vec<OrderFinding> {
    let name = |i: usize| model.containers[i].name.clone();
    let kind = |i: usize| model.containers[i].lifecycle_type;
    let mut readiness = Vec::new();
    let mut seen = Vec::new();
    for e in explicit {
        let from = e.from;
        if kind(from) == LifecycleType::Sidecar
            && model.container(from).startup_probe.is_none()
            && !seen.contains(&from)
        {
            seen.push(from);
            let dependents = explicit
                .iter()
                .filter(|x| x.from == from)
                .map(|x| name(x.to))
                .collect();
            readiness.push(OrderFinding::NoStartupProbe {
                sidecar: name(from),
                dependents,
            });
        }
        if kind(from) == LifecycleType::Standard
            && kind(e.to) == LifecycleType::Standard
            && model
                .container(from)
                .lifecycle
                .as_ref()
                .and_then(|l| l.post_start.as_ref())
                .is_none()
        {
            readiness.push(OrderFinding::AppNotAwaited {
                before: name(from),
                after: name(e.to),
                origin: e.origin.to_string(),
            });
        }
    }

    readiness
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::KnownSidecars;
    use serde_json::{Value, json};

    fn model(annotations: Value, init: Value, containers: Value) -> PodModel {
        PodModel::of(
            &PodModel::pod(annotations, init, containers),
            &KnownSidecars::default(),
        )
    }

    fn sidecar(name: &str) -> Value {
        json!({"name": name, "restartPolicy": "Always", "startupProbe": {"exec": {"command": ["true"]}}})
    }

    fn codes(v: &[OrderFinding]) -> Vec<&'static str> {
        v.iter().map(OrderFinding::code).collect()
    }

    #[test]
    fn impossible_edges_are_named_not_reported_as_cycles() {
        let m = model(
            json!({"after.sidecars.dev/setup": "app", "after.sidecars.dev/proxy": "app"}),
            json!([{"name": "setup"}, sidecar("proxy")]),
            json!([{"name": "app"}]),
        );
        let p = plan(&m, &[]);
        assert_eq!(codes(&p.errors), ["impossibleEdge", "impossibleEdge"]);
        assert!(p.start.is_none());
        assert!(
            p.errors.iter().any(|e| e
                .to_string()
                .contains("Init container \"setup\" start after Standard container \"app\"")),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn settings_rules_match_by_image_and_type() {
        // "The mesh proxy starts before every init container": every one but the mesh's
        // own iptables step, which the known-sidecar list puts before its proxy (Istio's
        // native order: istio-init, istio-proxy, the user's init containers).
        let rule: EdgeRule = serde_json::from_value(json!({
            "name": "mesh first", "before": {"image": "*/proxyv2"}, "after": {"type": "Init"}}))
        .unwrap();
        rule.validate().unwrap();
        let m = model(
            json!({}),
            json!([{"name": "setup"}, {"name": "istio-init"}, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1", "restartPolicy": "Always"}]),
            json!([{"name": "app"}]),
        );
        let p = plan(&m, &[rule]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            graph::names(&m, p.start.as_ref().unwrap()),
            ["istio-init", "istio-proxy", "setup", "app"]
        );
        assert_eq!(codes(&p.readiness), ["noStartupProbe"]);
        assert!(p.readiness[0].to_string().contains("\"setup\""));
        assert!(!p.readiness[0].to_string().contains("\"istio-init\""));
    }

    #[test]
    fn broken_annotations_and_cycles() {
        let m = model(
            json!({"after.sidecars.dev/a": "b", "after.sidecars.dev/b": "a", "after.sidecars.dev/app": "ghost"}),
            json!([sidecar("a"), sidecar("b")]),
            json!([{"name": "app"}]),
        );
        let p = plan(&m, &[]);
        assert_eq!(codes(&p.errors), ["brokenAnnotation", "cycle"]);
        assert!(p.errors[1].to_string().contains(" → "));
    }

    #[test]
    fn apps_after_apps_need_a_post_start_hook() {
        let m = model(
            json!({"after.sidecars.dev/web": "api", "after.sidecars.dev/worker": "db"}),
            json!([]),
            json!([{"name": "web"}, {"name": "api"}, {"name": "worker"},
                   {"name": "db", "lifecycle": {"postStart": {"exec": {"command": ["wait-ready"]}}}}]),
        );
        let p = plan(&m, &[]);
        assert_eq!(codes(&p.readiness), ["appNotAwaited"]);
        assert_eq!(
            graph::names(&m, p.start.as_ref().unwrap()),
            ["api", "web", "db", "worker"]
        );
        assert_eq!(codes(&p.violations(&m)), ["violated", "violated"]);
    }

    #[test]
    fn rules_are_validated() {
        let bad: EdgeRule =
            serde_json::from_value(json!({"before": {"name": "a"}, "after": {"name": "a"}}))
                .unwrap();
        assert!(bad.validate().unwrap_err().contains("same containers"));
        let bad: EdgeRule =
            serde_json::from_value(json!({"before": {}, "after": {"name": "a"}})).unwrap();
        assert!(bad.validate().unwrap_err().starts_with("before: "));
        assert!(
            serde_json::from_value::<EdgeRule>(
                json!({"before": {"name": "a"}, "afterr": {"name": "b"}})
            )
            .is_err()
        );
    }
}
