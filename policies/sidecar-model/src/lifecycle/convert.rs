//! Legacy sidecars made native, and optional sidecars' readiness probes dropped: the
//! lifecycle policy's edits, done on the request's own JSON (see `kube::edit`) and, the
//! same way, on the model, so a policy need not read the object again. The injector uses
//! them too, on the pod it injected.

use serde_json::Value;

use crate::json::{Node, Object};
use crate::kube::Container;
use crate::kube::Mesh;
use crate::kube::ModelError;
use crate::kube::{Change, empty_object, list_mut, remove_container_field, spec_mut};
use crate::kube::{ContainerInfo, PodModel};
use crate::kube::{ContainerList, KnownSidecars};

/// Why a normalisation was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    #[error(
        "every container of the pod ({}) is a sidecar: converting them would leave no app container; mark the application container {}<name>: Standard",
        .0.join(", "),
        crate::kube::keys::LIFECYCLE_PREFIX
    )]
    NoAppContainerLeft(Vec<String>),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<crate::json::Malformed> for NormaliseError {
    fn from(e: crate::json::Malformed) -> Self {
        NormaliseError::Model(e.into())
    }
}

/// How one legacy sidecar becomes a native one. Decided once from the model, then done
/// to the object ([`normalise`]) and to the model ([`normalised`]) alike.
#[derive(Debug, Clone)]
struct Conversion {
    /// Its index in `containers`.
    from: usize,
    name: String,
    /// The init steps (indices in `initContainers`, ascending) that belong before it.
    steps: Vec<usize>,
    drop_restart_rules: bool,
    /// The mesh whose native layout it takes, and what that adds or removes.
    mesh: Option<Mesh>,
    add_startup_probe: bool,
    /// Where the mesh's startupProbe asks (`Mesh::ready_port`).
    ready_port: u16,
    drop_wait_hook: bool,
    drop_exit_hook: bool,
    add_pre_stop: bool,
}

impl Conversion {
    fn also(&self) -> Vec<String> {
        let mut also = Vec::new();
        if self.drop_restart_rules {
            also.push("removed restartPolicyRules, which a native sidecar ignores".to_string());
        }
        if let Some(mesh) = self.mesh {
            if self.add_startup_probe {
                also.push(format!("added {mesh}'s native startupProbe"));
            }
            if self.drop_wait_hook {
                also.push(format!(
                    "removed the postStart wait hook, which {mesh} renders only for legacy sidecars"
                ));
            }
            if self.drop_exit_hook {
                also.push(format!(
                    "removed the preStop wait before exit, which {mesh} renders only for legacy sidecars"
                ));
            }
            if self.add_pre_stop {
                also.push(format!("added {mesh}'s native preStop drain"));
            }
        }
        also
    }
}

/// The legacy sidecars to convert: all but those a mesh annotation keeps legacy.
fn conversions(model: &PodModel) -> Vec<Conversion> {
    model
        .containers
        .iter()
        .enumerate()
        .filter(|(_, c)| model.converts(c))
        .map(|(i, info)| {
            let c = model.container(i);
            let hooks = c.lifecycle.as_deref();
            let mesh = info.mesh;
            let mut steps: Vec<usize> = model
                .init_steps_before
                .iter()
                .filter(|r| r.sidecar == i)
                .map(|r| model.containers[r.step].index)
                .collect();
            steps.sort_unstable();
            Conversion {
                from: info.index,
                name: info.name.clone(),
                steps,
                drop_restart_rules: c.restart_policy_rules.is_some(),
                mesh,
                add_startup_probe: mesh.is_some() && c.startup_probe.is_none(),
                ready_port: mesh.map_or(0, |m| m.ready_port(c, &model.workload.annotations)),
                drop_wait_hook: mesh.is_some_and(|m| {
                    hooks
                        .and_then(|l| l.post_start.as_ref())
                        .is_some_and(|h| m.is_wait_hook(h))
                }),
                drop_exit_hook: mesh.is_some_and(|m| {
                    hooks
                        .and_then(|l| l.pre_stop.as_ref())
                        .is_some_and(|h| m.is_legacy_exit_hook(h))
                }),
                add_pre_stop: mesh.is_some_and(|m| m.pre_stop().is_some())
                    && hooks.and_then(|l| l.pre_stop.as_ref()).is_none(),
            }
        })
        .collect()
}

/// An entry of the init list after conversion: one that was there, or a converted one
/// (by its place in the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Kept(usize),
    Converted(usize),
}

/// The init list after conversion. A mesh's proxy takes the place its mesh gives it: first,
/// right after the mesh's own init steps (which lead with it), before the user's init
/// containers. Another sidecar goes right after the last init step that belongs before
/// it, or after every init container.
fn layout(init_len: usize, plan: &[Conversion]) -> Vec<Slot> {
    let mut out = Vec::with_capacity(init_len + plan.len());
    let mut placed = vec![false; init_len];
    for (j, c) in plan.iter().enumerate().filter(|(_, c)| c.mesh.is_some()) {
        for &k in c.steps.iter().filter(|&&k| k < init_len) {
            if !std::mem::replace(&mut placed[k], true) {
                out.push(Slot::Kept(k));
            }
        }
        out.push(Slot::Converted(j));
    }
    let after = |at: Option<usize>| {
        plan.iter()
            .enumerate()
            .filter(move |(_, c)| c.mesh.is_none() && c.steps.last().copied() == at)
            .map(|(j, _)| Slot::Converted(j))
    };
    for (k, &moved_up) in placed.iter().enumerate() {
        if !moved_up {
            out.push(Slot::Kept(k));
        }
        out.extend(after(Some(k)));
    }
    out.extend(after(None));
    // A step index past the list (not possible for a plan of this model) lands last.
    for (j, c) in plan.iter().enumerate() {
        if c.mesh.is_none() && c.steps.last().is_some_and(|&k| k >= init_len) {
            out.push(Slot::Converted(j));
        }
    }
    out
}

/// `init` and `moved` (in plan order) put in the order of `slots`.
fn arrange<T>(init: Vec<T>, moved: Vec<T>, slots: &[Slot]) -> Vec<T> {
    let mut init: Vec<Option<T>> = init.into_iter().map(Some).collect();
    let mut moved: Vec<Option<T>> = moved.into_iter().map(Some).collect();
    slots
        .iter()
        .filter_map(|slot| match *slot {
            Slot::Kept(k) => init.get_mut(k).and_then(Option::take),
            Slot::Converted(j) => moved.get_mut(j).and_then(Option::take),
        })
        .collect()
}

fn json_node<'a>(value: Value) -> Node<'a> {
    Node::Value(value)
}

/// The shared normalisation: every container typed `Sidecar` that sits in `containers`
/// becomes a native sidecar (unless its mesh's annotation keeps it legacy), in the order
/// the sidecars had: right after the init steps the known-sidecar list puts before it (a
/// mesh's proxy after the mesh's traffic redirection and before the user's init
/// containers, as the mesh itself injects it), otherwise after every init container (so
/// it still starts after every init step and before the app, as it did, and now for
/// sure). A mesh's proxy also takes what the mesh gives a native proxy. Returns what it
/// changed; nothing when there is nothing to do.
pub fn normalise(object: &mut Node, model: &PodModel) -> Result<Vec<Change>, NormaliseError> {
    let plan = conversions(model);
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    if plan.len() == model.workload.spec.containers.len() {
        return Err(NormaliseError::NoAppContainerLeft(
            plan.into_iter().map(|c| c.name).collect(),
        ));
    }
    let spec = spec_mut(object, model.workload.kind)?;
    let containers = list_mut(spec, ContainerList::Containers)?;
    let indices: Vec<usize> = plan.iter().map(|c| c.from).collect();
    let mut moved = take_at(containers, &indices).ok_or_else(|| {
        let last = indices.last().copied().unwrap_or_default();
        ModelError::Malformed(format!("containers[{last}] is missing"))
    })?;
    for (conversion, container) in plan.iter().zip(&mut moved) {
        if let Some(fields) = container.as_object_mut()? {
            convert_object(fields, conversion)?;
        }
    }
    let init = list_mut(spec, ContainerList::InitContainers)?;
    let slots = layout(init.len(), &plan);
    let arranged = arrange(std::mem::take(init), moved, &slots);
    *init = arranged;
    let mut changes: Vec<Change> = plan
        .iter()
        .enumerate()
        .map(|(j, c)| Change::ConvertedToNativeSidecar {
            container: c.name.clone(),
            from: format!("containers[{}]", c.from),
            to: format!(
                "initContainers[{}]",
                slots
                    .iter()
                    .position(|s| *s == Slot::Converted(j))
                    .unwrap_or_default()
            ),
            also: c.also(),
        })
        .collect();
    // A mesh's init steps moved to the front with their proxy: say so.
    let kept: Vec<usize> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Kept(k) => Some(*k),
            Slot::Converted(_) => None,
        })
        .collect();
    if kept.windows(2).any(|w| w[0] > w[1]) {
        let inits: Vec<&ContainerInfo> = model
            .containers
            .iter()
            .filter(|c| c.list == ContainerList::InitContainers)
            .collect();
        changes.push(Change::Reordered {
            list: ContainerList::InitContainers,
            before: inits.iter().map(|c| c.name.clone()).collect(),
            after: slots
                .iter()
                .map(|s| match *s {
                    Slot::Kept(k) => inits[k].name.clone(),
                    Slot::Converted(j) => plan[j].name.clone(),
                })
                .collect(),
        });
    }
    Ok(changes)
}

/// One conversion's edits on the container's JSON.
fn convert_object(fields: &mut Object, c: &Conversion) -> Result<(), ModelError> {
    fields.insert("restartPolicy", json_node(Value::String("Always".into())));
    if c.drop_restart_rules {
        fields.remove("restartPolicyRules");
    }
    let Some(mesh) = c.mesh else {
        return Ok(());
    };
    if c.add_startup_probe {
        fields.insert("startupProbe", json_node(mesh.startup_probe(c.ready_port)));
    }
    if c.drop_wait_hook || c.drop_exit_hook || c.add_pre_stop {
        let hooks = fields
            .entry_or("lifecycle", empty_object)
            .as_object_mut()?
            .ok_or_else(|| {
                ModelError::Malformed(format!("{} lifecycle is not an object", c.name))
            })?;
        if c.drop_wait_hook {
            hooks.remove("postStart");
        }
        if c.drop_exit_hook {
            hooks.remove("preStop");
        }
        if let Some(pre_stop) = mesh.pre_stop().filter(|_| c.add_pre_stop) {
            hooks.insert("preStop", json_node(pre_stop));
        }
        if hooks.is_empty() {
            fields.remove("lifecycle");
        }
    }
    Ok(())
}

/// One conversion's edits on the model's container, as [`convert_object`] makes them.
fn convert_container(container: &mut Container, c: &Conversion) {
    container.restart_policy = Some("Always".into());
    if c.drop_restart_rules {
        container.restart_policy_rules = None;
    }
    let Some(mesh) = c.mesh else {
        return;
    };
    if c.add_startup_probe {
        container.startup_probe = Some(serde::de::IgnoredAny);
    }
    if c.drop_wait_hook || c.drop_exit_hook || c.add_pre_stop {
        let hooks = container.lifecycle.get_or_insert_default();
        if c.drop_wait_hook {
            hooks.post_start = None;
        }
        if c.drop_exit_hook {
            hooks.pre_stop = None;
        }
        if let Some(pre_stop) = mesh.pre_stop().filter(|_| c.add_pre_stop) {
            // The mesh's own hook, which reads.
            hooks.pre_stop = serde_json::from_value(pre_stop).ok();
        }
        if hooks.post_start.is_none() && hooks.pre_stop.is_none() && hooks.stop_signal.is_none() {
            container.lifecycle = None;
        }
    }
}

/// Removes the items at `indices` (ascending) from `list` and returns them in that
/// order; `None`, with `list` untouched, when an index is past its end.
fn take_at<T>(list: &mut Vec<T>, indices: &[usize]) -> Option<Vec<T>> {
    if indices.iter().any(|&i| i >= list.len()) {
        return None;
    }
    let mut taken: Vec<T> = indices.iter().rev().map(|&i| list.remove(i)).collect();
    taken.reverse();
    Some(taken)
}

/// What [`normalise`] does to the object, done to the model's workload: the model
/// of the normalised pod, without reading the object again.
pub fn normalised(model: PodModel, known: &KnownSidecars) -> PodModel {
    let plan = conversions(&model);
    if plan.is_empty() {
        return model;
    }
    let indices: Vec<usize> = plan.iter().map(|c| c.from).collect();
    model.with_workload(known, |workload| {
        let containers = workload.list_mut(ContainerList::Containers);
        // The indices come from this very workload: they are all there.
        let mut moved = take_at(containers, &indices).unwrap_or_default();
        for (conversion, c) in plan.iter().zip(&mut moved) {
            convert_container(c, conversion);
        }
        let init = workload.list_mut(ContainerList::InitContainers);
        let slots = layout(init.len(), &plan);
        let arranged = arrange(std::mem::take(init), moved, &slots);
        *init = arranged;
    })
}

/// The optional sidecars whose readinessProbe takes the pod out of service when they
/// fail, and that may lose it: native ones only, since a legacy one left unconverted is
/// an app container whose probe is the user's.
pub fn readiness_probes_to_drop(model: &PodModel) -> Vec<usize> {
    model
        .optional_sidecars_gating_readiness()
        .filter(|&i| model.containers[i].is_native_sidecar())
        .collect()
}

/// Removes the readinessProbe of each of `indices` from the object.
pub fn drop_readiness_probes(
    object: &mut Node,
    model: &PodModel,
    indices: &[usize],
) -> Result<Vec<Change>, ModelError> {
    let mut changes = Vec::new();
    for &i in indices {
        if remove_container_field(object, model, i, "readinessProbe")? {
            changes.push(Change::RemovedReadinessProbe {
                container: model.containers[i].name.clone(),
            });
        }
    }
    Ok(changes)
}

/// The model of the pod once `remove_container_field(.., i, "readinessProbe")` has run
/// for each of `indices`, without reading the object again.
pub fn without_readiness_probes(
    model: PodModel,
    indices: &[usize],
    known: &KnownSidecars,
) -> PodModel {
    let at: Vec<(ContainerList, usize)> = indices
        .iter()
        .map(|&i| (model.containers[i].list, model.containers[i].index))
        .collect();
    model.with_workload(known, |workload| {
        for (list, index) in at {
            if let Some(c) = workload.list_mut(list).get_mut(index) {
                c.readiness_probe = None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::edit_value;
    use crate::kube::LifecycleType;
    use serde_json::json;

    fn model(object: &Value) -> PodModel {
        PodModel::of(object, &KnownSidecars::default())
    }

    fn istio_job() -> Value {
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "pi"},
            "spec": {"template": {
                "metadata": {"labels": {"app": "pi"}},
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24", "args": ["istio-iptables"]}],
                    "containers": [
                        {"name": "pi", "image": "perl", "command": ["perl", "-e", "print 1"]},
                        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24",
                         "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
                         "resources": {"requests": {"cpu": "100m"}}}
                    ]
                }
            }}
        })
    }

    #[test]
    fn normalise_moves_a_legacy_sidecar_as_it_is() {
        let original = istio_job();
        let mut object = original.clone();
        let m = model(&object);
        let changes = edit_value(&mut object, |d| normalise(d, &m)).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].to_string(),
            "istio-proxy: moved from containers[1] to initContainers[1] with restartPolicy: Always (native sidecar); added Istio's native startupProbe, added Istio's native preStop drain"
        );
        let spec = &object["spec"]["template"]["spec"];
        // As Istio injects a native proxy: its startupProbe and drain added, the rest as it was.
        let mut expected_proxy = original["spec"]["template"]["spec"]["containers"][1].clone();
        expected_proxy["restartPolicy"] = json!("Always");
        expected_proxy["startupProbe"] = Mesh::Istio.startup_probe(15021);
        expected_proxy["lifecycle"] = json!({"preStop": Mesh::Istio.pre_stop()});
        assert_eq!(spec["initContainers"][1], expected_proxy);
        assert_eq!(
            spec["containers"],
            json!([original["spec"]["template"]["spec"]["containers"][0]])
        );
        // Nothing else changed.
        let mut rest = object.clone();
        rest["spec"]["template"]["spec"]["initContainers"] =
            original["spec"]["template"]["spec"]["initContainers"].clone();
        rest["spec"]["template"]["spec"]["containers"] =
            original["spec"]["template"]["spec"]["containers"].clone();
        assert_eq!(rest, original);

        let again = model(&object);
        assert_eq!(again.containers[1].lifecycle_type, LifecycleType::Sidecar);
        assert!(again.containers[1].is_native_sidecar());
        let mut twice = object.clone();
        assert!(
            edit_value(&mut twice, |d| normalise(d, &again))
                .unwrap()
                .is_empty()
        );
        assert_eq!(twice, object);
    }

    #[test]
    fn edits_leave_the_rest_of_the_text_as_it_came() {
        let app =
            r#"{"name": "app", "resources": {"limits": {"cpu": "1.50"}}, "args": ["\u0041"]}"#;
        let text = format!(
            r#"{{"kind": "Pod", "metadata": {{"name": "p"}}, "spec": {{"containers": [{app}, {{"name": "fluent-bit", "image": "fluent/fluent-bit:3"}}]}}}}"#
        );
        let m = model(&serde_json::from_str(&text).unwrap());
        let mut doc = Node::parse(&text).unwrap();
        assert_eq!(normalise(&mut doc, &m).unwrap().len(), 1);
        let out = serde_json::to_string(&doc).unwrap();
        assert_eq!(
            out,
            format!(
                r#"{{"kind":"Pod","metadata":{{"name": "p"}},"spec":{{"containers":[{app}],"initContainers":[{{"name":"fluent-bit","image":"fluent/fluent-bit:3","restartPolicy":"Always"}}]}}}}"#
            )
        );
    }

    #[test]
    fn the_normalised_model_is_the_model_of_the_normalised_object() {
        let known = KnownSidecars::default();
        let objects = [
            istio_job(),
            json!({"kind": "Pod", "metadata": {"annotations": {"after.sidecars.dev/app": "envoy"}},
                "spec": {"initContainers": [{"name": "setup"}], "containers": [
                {"name": "envoy", "image": "envoyproxy/envoy:v1", "env": [{"name": "A", "value": "1"}]},
                {"name": "app", "image": "nginx", "resources": {"limits": {"cpu": "1"}}},
                {"name": "fluent-bit", "image": "fluent/fluent-bit:3", "restartPolicy": "Never"}
            ]}}),
        ];
        for object in objects {
            let m = model(&object);
            let mut edited = object.clone();
            assert!(
                !edit_value(&mut edited, |d| normalise(d, &m))
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                format!("{:?}", normalised(m.clone(), &known)),
                format!("{:?}", PodModel::of(&edited, &known)),
                "{object}"
            );
        }
    }

    /// A legacy Linkerd proxy as Linkerd renders it, with `lifecycle` and `env` of its own.
    fn linkerd_pod(labels: Value, annotations: Value, proxy: Value) -> Value {
        let mut container =
            json!({"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:edge-25.1.1"});
        container
            .as_object_mut()
            .unwrap()
            .extend(proxy.as_object().unwrap().clone());
        json!({"kind": "Pod", "metadata": {"labels": labels, "annotations": annotations}, "spec": {
            "initContainers": [{"name": "linkerd-init", "image": "cr.l5d.io/linkerd/proxy-init:v2"}],
            "containers": [container, {"name": "app"}]}})
    }

    fn converted_proxy(object: &Value) -> Option<Value> {
        let known = KnownSidecars::default();
        let m = PodModel::of(object, &known);
        let mut edited = object.clone();
        edit_value(&mut edited, |d| normalise(d, &m)).unwrap();
        edited["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "linkerd-proxy")
            .cloned()
    }

    #[test]
    fn linkerd_probes_the_admin_port_the_proxy_uses() {
        let port = |annotations: Value, proxy: Value| {
            converted_proxy(&linkerd_pod(json!({}), annotations, proxy)).unwrap()["startupProbe"]
                ["httpGet"]["port"]
                .clone()
        };
        let env =
            json!({"env": [{"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": "[::]:5191"}]});
        assert_eq!(port(json!({}), env), json!(5191));
        let hook = json!({"lifecycle": {"postStart": {"exec": {"command":
            ["/usr/lib/linkerd/linkerd-await", "--timeout=2m", "--port", "6191"]}}}});
        assert_eq!(port(json!({}), hook), json!(6191));
        let annotated = json!({"config.linkerd.io/admin-port": "7191"});
        assert_eq!(port(annotated, json!({})), json!(7191));
        assert_eq!(port(json!({}), json!({})), json!(4191));
    }

    #[test]
    fn linkerd_drops_the_wait_before_exit_sleep() {
        let proxy = converted_proxy(&linkerd_pod(
            json!({}),
            json!({}),
            json!({"lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", "40"]}}}}),
        ))
        .unwrap();
        assert!(proxy.get("lifecycle").is_none(), "{proxy}");
    }

    #[test]
    fn linkerd_keeps_its_identity_proxy_legacy() {
        let identity = linkerd_pod(
            json!({"linkerd.io/control-plane-component": "identity"}),
            json!({}),
            json!({}),
        );
        assert_eq!(converted_proxy(&identity), None);
        let m = PodModel::of(&identity, &KnownSidecars::default());
        let checked = crate::lifecycle::check(&m, &Default::default());
        assert!(checked.is_empty(), "{checked:?}");
    }

    #[test]
    fn mesh_proxies_take_the_layout_their_mesh_injects() {
        let known = KnownSidecars::default();
        // Istio with holdApplicationUntilProxyStarts: the wait hook goes, the drain comes,
        // and the proxy sits after istio-init, before the user's init steps.
        let istio = json!({"kind": "Pod", "spec": {
            "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.28"}, {"name": "migrate"}],
            "containers": [{"name": "app"}, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28",
                "startupProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
                "lifecycle": {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}}]}});
        // Linkerd: linkerd-await goes, its startupProbe comes; restart rules a regular
        // container carried mean nothing on a sidecar.
        let linkerd = json!({"kind": "Pod", "spec": {
            "initContainers": [{"name": "linkerd-init", "image": "cr.l5d.io/linkerd/proxy-init:v2"}],
            "containers": [{"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:edge-25.1.1",
                "restartPolicy": "Always", "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}}],
                "lifecycle": {"postStart": {"exec": {"command": ["/usr/lib/linkerd/linkerd-await", "--timeout=2m", "--port=4191"]}}}},
                {"name": "app"}]}});
        for (object, names, proxy) in [
            (
                &istio,
                ["istio-init", "istio-proxy", "migrate"].as_slice(),
                1,
            ),
            (&linkerd, ["linkerd-init", "linkerd-proxy"].as_slice(), 1),
        ] {
            let m = model(object);
            let mut edited = object.clone();
            let changes = edit_value(&mut edited, |d| normalise(d, &m)).unwrap();
            let init = edited["spec"]["initContainers"].as_array().unwrap();
            let got: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
            assert_eq!(got, names, "{changes:?}");
            let p = &init[proxy];
            assert_eq!(p["restartPolicy"], "Always");
            assert!(p.get("restartPolicyRules").is_none());
            assert!(p["startupProbe"].is_object());
            assert!(p["lifecycle"].get("postStart").is_none(), "{p}");
            assert_eq!(
                format!("{:?}", normalised(m.clone(), &known)),
                format!("{:?}", PodModel::of(&edited, &known)),
                "{object}"
            );
            // Once native, the mesh's own layout: nothing more to do.
            let again = model(&edited);
            assert!(
                edit_value(&mut edited, |d| normalise(d, &again))
                    .unwrap()
                    .is_empty()
            );
        }
        let linkerd_proxy = &{
            let mut e = linkerd.clone();
            edit_value(&mut e, |d| normalise(d, &model(&linkerd))).unwrap();
            e
        }["spec"]["initContainers"][1];
        assert!(linkerd_proxy.get("lifecycle").is_none(), "{linkerd_proxy}");
        assert_eq!(linkerd_proxy["startupProbe"]["httpGet"]["path"], "/ready");
        let istio_proxy = {
            let mut e = istio.clone();
            edit_value(&mut e, |d| normalise(d, &model(&istio))).unwrap();
            e["spec"]["initContainers"][1].clone()
        };
        // The user's own startupProbe is kept.
        assert_eq!(
            istio_proxy["startupProbe"],
            json!({"httpGet": {"path": "/healthz/ready", "port": 15021}})
        );
        assert_eq!(
            istio_proxy["lifecycle"],
            json!({"preStop": Mesh::Istio.pre_stop()})
        );
    }

    #[test]
    fn a_mesh_proxy_leads_the_init_containers_with_its_own_steps() {
        let known = KnownSidecars::default();
        let object = json!({"kind": "Pod", "spec": {
            "initContainers": [{"name": "vault-agent", "image": "hashicorp/vault:1.18", "restartPolicy": "Always"},
                               {"name": "istio-init", "image": "docker.io/istio/proxyv2:1.28"}],
            "containers": [{"name": "app"}, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28"}]}});
        let m = model(&object);
        let mut edited = object.clone();
        let changes = edit_value(&mut edited, |d| normalise(d, &m)).unwrap();
        let said: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert!(
            said[0].starts_with("istio-proxy: moved from containers[1] to initContainers[1]"),
            "{said:?}"
        );
        assert_eq!(
            said[1],
            "initContainers: [vault-agent, istio-init] → [istio-init, istio-proxy, vault-agent]"
        );
        assert_eq!(
            format!("{:?}", normalised(m, &known)),
            format!("{:?}", PodModel::of(&edited, &known))
        );
    }

    #[test]
    fn a_mesh_opt_out_keeps_the_proxy_legacy() {
        for key in [
            "sidecar.istio.io/nativeSidecar",
            "config.beta.linkerd.io/proxy-enable-native-sidecar",
        ] {
            let image = if key.contains("istio") {
                "docker.io/istio/proxyv2:1.28"
            } else {
                "cr.l5d.io/linkerd/proxy:stable"
            };
            let object = json!({"kind": "Pod", "metadata": {"annotations": {key: "false"}},
                "spec": {"containers": [{"name": "app"}, {"name": "proxy", "image": image}]}});
            let m = model(&object);
            assert_eq!(m.mesh_opt_out(&m.containers[1]).map(|(_, k)| k), Some(key));
            let mut edited = object.clone();
            assert!(
                edit_value(&mut edited, |d| normalise(d, &m))
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(edited, object);
        }
    }

    #[test]
    fn normalise_creates_init_containers_and_keeps_sidecar_order() {
        let mut object = json!({"kind": "Pod", "spec": {"containers": [
            {"name": "envoy", "image": "envoyproxy/envoy:v1"},
            {"name": "app", "image": "nginx"},
            {"name": "fluent-bit", "image": "fluent/fluent-bit:3"}
        ]}});
        let m = model(&object);
        let changes = edit_value(&mut object, |d| normalise(d, &m)).unwrap();
        assert_eq!(changes.len(), 2);
        let names: Vec<&str> = object["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["envoy", "fluent-bit"]);
        assert_eq!(
            object["spec"]["containers"],
            json!([{"name": "app", "image": "nginx"}])
        );
    }

    #[test]
    fn normalise_refuses_to_leave_no_app_container() {
        let mut object = json!({"kind": "Pod", "metadata": {"annotations": {"lifecycle.sidecars.dev/envoy": "Sidecar"}},
            "spec": {"containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1"}]}});
        let before = object.clone();
        let err = edit_value(&mut object, |d| normalise(d, &model(&before))).unwrap_err();
        assert!(err.to_string().contains("envoy"));
        assert_eq!(object, before);
    }

    /// Removes `readinessProbe` from container `i` of `object`: whether it was there.
    fn remove_probe(object: &mut Value, m: &PodModel, i: usize) -> bool {
        edit_value(object, |d| {
            remove_container_field(d, m, i, "readinessProbe")
        })
        .unwrap()
    }

    #[test]
    fn a_model_without_probes_is_the_model_of_the_edited_object() {
        let known = KnownSidecars::default();
        let object = json!({"kind": "Pod", "spec": {"initContainers": [
            {"name": "logs", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "proxy", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["true"]}}}
        ], "containers": [{"name": "app", "readinessProbe": {"exec": {"command": ["true"]}}}]}});
        let m = model(&object);
        let mut edited = object.clone();
        for i in [0, 2] {
            assert!(remove_probe(&mut edited, &m, i));
        }
        assert_eq!(
            format!("{:?}", without_readiness_probes(m.clone(), &[0, 2], &known)),
            format!("{:?}", PodModel::of(&edited, &known))
        );
    }
}
