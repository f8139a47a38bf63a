//! The start graph: who must be started before whom, and the spec order that honours it.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

use crate::kube::PodModel;
use crate::kube::keys;
use crate::kube::{ContainerList, LifecycleType};

/// Why an edge exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum EdgeOrigin {
    /// `after.sidecars.dev/<name>` on the pod.
    Annotation { key: String },
    /// A cluster-wide rule from a policy's settings.
    Settings { rule: String },
    /// What the lifecycle types imply.
    Implicit { reason: ImplicitEdge },
}

impl EdgeOrigin {
    /// Declared by someone (annotation or settings), as opposed to implied by types.
    pub fn is_explicit(&self) -> bool {
        !matches!(self, EdgeOrigin::Implicit { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ImplicitEdge {
    /// Every sidecar is started before every app container and post-sidecar.
    SidecarBeforeApp,
    /// Every app container is started before every post-sidecar.
    AppBeforePostSidecar,
    /// Init containers complete before any app container starts.
    InitBeforeApp,
    /// Whatever sits in `initContainers` starts before whatever sits in `containers`,
    /// whatever its type says (a container typed `Init` by annotation that is still in
    /// `containers` starts with the apps).
    InitListBeforeContainers,
    /// The known-sidecar list says the init step belongs before the sidecar (a mesh's
    /// traffic redirection before its proxy).
    InitStepBeforeItsSidecar,
}

impl fmt::Display for EdgeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeOrigin::Annotation { key } => write!(f, "annotation {key}"),
            EdgeOrigin::Settings { rule } => write!(f, "settings rule {rule}"),
            EdgeOrigin::Implicit { reason } => f.write_str(match reason {
                ImplicitEdge::SidecarBeforeApp => "sidecars start before app containers",
                ImplicitEdge::AppBeforePostSidecar => "app containers start before post-sidecars",
                ImplicitEdge::InitBeforeApp => "init containers complete before app containers",
                ImplicitEdge::InitListBeforeContainers => {
                    "initContainers start before containers, whatever their types say"
                }
                ImplicitEdge::InitStepBeforeItsSidecar => {
                    "the known-sidecar list puts this init step before its sidecar"
                }
            }),
        }
    }
}

/// `from` is started before `to`. Indices into [`PodModel::containers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub origin: EdgeOrigin,
}

/// A cycle, as container indices, the first repeated at the end: `a → b → a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub path: Vec<usize>,
}

impl Cycle {
    pub fn render(&self, model: &PodModel) -> String {
        self.path
            .iter()
            .map(|&i| model.containers[i].name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

#[derive(Debug, Clone)]
pub struct StartGraph {
    nodes: usize,
    /// Edges someone declared: annotations and settings.
    declared: Vec<Edge>,
    /// What the lifecycle types imply, by group: every `from` before every `to`. Kept as
    /// groups, not edges: a pod of 200 containers implies thousands of them, and a fresh
    /// wasm instance pays for every page they would fill.
    implied: Vec<Implied>,
    /// Per node, the init step (for an init step) or app container (for an app) just
    /// before it in the spec: Kubernetes runs init steps one after another, and starts
    /// app containers one after another, in spec order, so that order is something the
    /// user wrote. Not an edge: a declared edge may ask for another order, and then wins.
    spec_prev: Vec<Option<usize>>,
}

/// Per node, the previous node of the same chain (init steps, app containers).
fn spec_chains(nodes: usize, inits: &[usize], apps: &[usize]) -> Vec<Option<usize>> {
    let mut prev = vec![None; nodes];
    for chain in [inits, apps] {
        for pair in chain.windows(2) {
            prev[pair[1]] = Some(pair[0]);
        }
    }
    prev
}

#[derive(Debug, Clone)]
struct Implied {
    from: Vec<usize>,
    to: Vec<usize>,
    reason: ImplicitEdge,
}

/// What the lifecycle types imply, from the containers of each type (spec positions).
fn implied_groups(
    inits: Vec<usize>,
    sidecars: Vec<usize>,
    apps: Vec<usize>,
    posts: Vec<usize>,
    (init_list, containers_list): (Vec<usize>, Vec<usize>),
) -> Vec<Implied> {
    let app_and_post: Vec<usize> = apps.iter().chain(&posts).copied().collect();
    vec![
        Implied {
            from: init_list,
            to: containers_list,
            reason: ImplicitEdge::InitListBeforeContainers,
        },
        Implied {
            from: sidecars,
            to: app_and_post.clone(),
            reason: ImplicitEdge::SidecarBeforeApp,
        },
        Implied {
            from: inits,
            to: app_and_post,
            reason: ImplicitEdge::InitBeforeApp,
        },
        Implied {
            from: apps,
            to: posts,
            reason: ImplicitEdge::AppBeforePostSidecar,
        },
    ]
}

/// Each node's neighbours in one allocation (compressed rows): settings rules can declare
/// thousands of edges, and a `Vec` per node cost more than the walk itself.
struct Adjacency {
    offsets: Vec<usize>,
    targets: Vec<usize>,
}

impl Adjacency {
    fn new(nodes: usize, pairs: impl Iterator<Item = (usize, usize)> + Clone) -> Self {
        let mut offsets = vec![0; nodes + 1];
        for (row, _) in pairs.clone() {
            offsets[row + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut targets = vec![0; offsets[nodes]];
        for (row, target) in pairs {
            targets[next[row]] = target;
            next[row] += 1;
        }
        Adjacency { offsets, targets }
    }

    fn row(&self, node: usize) -> &[usize] {
        &self.targets[self.offsets[node]..self.offsets[node + 1]]
    }

    fn row_mut(&mut self, node: usize) -> &mut [usize] {
        &mut self.targets[self.offsets[node]..self.offsets[node + 1]]
    }
}

impl StartGraph {
    /// The graph of `model`: its declared `after` edges, `extra` edges (from settings),
    /// and the edges its lifecycle types imply.
    pub fn build(model: &PodModel, extra: impl IntoIterator<Item = Edge>) -> Self {
        let mut edges: Vec<Edge> = model
            .declared_after
            .iter()
            .map(|d| Edge {
                from: d.before,
                to: d.after,
                origin: EdgeOrigin::Annotation { key: d.key.clone() },
            })
            .collect();
        edges.extend(model.init_steps_before.iter().map(|r| Edge {
            from: r.step,
            to: r.sidecar,
            origin: EdgeOrigin::Implicit {
                reason: ImplicitEdge::InitStepBeforeItsSidecar,
            },
        }));
        // A settings rule broad enough to put a proxy before every init step does not
        // put it before its own mesh's: the known-sidecar list knows better.
        let contradicts_init_step = |e: &Edge| {
            model
                .init_steps_before
                .iter()
                .any(|r| r.sidecar == e.from && r.step == e.to)
        };
        for e in extra {
            if e.from != e.to
                && !contradicts_init_step(&e)
                && !edges.iter().any(|x| x.from == e.from && x.to == e.to)
            {
                edges.push(e);
            }
        }
        let of = |t: LifecycleType| -> Vec<usize> {
            model
                .containers
                .iter()
                .enumerate()
                .filter(|(_, c)| c.lifecycle_type == t)
                .map(|(i, _)| i)
                .collect()
        };
        // A legacy proxy its mesh's annotation keeps legacy is not converted: it stays
        // where the user put it, among the app containers, and nothing moves it.
        let mut sidecars = of(LifecycleType::Sidecar);
        sidecars.retain(|&i| !model.stays_legacy(&model.containers[i]));
        let (inits, apps, posts) = (
            of(LifecycleType::Init),
            of(LifecycleType::Standard),
            of(LifecycleType::PostSidecar),
        );
        // Where the containers sit: a legacy sidecar still in `containers` is left out,
        // since converting it (as the policies do) puts it among the init containers.
        let placed = |list: ContainerList| -> Vec<usize> {
            model
                .containers
                .iter()
                .enumerate()
                .filter(|(_, c)| c.list == list && !model.converts(c))
                .map(|(i, _)| i)
                .collect()
        };
        let lists = (
            placed(ContainerList::InitContainers),
            placed(ContainerList::Containers),
        );
        let nodes = model.containers.len();
        StartGraph {
            nodes,
            declared: edges,
            spec_prev: spec_chains(nodes, &inits, &apps),
            implied: implied_groups(inits, sidecars, apps, posts, lists),
        }
    }

    /// The edges someone declared (annotations, settings).
    pub fn declared(&self) -> &[Edge] {
        &self.declared
    }

    /// Every edge: the declared ones, then the implied ones.
    pub fn edges(&self) -> impl Iterator<Item = Cow<'_, Edge>> + Clone {
        self.edges_where(|_, _| true)
    }

    /// The edges whose `(from, to)` pass `keep`. An implied pair becomes an `Edge` only
    /// when it does: a large pod implies thousands.
    fn edges_where(
        &self,
        keep: impl Fn(usize, usize) -> bool + Copy,
    ) -> impl Iterator<Item = Cow<'_, Edge>> + Clone {
        let declared = self
            .declared
            .iter()
            .filter(move |e| keep(e.from, e.to))
            .map(Cow::Borrowed);
        let implied = self.implied.iter().flat_map(move |g| {
            g.from.iter().flat_map(move |&from| {
                g.to.iter()
                    .filter(move |&&to| keep(from, to))
                    .map(move |&to| {
                        Cow::Owned(Edge {
                            from,
                            to,
                            origin: EdgeOrigin::Implicit { reason: g.reason },
                        })
                    })
            })
        });
        declared.chain(implied)
    }

    /// The start order: a topological order that keeps the spec's order wherever no edge
    /// forces a move. Containers are taken in spec order; one whose dependencies have not
    /// started yet pulls them forward, in their spec order, to just before it. An init
    /// step (or app container) pulled forward brings the init steps (apps) before it in
    /// the spec along, unless one of them is waiting for it: two init steps, or two apps,
    /// change places only when a declared edge asks. A spec that already honours the
    /// graph keeps its order, and a fix moves only the dependencies that were late
    /// (finding the fewest moves in general is a feedback-set problem; this is exact for
    /// chains and for independent groups).
    pub fn order(&self) -> Result<Vec<usize>, Cycle> {
        if self.is_forward() {
            // Every edge already points down the spec: the spec order is the answer (the
            // walk below would place each container where it stands).
            return Ok((0..self.nodes).collect());
        }
        self.check_acyclic()?;
        // A node's predecessors are its declared ones and the `from`s of the groups whose
        // `to`s hold it. The walk takes the first unplaced one by spec position, whichever
        // list it is in: a cursor per group, moved past placed members, finds a group's
        // without listing its pairs.
        let mut declared = Adjacency::new(self.nodes, self.declared.iter().map(|e| (e.to, e.from)));
        for node in 0..self.nodes {
            declared.row_mut(node).sort_unstable();
        }
        let to_groups = self.group_masks(|g| &g.to);
        let mut cursor = vec![0usize; self.implied.len()];
        let mut placed = vec![false; self.nodes];
        // On the walk's stack, waiting for its predecessors: a spec predecessor that is
        // waiting (or has one before it in its chain waiting) is not pulled: the declared
        // edge that made it wait wins.
        let mut waiting = vec![false; self.nodes];
        let mut order = Vec::with_capacity(self.nodes);
        // An explicit stack instead of recursion: a 200-deep chain must not exhaust a
        // wasm guest's stack. Each entry: a node, and where to resume in its declared row.
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in 0..self.nodes {
            if placed[root] {
                continue;
            }
            stack.push((root, 0));
            while let Some((node, next)) = stack.pop() {
                let row = declared.row(node);
                let declared_at = row[next..]
                    .iter()
                    .position(|&p| !placed[p])
                    .map(|offset| next + offset);
                let mut first = declared_at.map(|at| row[at]);
                for (g, group) in self.implied.iter().enumerate() {
                    if to_groups[node] & (1 << g) == 0 {
                        continue;
                    }
                    let members = &group.from;
                    while cursor[g] < members.len() && placed[members[cursor[g]]] {
                        cursor[g] += 1;
                    }
                    if let Some(&member) = members.get(cursor[g]) {
                        first = Some(first.map_or(member, |f| f.min(member)));
                    }
                }
                let spec_prev =
                    self.spec_prev[node].filter(|&p| !placed[p] && !self.chain_waits(p, &waiting));
                if let Some(p) = spec_prev {
                    first = Some(first.map_or(p, |f| f.min(p)));
                }
                match first {
                    Some(pred) => {
                        // Earlier declared predecessors are all placed; this one is next
                        // unless a group's member came first.
                        let resume = match declared_at {
                            Some(at) if row[at] == pred => at + 1,
                            Some(at) => at,
                            None => row.len(),
                        };
                        stack.push((node, resume));
                        stack.push((pred, 0));
                        waiting[node] = true;
                    }
                    None if !placed[node] => {
                        placed[node] = true;
                        waiting[node] = false;
                        order.push(node);
                    }
                    None => {}
                }
            }
        }
        Ok(order)
    }

    /// Whether `node` or one before it in its chain is waiting on the walk's stack:
    /// pulling `node` forward then would put it before that one.
    fn chain_waits(&self, node: usize, waiting: &[bool]) -> bool {
        let mut at = Some(node);
        while let Some(n) = at {
            if waiting[n] {
                return true;
            }
            at = self.spec_prev[n];
        }
        false
    }

    /// Whether every edge goes from a container to one later in the spec.
    fn is_forward(&self) -> bool {
        self.declared.iter().all(|e| e.from < e.to)
            && self
                .implied
                .iter()
                .all(|g| match (g.from.iter().max(), g.to.iter().min()) {
                    (Some(last), Some(first)) => last < first,
                    _ => true,
                })
    }

    /// Per node, a bit for each group whose `members` list holds it.
    fn group_masks(&self, members: impl Fn(&Implied) -> &Vec<usize>) -> Vec<u8> {
        let mut masks = vec![0u8; self.nodes];
        for (g, group) in self.implied.iter().enumerate() {
            for &node in members(group) {
                masks[node] |= 1 << g;
            }
        }
        masks
    }

    /// Kahn's algorithm, with each group as one extra node between its `from`s and its
    /// `to`s: a node is ready when its declared predecessors are done and every group
    /// before it has seen all its `from`s done, exactly when it would be in the graph of
    /// all the pairs.
    fn check_acyclic(&self) -> Result<(), Cycle> {
        let n = self.nodes;
        let active = |g: &Implied| !g.from.is_empty() && !g.to.is_empty();
        let mut indegree = vec![0usize; n + self.implied.len()];
        for e in &self.declared {
            indegree[e.to] += 1;
        }
        for (g, group) in self.implied.iter().enumerate().filter(|(_, g)| active(g)) {
            indegree[n + g] = group.from.len();
            for &to in &group.to {
                indegree[to] += 1;
            }
        }
        let successors = Adjacency::new(n, self.declared.iter().map(|e| (e.from, e.to)));
        let from_groups = self.group_masks(|g| &g.from);
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut done = 0;
        while let Some(next) = ready.pop() {
            let mut release = |node: usize, ready: &mut Vec<usize>| {
                indegree[node] -= 1;
                if indegree[node] == 0 {
                    ready.push(node);
                }
            };
            if next >= n {
                for &to in &self.implied[next - n].to {
                    release(to, &mut ready);
                }
                continue;
            }
            done += 1;
            for &s in successors.row(next) {
                release(s, &mut ready);
            }
            for (g, group) in self.implied.iter().enumerate() {
                if from_groups[next] & (1 << g) != 0 && active(group) {
                    release(n + g, &mut ready);
                }
            }
        }
        if done == n {
            Ok(())
        } else {
            Err(self.find_cycle(&indegree[..n]))
        }
    }

    /// Every node left with a positive in-degree has a predecessor that is left too, so
    /// walking predecessors must come back to a node already seen.
    fn find_cycle(&self, indegree: &[usize]) -> Cycle {
        let stuck = |i: usize| indegree[i] > 0;
        let start = (0..self.nodes).find(|&i| stuck(i)).unwrap_or(0);
        let predecessor = |node: usize| {
            // Prefer a declared edge so the message shows what the user wrote.
            let mut preds = self.edges().filter(|e| e.to == node && stuck(e.from));
            let first = preds.clone().find(|e| e.origin.is_explicit());
            first.or_else(|| preds.next()).map(|e| e.from)
        };
        let mut walk = vec![start];
        let mut node = start;
        loop {
            let Some(prev) = predecessor(node) else {
                return Cycle { path: walk };
            };
            if let Some(pos) = walk.iter().position(|&n| n == prev) {
                let mut path: Vec<usize> = walk[pos..].to_vec();
                path.push(prev);
                path.reverse();
                return Cycle { path };
            }
            walk.push(prev);
            node = prev;
        }
    }

    /// The edges `order` breaks: `from` placed after `to`.
    pub fn violations(&self, order: &[usize]) -> Vec<Cow<'_, Edge>> {
        let mut position = vec![usize::MAX; self.nodes];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let position = &position;
        self.edges_where(|from, to| position[from] > position[to])
            .collect()
    }
}

/// The order containers start in today, as Kubernetes runs the spec: init containers
/// and sidecars in list order, then app containers in list order.
pub fn spec_order(model: &PodModel) -> Vec<usize> {
    by_list(model, &(0..model.containers.len()).collect::<Vec<_>>())
}

/// `order` list by list: init containers and sidecars, then app containers, each in
/// `order`'s order. It is the order Kubernetes starts a spec rewritten to `order`, since
/// a rewrite keeps every container in its list.
pub fn by_list(model: &PodModel, order: &[usize]) -> Vec<usize> {
    let in_list = |list| {
        order
            .iter()
            .copied()
            .filter(move |&i| model.containers[i].list == list)
    };
    in_list(ContainerList::InitContainers)
        .chain(in_list(ContainerList::Containers))
        .collect()
}

/// The audit annotations recording the start order and the stop order of `start`.
pub fn order_annotations(model: &PodModel, start: &[usize]) -> [(&'static str, String); 2] {
    [
        (keys::START_ORDER, names(model, start).join(",")),
        (
            keys::STOP_ORDER,
            names(model, &stop_order(model, start)).join(","),
        ),
    ]
}

/// The stop order for a start order: app containers (Standard and PostSidecar) together
/// first, then sidecars one at a time in reverse start order. Init containers have
/// finished before anything stops.
pub fn stop_order(model: &PodModel, start: &[usize]) -> Vec<usize> {
    let is = |i: &usize, t: LifecycleType| model.containers[*i].lifecycle_type == t;
    let mut stop: Vec<usize> = start
        .iter()
        .filter(|i| is(i, LifecycleType::Standard) || is(i, LifecycleType::PostSidecar))
        .copied()
        .collect();
    stop.extend(start.iter().rev().filter(|i| is(i, LifecycleType::Sidecar)));
    stop
}

/// Container names, for audit annotations: `a,b,c`.
pub fn names(model: &PodModel, order: &[usize]) -> Vec<String> {
    order
        .iter()
        .map(|&i| model.containers[i].name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::KnownSidecars;
    use serde_json::{Value, json};

    fn model(annotations: Value, init: Value, containers: Value) -> PodModel {
        PodModel::of(
            &PodModel::pod(annotations, init, containers),
            &KnownSidecars::none(),
        )
    }

    fn sidecar(name: &str) -> Value {
        json!({"name": name, "restartPolicy": "Always"})
    }

    fn named(m: &PodModel, order: &[usize]) -> Vec<String> {
        names(m, order)
    }

    #[test]
    fn a_conforming_spec_keeps_its_order() {
        let m = model(
            json!({"after.sidecars.dev/app": "proxy"}),
            json!([{"name": "setup"}, sidecar("proxy")]),
            json!([{"name": "app"}, {"name": "web"}]),
        );
        let g = StartGraph::build(&m, []);
        let order = g.order().unwrap();
        assert_eq!(order, spec_order(&m));
        assert!(g.violations(&order).is_empty());
    }

    #[test]
    fn edges_move_only_what_they_force() {
        // vault must start before proxy: only vault moves, to just before proxy.
        let m = model(
            json!({"after.sidecars.dev/proxy": "vault"}),
            json!([{"name": "a"}, sidecar("proxy"), {"name": "b"}, sidecar("vault")]),
            json!([{"name": "app"}]),
        );
        let g = StartGraph::build(&m, []);
        assert_eq!(g.violations(&spec_order(&m)).len(), 1);
        let order = g.order().unwrap();
        assert_eq!(named(&m, &order), ["a", "vault", "proxy", "b", "app"]);
        assert_eq!(
            named(&m, &stop_order(&m, &order)),
            ["app", "proxy", "vault"]
        );
    }

    #[test]
    fn post_sidecars_go_last_and_sidecars_first() {
        let m = model(
            json!({"lifecycle.sidecars.dev/logs": "PostSidecar", "lifecycle.sidecars.dev/mesh": "Sidecar"}),
            json!([]),
            json!([{"name": "logs"}, {"name": "app"}, {"name": "mesh"}]),
        );
        let g = StartGraph::build(&m, []);
        let order = g.order().unwrap();
        assert_eq!(named(&m, &order), ["mesh", "app", "logs"]);
        assert_eq!(named(&m, &stop_order(&m, &order)), ["app", "logs", "mesh"]);
    }

    #[test]
    fn cycles_come_back_as_paths_of_declared_edges() {
        let m = model(
            json!({
                "after.sidecars.dev/a": "c",
                "after.sidecars.dev/b": "a",
                "after.sidecars.dev/c": "b"
            }),
            json!([sidecar("a"), sidecar("b"), sidecar("c")]),
            json!([{"name": "app"}]),
        );
        let cycle = StartGraph::build(&m, []).order().unwrap_err();
        let text = cycle.render(&m);
        assert_eq!(cycle.path.first(), cycle.path.last());
        assert_eq!(cycle.path.len(), 4, "{text}");
        // Every step of the path is a declared edge.
        for pair in cycle.path.windows(2) {
            assert!(
                m.declared_after
                    .iter()
                    .any(|d| d.before == pair[0] && d.after == pair[1]),
                "{text}"
            );
        }
    }

    #[test]
    fn an_init_after_an_app_is_a_cycle_with_the_implicit_edge() {
        let m = model(
            json!({"after.sidecars.dev/setup": "app"}),
            json!([{"name": "setup"}]),
            json!([{"name": "app"}]),
        );
        let g = StartGraph::build(&m, []);
        let cycle = g.order().unwrap_err();
        assert_eq!(cycle.render(&m), "setup → app → setup");
    }

    #[test]
    fn settings_edges_join_the_graph() {
        let m = model(
            json!({}),
            json!([sidecar("proxy"), sidecar("vault")]),
            json!([{"name": "app"}]),
        );
        let extra = Edge {
            from: 1,
            to: 0,
            origin: EdgeOrigin::Settings {
                rule: "vault before proxy".into(),
            },
        };
        let order = StartGraph::build(&m, [extra]).order().unwrap();
        assert_eq!(named(&m, &order), ["vault", "proxy", "app"]);
    }

    #[test]
    fn independent_groups_move_independently() {
        let m = model(
            json!({"after.sidecars.dev/proxy": "vault", "after.sidecars.dev/logs": "otel"}),
            json!([{"name": "db"}, sidecar("proxy"), sidecar("logs"), {"name": "cache"}, sidecar("vault"), sidecar("otel")]),
            json!([{"name": "app"}]),
        );
        let order = StartGraph::build(&m, []).order().unwrap();
        assert_eq!(
            named(&m, &order),
            ["db", "vault", "proxy", "otel", "logs", "cache", "app"]
        );
    }

    /// The order and the acyclicity check as first written: every implied pair listed.
    fn reference_order(g: &StartGraph) -> Result<Vec<usize>, Vec<usize>> {
        let pairs: Vec<(usize, usize)> = g.edges().map(|e| (e.from, e.to)).collect();
        let mut indegree = vec![0usize; g.nodes];
        for &(_, to) in &pairs {
            indegree[to] += 1;
        }
        let mut ready: Vec<usize> = (0..g.nodes).filter(|&i| indegree[i] == 0).collect();
        let mut done = 0;
        while let Some(next) = ready.pop() {
            done += 1;
            for &(_, to) in pairs.iter().filter(|p| p.0 == next) {
                indegree[to] -= 1;
                if indegree[to] == 0 {
                    ready.push(to);
                }
            }
        }
        if done < g.nodes {
            return Err(g.find_cycle(&indegree).path);
        }
        let mut placed = vec![false; g.nodes];
        let mut waiting = vec![false; g.nodes];
        let mut order = Vec::new();
        struct Walk<'w> {
            pairs: &'w [(usize, usize)],
            spec_prev: &'w [Option<usize>],
            placed: &'w mut [bool],
            waiting: &'w mut [bool],
            order: &'w mut Vec<usize>,
        }
        fn visit(n: usize, w: &mut Walk) {
            w.waiting[n] = true;
            // The smallest unplaced predecessor first, again after each is placed (a
            // spec predecessor counts unless it is waiting for `n`).
            loop {
                let mut preds: Vec<usize> = w
                    .pairs
                    .iter()
                    .filter(|p| p.1 == n && !w.placed[p.0])
                    .map(|p| p.0)
                    .collect();
                let chain_waits = |mut at: Option<usize>| {
                    while let Some(x) = at {
                        if w.waiting[x] {
                            return true;
                        }
                        at = w.spec_prev[x];
                    }
                    false
                };
                if let Some(p) = w.spec_prev[n].filter(|&p| !w.placed[p] && !chain_waits(Some(p))) {
                    preds.push(p);
                }
                match preds.into_iter().min() {
                    Some(p) => visit(p, w),
                    None => break,
                }
            }
            w.waiting[n] = false;
            if !w.placed[n] {
                w.placed[n] = true;
                w.order.push(n);
            }
        }
        let mut walk = Walk {
            pairs: &pairs,
            spec_prev: &g.spec_prev,
            placed: &mut placed,
            waiting: &mut waiting,
            order: &mut order,
        };
        for root in 0..g.nodes {
            if !walk.placed[root] {
                visit(root, &mut walk);
            }
        }
        Ok(order)
    }

    #[test]
    fn the_walk_over_groups_matches_the_walk_over_every_pair() {
        // Seeded: the same graphs every run.
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = |below: usize| rng.usize(..below);
        for round in 0..400 {
            let nodes = 1 + next(24);
            let types: Vec<usize> = (0..nodes).map(|_| next(4)).collect();
            let of = |t: usize| -> Vec<usize> { (0..nodes).filter(|&i| types[i] == t).collect() };
            let (inits, sidecars, apps, posts) = (of(0), of(1), of(2), of(3));
            let spec_prev = spec_chains(nodes, &inits, &apps);
            // Where each sits: mostly as its type says, now and then misplaced.
            let init_list: Vec<usize> = (0..nodes)
                .filter(|&i| (types[i] < 2) != (next(8) == 0))
                .collect();
            let containers_list: Vec<usize> =
                (0..nodes).filter(|i| !init_list.contains(i)).collect();
            let implied =
                implied_groups(inits, sidecars, apps, posts, (init_list, containers_list));
            let mut declared: Vec<Edge> = Vec::new();
            for _ in 0..next(nodes + 4) {
                let (from, to) = (next(nodes), next(nodes));
                if from != to && !declared.iter().any(|e| e.from == from && e.to == to) {
                    declared.push(Edge {
                        from,
                        to,
                        origin: EdgeOrigin::Annotation {
                            key: format!("k{from}-{to}"),
                        },
                    });
                }
            }
            let g = StartGraph {
                nodes,
                declared,
                implied,
                spec_prev,
            };
            let got = g.order().map_err(|c| c.path);
            assert_eq!(got, reference_order(&g), "round {round}: {g:?}");
        }
    }

    #[test]
    fn two_hundred_nodes() {
        // A chain declared backwards: every node must move.
        let n = 200;
        let init: Vec<Value> = (0..n).map(|i| sidecar(&format!("s{i}"))).collect();
        let mut ann = serde_json::Map::new();
        for i in 0..n - 1 {
            ann.insert(
                format!("after.sidecars.dev/s{i}"),
                json!(format!("s{}", i + 1)),
            );
        }
        let m = model(Value::Object(ann), json!(init), json!([{"name": "app"}]));
        let order = StartGraph::build(&m, []).order().unwrap();
        let expected: Vec<usize> = (0..n).rev().chain([n]).collect();
        assert_eq!(order, expected);
    }
}
