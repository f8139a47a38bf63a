//! The start graph as a page draws it: every edge with where it comes from (an
//! annotation, a settings rule, or what the lifecycle types imply), the order it asks
//! for, and what makes it unusable (cycles, edges Kubernetes cannot honour).

use serde::Serialize;

use crate::kube::PodModel;
use crate::ordering::graph::EdgeOrigin;
use crate::ordering::plan::{self, EdgeRule, OrderFinding};

/// More implied edges than this are left out (a 200-container pod implies thousands);
/// the page then draws the lifecycle types' layers instead.
pub const MAX_IMPLIED_EDGES: usize = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EdgeKind {
    Annotation,
    Settings,
    Implied,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewEdge {
    pub before: String,
    pub after: String,
    pub kind: EdgeKind,
    pub origin: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphView {
    pub edges: Vec<ViewEdge>,
    /// Whether implied edges were left out for their number.
    pub implied_left_out: bool,
    /// The start order the graph asks for; none when it has a cycle or an impossible edge.
    pub start_order: Option<Vec<String>>,
    pub cycle: Option<Vec<String>>,
    /// Edges Kubernetes cannot honour, as the ordering policy words them.
    pub impossible: Vec<String>,
}

/// The graph of `model` with the ordering policy's settings `rules`.
pub fn view(model: &PodModel, rules: &[EdgeRule]) -> GraphView {
    let plan = plan::plan(model, rules);
    let name = |i: usize| model.containers[i].name.clone();
    let kind = |o: &EdgeOrigin| match o {
        EdgeOrigin::Annotation { .. } => EdgeKind::Annotation,
        EdgeOrigin::Settings { .. } => EdgeKind::Settings,
        EdgeOrigin::Implicit { .. } => EdgeKind::Implied,
    };
    let all: Vec<_> = plan.graph.edges().collect();
    let implied = all.iter().filter(|e| !e.origin.is_explicit()).count();
    let implied_left_out = implied > MAX_IMPLIED_EDGES;
    let edges = all
        .iter()
        .filter(|e| !implied_left_out || e.origin.is_explicit())
        .map(|e| ViewEdge {
            before: name(e.from),
            after: name(e.to),
            kind: kind(&e.origin),
            origin: e.origin.to_string(),
        })
        .collect();
    let mut cycle = None;
    let mut impossible = Vec::new();
    for f in &plan.errors {
        match f {
            OrderFinding::Cycle { path } => cycle = Some(path.clone()),
            OrderFinding::ImpossibleEdge { .. } => impossible.push(f.to_string()),
            _ => {}
        }
    }
    GraphView {
        edges,
        implied_left_out,
        start_order: plan
            .start
            .as_ref()
            .map(|o| crate::ordering::graph::names(model, o)),
        cycle,
        impossible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::KnownSidecars;
    use serde_json::json;

    #[test]
    fn edges_say_where_they_come_from() {
        let m = PodModel::of(
            &json!({"kind": "Pod", "metadata": {"annotations": {"after.sidecars.dev/proxy": "vault"}},
                "spec": {"initContainers": [
                    {"name": "istio-init", "image": "docker.io/istio/proxyv2:1.28"},
                    {"name": "vault", "restartPolicy": "Always"},
                    {"name": "proxy", "image": "docker.io/istio/proxyv2:1.28", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]}}),
            &KnownSidecars::default(),
        );
        let rule: EdgeRule = serde_json::from_value(
            json!({"name": "vault first", "before": {"name": "vault"}, "after": {"type": "Init"}}),
        )
        .unwrap();
        let v = view(&m, &[rule]);
        let kinds = |k: EdgeKind| v.edges.iter().filter(|e| e.kind == k).count();
        assert_eq!(kinds(EdgeKind::Annotation), 1);
        assert_eq!(kinds(EdgeKind::Settings), 1);
        assert!(kinds(EdgeKind::Implied) >= 3, "{v:?}");
        assert!(
            v.edges.iter().any(|e| e.before == "istio-init"
                && e.after == "proxy"
                && e.origin.contains("known-sidecar list")),
            "{v:?}"
        );
        assert_eq!(
            v.start_order.unwrap(),
            ["vault", "istio-init", "proxy", "app"]
        );
        assert!(v.cycle.is_none() && v.impossible.is_empty());
    }
}
