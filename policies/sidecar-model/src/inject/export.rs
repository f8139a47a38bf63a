//! A sidecar set as a MutatingAdmissionPolicy (`admissionregistration.k8s.io/v1`, GA and on
//! from 1.36): the API server injects the set itself with CEL, and no webhook runs.
//!
//! The policy does what the injector does; the e2e suite holds the two equal, pod for pod,
//! on a real API server. Where CEL cannot do the same, the set is refused with the field
//! and the reason ([`Refusal`]); the pods that the injector treats differently from any
//! exported policy are named by [`webhook_only`], and the README lists both.
//!
//! The API server runs MutatingAdmissionPolicies in no fixed order (it gathers them from
//! a Go map: apiserver `policy/generic/policy_source.go`), so each policy places its
//! containers, volumes and pull secrets by what it finds: after the pod's own and those of
//! the sets listed before it, before those of the sets listed after it (recognised by their
//! `injected.sidecars.dev/<set>` annotation). Whatever order they run in, the pod ends as the
//! injector writes it.
//!
//! The CEL is written as text here: no crate writes CEL (cel-interpreter and cel-parser
//! read it), and the API server that compiles it is the test (`tests/e2e/export.rs`).

use super::edit::{container_named, inject_value};
use super::overlap::{disjoint, namespaces_overlap};
use super::set::{SetContainer, SidecarSet};
use super::settings::Settings;
use super::survey::{SetOutcome, survey};
use crate::json::pointer_segment;
use crate::kube::keys;
use crate::kube::{ContainerSelector, KnownSidecars, LifecycleType, PodModel};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// What the exported resources carry besides the sets: what the injector's
/// `ClusterAdmissionPolicy` says about where and how it runs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Each policy and binding is named `<prefix><set>`.
    pub name_prefix: String,
    /// `Fail` or `Ignore`.
    pub failure_policy: String,
    /// The ClusterAdmissionPolicy's own match conditions, kept before the set's.
    pub match_conditions: Vec<Value>,
    /// For the binding's `matchResources`.
    pub namespace_selector: Option<Value>,
    pub object_selector: Option<Value>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            name_prefix: "sidecar-set-".into(),
            failure_policy: "Fail".into(),
            match_conditions: Vec::new(),
            namespace_selector: None,
            object_selector: None,
        }
    }
}

/// One set, exported.
#[derive(Debug, Clone)]
pub struct ExportedSet {
    pub set: String,
    pub revision: String,
    pub policy: Value,
    pub binding: Value,
}

/// A field of a set that CEL cannot express as the injector does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub set: String,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sidecarSets {:?}: {}: {}",
            self.set, self.field, self.reason
        )
    }
}

/// Each set of `settings` as a policy and its binding, or why it cannot be one.
pub fn export(
    settings: &Settings,
    options: &ExportOptions,
) -> Result<Vec<Result<ExportedSet, Vec<Refusal>>>, String> {
    settings.validate()?;
    let known = settings.known_sidecars.resolve();
    let sets = &settings.sidecar_sets;
    Ok((0..sets.len())
        .map(|i| Exporter::new(sets, i, &known).and_then(|e| e.export(options)))
        .collect())
}

/// A set's containers as the injector places them, asked of the injector itself on two
/// probe pods: one without init containers (the set's own order) and one with an init
/// container (which of them go before the pod's init containers).
struct Placement {
    /// In `initContainers`, before the pod's first init container (regular, not a sidecar).
    early: Vec<usize>,
    /// In `initContainers`, after the pod's own and the earlier sets' containers.
    rest: Vec<usize>,
    /// In `containers` (post-sidecars), after the pod's own.
    post: Vec<usize>,
}

struct Exporter<'s> {
    sets: &'s [SidecarSet],
    set: &'s SidecarSet,
    containers: Vec<&'s SetContainer>,
    /// The sets listed after this one that may select the same pods.
    later: Vec<&'s SidecarSet>,
    placement: Placement,
    refusals: Vec<Refusal>,
}

impl<'s> Exporter<'s> {
    fn new(
        sets: &'s [SidecarSet],
        index: usize,
        known: &KnownSidecars,
    ) -> Result<Self, Vec<Refusal>> {
        let set = &sets[index];
        let shares_pods = |other: &SidecarSet| {
            namespaces_overlap(&set.namespaces, &other.namespaces)
                && !disjoint(&set.selector, &other.selector)
        };
        let mut exporter = Exporter {
            sets,
            set,
            containers: set.all_containers().collect(),
            later: sets[index + 1..]
                .iter()
                .filter(|o| shares_pods(o))
                .collect(),
            placement: Placement {
                early: Vec::new(),
                rest: Vec::new(),
                post: Vec::new(),
            },
            refusals: Vec::new(),
        };
        exporter.check_fields();
        exporter.check_rules();
        match exporter.place(known) {
            Ok(placement) => exporter.placement = placement,
            Err((field, reason)) => exporter.refuse(field, reason),
        }
        if !exporter.placement.early.is_empty()
            && let Some(earlier) = sets[..index].iter().find(|o| shares_pods(o))
        {
            exporter.refuse(
                "after",
                format!(
                    "puts containers before the pod's init containers, and sidecar set {:?}, listed before it, may inject into the same pods; the API server runs MutatingAdmissionPolicies in no fixed order, so where {:?} puts its containers would depend on which runs first. List {:?} before {:?}",
                    earlier.name, earlier.name, set.name, earlier.name
                ),
            );
        }
        if exporter.refusals.is_empty() {
            Ok(exporter)
        } else {
            Err(exporter.refusals)
        }
    }

    fn refuse(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.refusals.push(Refusal {
            set: self.set.name.clone(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Where a container is in the settings: `initContainers[0]`, `containers[1]`.
    fn field_of(&self, i: usize) -> String {
        let inits = self.set.init_containers.get().map_or(0, Vec::len);
        if i < inits {
            format!("initContainers[{i}]")
        } else {
            format!("containers[{}]", i - inits)
        }
    }

    fn check_fields(&mut self) {
        for i in 0..self.containers.len() {
            if self.containers[i]
                .canary
                .as_ref()
                .is_some_and(|k| k.percent.is_some())
            {
                self.refuse(
                    format!("{}.canary.percent", self.field_of(i)),
                    "a percent canary picks pods by a hash of the pod's name (or, for a workload's pod, of the admission request's uid), and CEL has no hash function; give the canary a selector instead",
                );
            }
        }
        let keys: Vec<String> = self
            .set
            .pod_annotations
            .keys()
            .filter(|k| keys::in_vocabulary(k))
            .cloned()
            .collect();
        for key in keys {
            self.refuse(
                format!("podAnnotations[{key:?}]"),
                "an annotation of the sidecar vocabulary changes the types or the start order of the pod's containers, which the injector then follows and the exported policy cannot compute",
            );
        }
        let others: Vec<(String, String)> = self
            .sets
            .iter()
            .filter(|o| o.name != self.set.name)
            .flat_map(|o| {
                o.all_containers()
                    .map(|c| (o.name.clone(), c.name().to_string()))
            })
            .collect();
        for (k, t) in self.set.transfer_env.iter().enumerate() {
            if let Some((other, _)) = others.iter().find(|(_, n)| *n == t.source_container) {
                let reason = format!(
                    "the source container is one sidecar set {other:?} injects; whether the variable is there would depend on which policy the API server runs first"
                );
                self.refuse(format!("transferEnv[{k}].sourceContainer"), reason);
            }
        }
    }

    /// The rules the exported policy can follow: the set's own containers among themselves,
    /// or before the pod's init containers (`{type: Init}`).
    fn check_rules(&mut self) {
        let own = |s: &ContainerSelector, names: &[&str]| {
            s.name
                .as_deref()
                .is_some_and(|n| !n.contains(['*', '?']) && names.contains(&n))
        };
        let names: Vec<&str> = self.containers.iter().map(|c| c.name()).collect();
        let mut refusals = Vec::new();
        for (i, rule) in self.set.after.iter().enumerate() {
            if !own(&rule.before, &names) {
                refusals.push((
                    format!("after[{i}].before"),
                    "the exported policy places only the set's own containers: name one of them"
                        .to_string(),
                ));
            }
            let init_only = rule.after
                == ContainerSelector {
                    lifecycle: Some(LifecycleType::Init),
                    ..Default::default()
                };
            if !init_only && !own(&rule.after, &names) {
                refusals.push((
                    format!("after[{i}].after"),
                    "selects the pod's own containers by name, image or a type other than Init; the exported policy places the set's containers before the pod's init containers ({type: Init}) or among themselves, nothing else".to_string(),
                ));
            }
        }
        for (field, reason) in refusals {
            self.refuse(field, reason);
        }
    }

    /// Asks the injector where the set's containers go.
    /// A refusal says the field and why.
    fn place(&self, known: &KnownSidecars) -> Result<Placement, (String, String)> {
        let probed = |with_init| {
            probe(self.set, known, with_init).map_err(|e| ("containers".to_string(), e))
        };
        let (alone, with_init) = (probed(false)?, probed(true)?);
        let index = |name: &str| self.containers.iter().position(|c| c.name() == name);
        let order = |names: &[String]| names.iter().filter_map(|n| index(n)).collect::<Vec<_>>();
        let split = with_init.0.iter().position(|n| n == PROBE_INIT).ok_or((
            "containers".to_string(),
            "the probe's init container is gone".to_string(),
        ))?;
        let early = order(&with_init.0[..split]);
        let rest = order(&with_init.0[split + 1..]);
        let post = order(&alone.1);
        // A post-sidecar the known-sidecar list calls a sidecar is started before the app
        // containers by the injector: not at the end, where the policy puts post-sidecars.
        let app_at = alone.1.iter().position(|n| n == PROBE_APP);
        if let Some(first) = alone.1.iter().position(|n| index(n).is_some())
            && app_at.is_some_and(|a| first < a)
        {
            let name = &alone.1[first];
            let field = index(name).map_or("containers".into(), |i| {
                format!("{}.type", self.field_of(i))
            });
            return Err((
                field,
                format!(
                    "the injector starts post-sidecar {name:?} before the app containers (the known-sidecar list makes it a sidecar by its name or image), which the exported policy cannot reproduce; give it another name or type"
                ),
            ));
        }
        // The set's own order must hold in both probes: the policy writes it once.
        let alone_inits = order(&alone.0);
        let keeps = |part: &[usize]| {
            part.windows(2).all(|w| {
                alone_inits.iter().position(|&x| x == w[0])
                    < alone_inits.iter().position(|&x| x == w[1])
            })
        };
        if !keeps(&early) || !keeps(&rest) || early.len() + rest.len() != alone_inits.len() {
            return Err((
                "after".into(),
                "gives the set's containers an order that depends on the pod's init containers, which the exported policy cannot reproduce"
                    .into(),
            ));
        }
        Ok(Placement { early, rest, post })
    }

    fn export(self, options: &ExportOptions) -> Result<ExportedSet, Vec<Refusal>> {
        let revision = self.set.revision().map_err(|e| {
            vec![Refusal {
                set: self.set.name.clone(),
                field: "name".into(),
                reason: e.to_string(),
            }]
        })?;
        let name = format!("{}{}", options.name_prefix, self.set.name);
        let mut conditions = options.match_conditions.clone();
        conditions.extend(self.match_conditions());
        let mut constraints = json!({"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]});
        if self.set.selector != LabelSelector::default() {
            constraints["objectSelector"] =
                serde_json::to_value(&self.set.selector).unwrap_or_default();
        }
        let variables: Vec<Value> = self
            .variables()
            .into_iter()
            .map(|(name, expression)| json!({"name": name, "expression": expression}))
            .collect();
        let metadata = json!({
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "sidecarctl"},
            "annotations": {SET_REVISION: revision},
        });
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": metadata,
            "spec": {
                "failurePolicy": options.failure_policy,
                // Another policy or webhook that changes the pod afterwards runs this one
                // again; the match conditions make it do nothing the second time.
                "reinvocationPolicy": "IfNeeded",
                "matchConstraints": constraints,
                "matchConditions": conditions,
                "variables": variables,
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": self.patch(&revision)}}],
            },
        });
        let mut binding_spec = json!({"policyName": name});
        let mut resources = Map::new();
        if let Some(s) = &options.namespace_selector {
            resources.insert("namespaceSelector".into(), s.clone());
        }
        if let Some(s) = &options.object_selector {
            resources.insert("objectSelector".into(), s.clone());
        }
        if !resources.is_empty() {
            binding_spec["matchResources"] = Value::Object(resources);
        }
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": metadata,
            "spec": binding_spec,
        });
        Ok(ExportedSet {
            set: self.set.name.clone(),
            revision,
            policy,
            binding,
        })
    }

    /// Which pods: the set's namespaces, not opted out, none of its containers there yet.
    fn match_conditions(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if !self.set.namespaces.is_empty() {
            let alternatives: Vec<String> =
                self.set.namespaces.iter().map(|p| glob_regex(p)).collect();
            out.push(json!({
                "name": "in-the-sets-namespaces",
                "expression": format!("request.namespace.matches({})", q(&format!("^({})$", alternatives.join("|")))),
            }));
        }
        let opted_out = [keys::INJECT.to_string(), format!("{}{}", keys::INJECT_PREFIX, self.set.name)]
            .iter()
            .map(|k| format!("({k} in object.metadata.annotations && object.metadata.annotations[{k}].trim().lowerAscii() == 'false')", k = q(k)))
            .collect::<Vec<_>>()
            .join(" || ");
        out.push(json!({
            "name": "not-opted-out",
            "expression": format!("!has(object.metadata.annotations) || !({opted_out})"),
        }));
        let names = list_of_strings(self.containers.iter().map(|c| c.name()));
        out.push(json!({
            "name": "not-injected-yet",
            "expression": format!(
                "!object.spec.containers.exists(c, c.name in {names}) && !(has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name in {names}))"
            ),
        }));
        out
    }

    /// The later sets already in the pod, and the names of what they add.
    fn later_names(&self, of: impl Fn(&SidecarSet) -> Vec<String>) -> String {
        let own = of(self.set);
        let entries: Vec<String> = self
            .later
            .iter()
            .map(|t| {
                let names: Vec<String> = of(t).into_iter().filter(|n| !own.contains(n)).collect();
                format!(
                    "{}: dyn({})",
                    q(&t.name),
                    list_of_strings(names.iter().map(String::as_str))
                )
            })
            .collect();
        format!(
            "variables.later.map(t, {{{}}}[t]).flatten()",
            entries.join(", ")
        )
    }

    fn variables(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        let mut add = |name: &str, expression: String| v.push((name.to_string(), expression));
        let later = list_of_strings(self.later.iter().map(|t| t.name.as_str()));
        add(
            "later",
            format!(
                "{later}.filter(t, has(object.metadata.annotations) && ({} + t) in object.metadata.annotations)",
                q(keys::INJECTED_PREFIX)
            ),
        );
        let init_list = |s: &SidecarSet| {
            s.all_containers()
                .filter(|c| c.lifecycle() != LifecycleType::PostSidecar)
                .map(|c| c.name().to_string())
                .collect()
        };
        let post_list = |s: &SidecarSet| {
            s.all_containers()
                .filter(|c| c.lifecycle() == LifecycleType::PostSidecar)
                .map(|c| c.name().to_string())
                .collect()
        };
        let volume_names = |s: &SidecarSet| {
            s.volumes()
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        };
        let secret_names = |s: &SidecarSet| s.image_pull_secrets.clone();
        let lists: [(&str, &str, String); 4] = [
            ("inits", "initContainers", self.later_names(init_list)),
            ("apps", "containers", self.later_names(post_list)),
            ("volumes", "volumes", self.later_names(volume_names)),
            (
                "secrets",
                "imagePullSecrets",
                self.later_names(secret_names),
            ),
        ];
        for (var, field, later_names) in lists {
            let at = |s: &str| format!("{var}{s}");
            add(
                var,
                format!("has(object.spec.{field}) ? object.spec.{field} : []"),
            );
            add(
                &at("OfLaterSets"),
                format!(
                    "lists.range(size(variables.{var})).filter(i, variables.{var}[i].name in {later_names})"
                ),
            );
            add(
                &at("At"),
                format!(
                    "size(variables.{var}OfLaterSets) > 0 ? variables.{var}OfLaterSets[0] : size(variables.{var})"
                ),
            );
        }
        if !self.placement.early.is_empty() {
            add(
                "regularInits",
                "lists.range(size(variables.inits)).filter(i, !has(variables.inits[i].restartPolicy) || variables.inits[i].restartPolicy != 'Always')".into(),
            );
            add(
                "earlyAt",
                "size(variables.regularInits) > 0 && variables.regularInits[0] < variables.initsAt ? variables.regularInits[0] : variables.initsAt".into(),
            );
        }
        // Where each transferred variable is in the pod (a JSON pointer, once the set's
        // containers are in): the patch copies it, since the API server's CEL cannot put a
        // Kubernetes type it read from the object into a patch value.
        let source = |list: &str, field: &str, shift: String| {
            format!(
                "lists.range(size({list})).filter(i, {list}[i].name == SRC && has({list}[i].env) && {list}[i].env.exists(e, e.name == NAME)).map(i, \"/spec/{field}/\" + string({shift}) + \"/env/\" + string(lists.range(size({list}[i].env)).filter(j, {list}[i].env[j].name == NAME)[0]))"
            )
        };
        for (k, t) in self.set.transfer_env.iter().enumerate() {
            let inits = source("variables.inits", "initContainers", self.init_shift("i"));
            let apps = source("object.spec.containers", "containers", self.app_shift("i"));
            add(
                &format!("transfer{k}"),
                format!("{inits} + {apps}")
                    .replace("SRC", &q(&t.source_container))
                    .replace("NAME", &q(&t.env_name)),
            );
        }
        if self.set.share_volumes {
            let others = list_of_strings(
                self.sets
                    .iter()
                    .filter(|o| o.name != self.set.name)
                    .flat_map(|o| o.all_containers())
                    .filter(|c| c.lifecycle() == LifecycleType::PostSidecar)
                    .map(|c| c.name()),
            );
            // The app containers' mounts as [container, mount] pairs, and of those the
            // first of each name and of each path.
            add(
                "appMounts",
                format!(
                    "lists.range(size(object.spec.containers)).filter(j, !(object.spec.containers[j].name in {others}) && has(object.spec.containers[j].volumeMounts)).map(j, lists.range(size(object.spec.containers[j].volumeMounts)).map(m, [j, m])).flatten()"
                ),
            );
            let (my, mx) = (
                app_mount("variables.appMounts[y]"),
                app_mount("variables.appMounts[x]"),
            );
            add(
                "shared",
                format!(
                    "lists.range(size(variables.appMounts)).filter(x, !lists.range(x).exists(y, {my}.name == {mx}.name || {my}.mountPath == {mx}.mountPath)).map(x, variables.appMounts[x])"
                ),
            );
        }
        v
    }

    /// The JSON patch: each part inserted at its place, in reverse order at one index so
    /// that it ends in the set's order. The rest goes in before the early part, whose index
    /// is not after it.
    fn patch(&self, revision: &str) -> String {
        let mut ops: Vec<String> = Vec::new();
        let inserted = |at: &str,
                        field: &str,
                        items: Vec<(Option<String>, String)>|
         -> Vec<String> {
            items
                .into_iter()
                .rev()
                .map(|(condition, value)| {
                    let op = format!(
                        "JSONPatch{{op: \"add\", path: \"/spec/{field}/\" + string(variables.{at}), value: {value}}}"
                    );
                    match condition {
                        Some(c) => format!("({c} ? [{op}] : [])"),
                        None => format!("[{op}]"),
                    }
                })
                .collect()
        };
        let list_exists = |field: &str| {
            format!(
                "(has(object.spec.{field}) ? [] : [JSONPatch{{op: \"add\", path: \"/spec/{field}\", value: []}}])"
            )
        };
        // Each part's containers, at the index each ends at, and what is copied into them
        // once they are all in.
        let mut copies: Vec<String> = Vec::new();
        let mut containers = |part: &[usize], field: &str, first: String| {
            part.iter()
                .enumerate()
                .map(|(k, &i)| {
                    let target = format!("\"/spec/{field}/\" + string({first} + {k})");
                    let (value, copy) = self.container(self.containers[i], &target);
                    copies.extend(copy);
                    (None, value)
                })
                .collect::<Vec<(Option<String>, String)>>()
        };
        let early = self.placement.early.len();
        let rest = containers(
            &self.placement.rest,
            "initContainers",
            format!("variables.initsAt + {early}"),
        );
        let early = containers(
            &self.placement.early,
            "initContainers",
            "variables.earlyAt".into(),
        );
        let post = containers(
            &self.placement.post,
            "containers",
            "variables.appsAt".into(),
        );
        if !early.is_empty() || !rest.is_empty() {
            ops.push(list_exists("initContainers"));
            ops.extend(inserted("initsAt", "initContainers", rest));
            ops.extend(inserted("earlyAt", "initContainers", early));
        }
        if !post.is_empty() {
            ops.extend(inserted("appsAt", "containers", post));
        }
        ops.extend(copies);
        let volumes: Vec<(Option<String>, String)> = self
            .set
            .volumes()
            .iter()
            .map(|v| {
                let name = v.get("name").cloned().unwrap_or_default();
                (
                    Some(format!(
                        "!variables.volumes.exists(v, v.name == {})",
                        literal(&name)
                    )),
                    literal(v),
                )
            })
            .collect();
        if !volumes.is_empty() {
            ops.push(list_exists("volumes"));
            ops.extend(inserted("volumesAt", "volumes", volumes));
        }
        // The injector adds a secret once, however often the set names it.
        let mut named = std::collections::BTreeSet::new();
        let secrets: Vec<(Option<String>, String)> = self
            .set
            .image_pull_secrets
            .iter()
            .filter(|s| named.insert(s.as_str()))
            .map(|s| {
                (
                    Some(format!("!variables.secrets.exists(s, s.name == {})", q(s))),
                    literal(&json!({"name": s})),
                )
            })
            .collect();
        if !secrets.is_empty() {
            ops.push(list_exists("imagePullSecrets"));
            ops.extend(inserted("secretsAt", "imagePullSecrets", secrets));
        }
        ops.push("(has(object.metadata.annotations) ? [] : [JSONPatch{op: \"add\", path: \"/metadata/annotations\", value: {}}])".into());
        for (k, v) in &self.set.pod_annotations {
            ops.push(format!(
                "(has(object.metadata.annotations) && {key} in object.metadata.annotations ? [] : [JSONPatch{{op: \"add\", path: {path}, value: {value}}}])",
                key = q(k),
                path = q(&format!("/metadata/annotations/{}", pointer_segment(k))),
                value = q(v)
            ));
        }
        let key = format!("{}{}", keys::INJECTED_PREFIX, self.set.name);
        ops.push(format!(
            "[JSONPatch{{op: \"add\", path: {}, value: {}}}]",
            q(&format!("/metadata/annotations/{}", pointer_segment(&key))),
            q(revision)
        ));
        ops.join(" +\n")
    }

    /// One injected container as CEL, for the container at `target` (a CEL string): the
    /// set's spec as written, with what the injector sets (the sidecar's restart policy,
    /// the canary image); and the patch operations that copy into it the app's variables
    /// it transfers and the app's mounts it shares, as the injector appends them.
    fn container(&self, c: &SetContainer, target: &str) -> (String, Vec<String>) {
        let mut fields: BTreeMap<&str, String> = c
            .spec
            .iter()
            .map(|(k, v)| (k.as_str(), literal(v)))
            .collect();
        if c.lifecycle() == LifecycleType::Sidecar {
            fields.insert("restartPolicy", q("Always"));
        }
        if let Some(canary) = &c.canary
            && let Some(selector) = &canary.selector
        {
            fields.insert(
                "image",
                format!(
                    "({}) ? {} : {}",
                    selector_cel(selector),
                    q(&canary.image),
                    q(c.image())
                ),
            );
        }
        let list = |key: &str| match c.spec.get(key) {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => Some(items.clone()),
            Some(_) => None,
        };
        let has = |items: &[Value], field: &str, value: &str| {
            items
                .iter()
                .any(|x| x.get(field).and_then(Value::as_str) == Some(value))
        };
        let mut copies = Vec::new();
        if let Some(env) = list("env") {
            // Transfer k adds its variable unless the container has one of that name, or an
            // earlier transfer of that name found one.
            for (k, t) in self.set.transfer_env.iter().enumerate() {
                if has(&env, "name", &t.env_name) {
                    continue;
                }
                let found = |k: usize| format!("size(variables.transfer{k}) > 0");
                let mut condition = vec![found(k)];
                condition.extend(
                    self.set.transfer_env[..k]
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.env_name == t.env_name)
                        .map(|(j, _)| format!("!({})", found(j))),
                );
                copies.push(format!(
                    "({} ? [JSONPatch{{op: \"copy\", from: variables.transfer{k}[0], path: {target} + \"/env/-\"}}] : [])",
                    condition.join(" && ")
                ));
            }
            if !copies.is_empty() {
                fields.insert("env", literal(&Value::Array(env)));
            }
        }
        if self.set.share_volumes
            && let Some(mounts) = list("volumeMounts")
        {
            let names = list_of_strings(
                mounts
                    .iter()
                    .filter_map(|m| m.get("name").and_then(Value::as_str)),
            );
            let paths = list_of_strings(
                mounts
                    .iter()
                    .filter_map(|m| m.get("mountPath").and_then(Value::as_str)),
            );
            let mount = app_mount("p");
            copies.push(format!(
                "variables.shared.filter(p, !({mount}.name in {names}) && !({mount}.mountPath in {paths})).map(p, JSONPatch{{op: \"copy\", from: \"/spec/containers/\" + string({}) + \"/volumeMounts/\" + string(p[1]), path: {target} + \"/volumeMounts/-\"}})",
                self.app_shift("p[0]")
            ));
            fields.insert("volumeMounts", literal(&Value::Array(mounts)));
        }
        (cel_map(fields.iter().map(|(k, v)| (*k, v.clone()))), copies)
    }

    /// Where init container `i` of the pod is once the set's are in: the rest went in at
    /// `initsAt`, then the early part at `earlyAt` (not after it).
    fn init_shift(&self, i: &str) -> String {
        let mut out = i.to_string();
        let (early, rest) = (self.placement.early.len(), self.placement.rest.len());
        if rest > 0 {
            out.push_str(&format!(" + ({i} >= variables.initsAt ? {rest} : 0)"));
        }
        if early > 0 {
            out.push_str(&format!(" + ({i} >= variables.earlyAt ? {early} : 0)"));
        }
        out
    }

    /// Where app container `j` of the pod is once the set's post-sidecars are in.
    fn app_shift(&self, j: &str) -> String {
        match self.placement.post.len() {
            0 => j.to_string(),
            post => format!("{j} + ({j} >= variables.appsAt ? {post} : 0)"),
        }
    }
}

/// The policy's annotation naming the set's revision, for `kubectl get -o yaml` readers.
pub const SET_REVISION: &str = "sidecars.dev/set-revision";

const PROBE_INIT: &str = "sidecars-dev-probe-init";
const PROBE_APP: &str = "sidecars-dev-probe-app";

/// The injector's answer for a pod of one app container and, `with_init`, one init
/// container: the names of `initContainers` and of `containers` it writes.
fn probe(
    set: &SidecarSet,
    known: &KnownSidecars,
    with_init: bool,
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut everywhere = set.clone();
    everywhere.selector = LabelSelector::default();
    everywhere.namespaces.clear();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": PROBE_APP, "image": "registry.invalid/probe"}]}});
    if with_init {
        pod["spec"]["initContainers"] =
            json!([{"name": PROBE_INIT, "image": "registry.invalid/probe"}]);
    }
    let (pod, _) = inject_value(&pod, std::slice::from_ref(&everywhere), "", "probe", known)?;
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .map(String::from)
            .collect()
    };
    Ok((names("initContainers"), names("containers")))
}

/// Why the injector's webhook and the exported policies would store a pod differently:
/// what CEL does not do, by design. The e2e differential leaves these pods out and counts
/// them; any other difference is a defect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOnly {
    /// The webhook makes the pod's legacy sidecars native before injecting; the lifecycle
    /// policy does that, and an exported set leaves them as they are.
    ConvertsLegacySidecars,
    /// The webhook refuses to create a pod carrying an older revision of a set; a
    /// MutatingAdmissionPolicy cannot refuse.
    RefusesOutdated { set: String },
    /// The pod's own `lifecycle.sidecars.dev/` or `after.sidecars.dev/` annotations, which
    /// the webhook follows when it places a set's containers.
    OrderedByThePod,
    /// The pod's own containers are not in their start order (a mesh's init step after its
    /// proxy): the webhook puts the whole pod in order as it injects.
    OutOfStartOrder,
    /// The known-sidecar list ties one of the pod's own containers to one a set injects
    /// (a mesh's init step and its proxy): the webhook orders them as a pair.
    TiedToThePodsOwn,
    /// The pod already has a set listed after one that injects: an exported policy takes
    /// its containers for that set's, injected in the same request, and goes before them.
    CarriesALaterSet { set: String },
}

impl fmt::Display for WebhookOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookOnly::ConvertsLegacySidecars => {
                f.write_str("the webhook converts the pod's legacy sidecars first")
            }
            WebhookOnly::RefusesOutdated { set } => write!(
                f,
                "the webhook refuses a pod with an older revision of set {set:?}"
            ),
            WebhookOnly::OrderedByThePod => {
                f.write_str("the pod's own start-order annotations place the set's containers")
            }
            WebhookOnly::OutOfStartOrder => {
                f.write_str("the pod's own containers are not in their start order")
            }
            WebhookOnly::TiedToThePodsOwn => {
                f.write_str("the known-sidecar list ties a set's container to one of the pod's own")
            }
            WebhookOnly::CarriesALaterSet { set } => write!(
                f,
                "the pod already carries set {set:?}, listed after one that injects"
            ),
        }
    }
}

/// What makes the webhook treat this pod differently from the exported policies (empty
/// when they store the same pod).
pub fn webhook_only(
    object: &Value,
    settings: &Settings,
    namespace: &str,
) -> Result<Vec<WebhookOnly>, String> {
    let known = settings.known_sidecars.resolve();
    let Some(model) =
        PodModel::from_json(&object.to_string(), &known).map_err(|e| e.to_string())?
    else {
        return Ok(Vec::new());
    };
    let sets = &settings.sidecar_sets;
    let outcomes = survey(&model, sets, namespace).map_err(|e| e.to_string())?;
    let mut out: Vec<WebhookOnly> = outcomes
        .iter()
        .filter_map(|o| match o {
            SetOutcome::Outdated { set, .. } => {
                Some(WebhookOnly::RefusesOutdated { set: set.clone() })
            }
            _ => None,
        })
        .collect();
    let injecting: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            SetOutcome::Injected { set, .. } => Some(set.as_str()),
            _ => None,
        })
        .collect();
    let Some(first) = injecting.first() else {
        return Ok(out);
    };
    if model.containers.iter().any(|c| model.converts(c)) {
        out.push(WebhookOnly::ConvertsLegacySidecars);
    }
    if model
        .workload
        .annotations
        .keys()
        .any(|k| k.starts_with(keys::LIFECYCLE_PREFIX) || k.starts_with(keys::AFTER_PREFIX))
    {
        out.push(WebhookOnly::OrderedByThePod);
    }
    let graph = crate::ordering::StartGraph::build(&model, []);
    if let Ok(order) = graph.order()
        && crate::ordering::by_list(&model, &order) != crate::ordering::spec_order(&model)
    {
        out.push(WebhookOnly::OutOfStartOrder);
    }
    let first_at = sets.iter().position(|s| s.name == *first).unwrap_or(0);
    for set in &sets[first_at + 1..] {
        let present = outcomes
            .iter()
            .any(|o| matches!(o, SetOutcome::Present { set: s } if *s == set.name));
        let recorded = model.workload.annotations.contains_key(&format!(
            "{}{}",
            keys::INJECTED_PREFIX,
            set.name
        ));
        if present && recorded {
            out.push(WebhookOnly::CarriesALaterSet {
                set: set.name.clone(),
            });
        }
    }
    // The pairs the known-sidecar list makes in the injected pod, one of the pod's own and
    // one injected.
    let (pod, _) = inject_value(object, sets, namespace, "probe", &known)?;
    if let Some(m) = PodModel::from_json(&pod.to_string(), &known).map_err(|e| e.to_string())? {
        let is_own = |i: usize| container_named(object, &m.containers[i].name).is_some();
        if m.init_steps_before
            .iter()
            .any(|r| is_own(r.step) != is_own(r.sidecar))
        {
            out.push(WebhookOnly::TiedToThePodsOwn);
        }
    }
    Ok(out)
}

/// The mount a `[container, mount]` pair names.
fn app_mount(pair: &str) -> String {
    format!("object.spec.containers[{pair}[0]].volumeMounts[{pair}[1]]")
}

/// Whether the set's canary selector picks the pod, as CEL over the pod's labels.
fn selector_cel(s: &LabelSelector) -> String {
    let labels = "object.metadata.labels";
    let has = |k: &str| format!("(has({labels}) && {} in {labels})", q(k));
    let mut terms: Vec<String> = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        terms.push(format!("({} && {labels}[{}] == {})", has(k), q(k), q(v)));
    }
    for r in s.match_expressions.iter().flatten() {
        let values = list_of_strings(r.values.iter().flatten().map(String::as_str));
        let is_in = format!("({} && {labels}[{}] in {values})", has(&r.key), q(&r.key));
        terms.push(match r.operator.as_str() {
            "In" => is_in,
            "NotIn" => format!("!{is_in}"),
            "Exists" => has(&r.key),
            _ => format!("!{}", has(&r.key)),
        });
    }
    if terms.is_empty() {
        "true".into()
    } else {
        terms.join(" && ")
    }
}

/// A namespace glob (`*` any run, `?` one character) as an RE2 alternative.
fn glob_regex(pattern: &str) -> String {
    let mut out = String::new();
    for ch in pattern.chars() {
        match ch {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c if c.is_ascii_alphanumeric() => out.push(c),
            c => {
                out.push('\\');
                out.push(c);
            }
        }
    }
    out
}

/// A CEL string literal. JSON's escapes are CEL's too.
fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn list_of_strings<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.map(q).collect();
    format!("[{}]", items.join(", "))
}

/// A JSON value as a CEL literal. The API server's CEL wants literal maps and lists of one
/// element type, so map values are `dyn`, and so are the items of a list of mixed kinds.
fn literal(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => format!("{:?}", n.as_f64().unwrap_or_default()),
        Value::String(s) => q(s),
        Value::Array(items) => {
            let one_kind = items.iter().all(Value::is_string) || items.iter().all(Value::is_object);
            let items: Vec<String> = items
                .iter()
                .map(|i| {
                    if one_kind {
                        literal(i)
                    } else {
                        format!("dyn({})", literal(i))
                    }
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => cel_map(map.iter().map(|(k, v)| (k.as_str(), literal(v)))),
    }
}

/// A CEL map literal of CEL expressions, each value `dyn`.
fn cel_map<'k>(entries: impl Iterator<Item = (&'k str, String)>) -> String {
    let body: Vec<String> = entries
        .map(|(k, v)| format!("{}: dyn({v})", q(k)))
        .collect();
    format!("{{{}}}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::selector_matches;

    fn settings(sets: Value) -> Settings {
        serde_json::from_value(json!({"sidecarSets": sets})).unwrap()
    }

    #[test]
    fn a_percent_canary_is_refused_by_its_field() {
        let s = settings(
            json!([{"name": "mesh", "containers": [{"name": "proxy", "image": "p:1",
            "canary": {"image": "p:2", "percent": 10}}]}]),
        );
        let out = export(&s, &ExportOptions::default()).unwrap();
        let refusals = out[0].as_ref().unwrap_err();
        assert_eq!(refusals.len(), 1);
        assert!(
            refusals[0].to_string().starts_with(
                "sidecarSets \"mesh\": containers[0].canary.percent: a percent canary"
            ),
            "{}",
            refusals[0]
        );
    }

    #[test]
    fn a_rule_on_the_pods_own_containers_is_refused() {
        let s = settings(
            json!([{"name": "mesh", "containers": [{"name": "proxy", "image": "p:1"}],
            "after": [{"before": {"name": "proxy"}, "after": {"name": "vault-*"}}]}]),
        );
        let out = export(&s, &ExportOptions::default()).unwrap();
        let refusals = out[0].as_ref().unwrap_err();
        assert_eq!(refusals[0].field, "after[0].after");
    }

    #[test]
    fn an_early_set_after_another_that_shares_its_pods_is_refused() {
        let s = settings(json!([
            {"name": "logs", "containers": [{"name": "shipper", "image": "l:1"}]},
            {"name": "mesh", "containers": [{"name": "proxy", "image": "p:1"}],
             "after": [{"before": {"name": "proxy"}, "after": {"type": "Init"}}]}]));
        let out = export(&s, &ExportOptions::default()).unwrap();
        assert!(out[0].is_ok());
        let refusals = out[1].as_ref().unwrap_err();
        assert!(
            refusals[0].reason.contains("List \"mesh\" before \"logs\""),
            "{}",
            refusals[0]
        );
    }

    #[test]
    fn the_placement_comes_from_the_injector() {
        // The example sets' shape: a mesh before the pod's init steps, then a log shipper.
        let s = settings(json!([
            {"name": "mesh",
             "initContainers": [{"name": "istio-init", "type": "Init", "image": "docker.io/istio/proxyv2:1.24.1"}],
             "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1"}],
             "after": [{"before": {"name": "istio-proxy"}, "after": {"type": "Init"}}]},
            {"name": "logs", "containers": [{"name": "fluent-bit", "image": "fluent-bit:3"}]}]));
        let known = s.known_sidecars.resolve();
        let mesh = Exporter::new(&s.sidecar_sets, 0, &known).unwrap();
        let names = |part: &[usize]| {
            part.iter()
                .map(|&i| mesh.containers[i].name())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&mesh.placement.early), ["istio-init", "istio-proxy"]);
        assert!(mesh.placement.rest.is_empty());
        let logs = Exporter::new(&s.sidecar_sets, 1, &known).unwrap();
        assert_eq!(logs.placement.rest, [0]);
        assert!(logs.later.is_empty() && mesh.later.len() == 1);
    }

    #[test]
    fn literals_and_globs() {
        assert_eq!(
            literal(&json!({"a": [1, "x\"y", true, null, 1.5]})),
            r#"{"a": dyn([dyn(1), dyn("x\"y"), dyn(true), dyn(null), dyn(1.5)])}"#
        );
        assert_eq!(glob_regex("pay-*"), "pay\\-.*");
        assert_eq!(glob_regex("t?am.b"), "t.am\\.b");
        assert_eq!(pointer_segment("a/b~c"), "a~1b~0c");
        let s: LabelSelector = serde_json::from_value(json!({"matchLabels": {"a": "b"},
            "matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["x"]}]}))
        .unwrap();
        assert_eq!(
            selector_cel(&s),
            r#"((has(object.metadata.labels) && "a" in object.metadata.labels) && object.metadata.labels["a"] == "b") && !((has(object.metadata.labels) && "t" in object.metadata.labels) && object.metadata.labels["t"] in ["x"])"#
        );
        // The model's own matcher agrees on what the expression says.
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        assert!(selector_matches(&s, &labels));
    }
}
