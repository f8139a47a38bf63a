//! A set's current revision brought to a pod injected with an older one. The revision is a
//! hash, so what changed is read from the pod itself: its containers of the set against
//! what the set injects now into the same pod without them. Where only images differ the
//! pod is updated in place (Kubernetes lets a running pod's container images change, and the
//! kubelet restarts just that container; a native sidecar is an init container); anything
//! else reaches a pod only by recreating it.

use super::edit::{container_named, inject_value};
use super::set::SidecarSet;
use super::settings::Settings;
use crate::json::pointer_segment;
use crate::kube::{Quantity, keys};
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt;

/// One image of the set's containers, as it is in the pod and as the set injects it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageChange {
    pub container: String,
    /// `initContainers` or `containers`.
    pub list: String,
    pub index: usize,
    pub from: String,
    pub to: String,
}

/// What a rollout does to one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "step",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RolloutStep {
    /// The pod carries the set's current revision.
    Current,
    /// The set did not inject this pod.
    NotInjected,
    /// Only images differ (or nothing but the revision): a patch of the images and the
    /// revision, each guarded by a `test` of what the plan read.
    InPlace {
        recorded: String,
        revision: String,
        images: Vec<ImageChange>,
    },
    /// Something other than an image differs: the pod must be recreated (evicted, so that
    /// its disruption budget holds), and the injector injects the current set into the new one.
    Recreate {
        recorded: String,
        revision: String,
        reasons: Vec<String>,
    },
}

impl fmt::Display for RolloutStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutStep::Current => f.write_str("at the current revision"),
            RolloutStep::NotInjected => f.write_str("not injected by this set"),
            RolloutStep::InPlace { images, .. } if images.is_empty() => {
                f.write_str("in place: only the revision annotation changes")
            }
            RolloutStep::InPlace { images, .. } => {
                let changes: Vec<String> = images
                    .iter()
                    .map(|c| format!("{} {} → {}", c.container, c.from, c.to))
                    .collect();
                write!(f, "in place: {}", changes.join(", "))
            }
            RolloutStep::Recreate { reasons, .. } => {
                write!(f, "recreate: {}", reasons.join("; "))
            }
        }
    }
}

impl RolloutStep {
    /// The JSON patch that brings the pod in place: a `test` of each image and of the
    /// recorded revision first, so that a pod changed since the plan is refused, not
    /// overwritten.
    pub fn patch(&self, set: &str) -> Option<Value> {
        let RolloutStep::InPlace {
            recorded,
            revision,
            images,
        } = self
        else {
            return None;
        };
        let mut ops = Vec::new();
        for c in images {
            let path = format!("/spec/{}/{}/image", c.list, c.index);
            ops.push(json!({"op": "test", "path": path, "value": c.from}));
            ops.push(json!({"op": "replace", "path": path, "value": c.to}));
        }
        let key = format!(
            "/metadata/annotations/{}",
            pointer_segment(&format!("{}{set}", keys::INJECTED_PREFIX))
        );
        ops.push(json!({"op": "test", "path": key, "value": recorded}));
        ops.push(json!({"op": "replace", "path": key, "value": revision}));
        Some(Value::Array(ops))
    }
}

/// What the rollout of set `set_name` does to `pod` (a stored Pod) in `namespace`.
pub fn plan(
    pod: &Value,
    settings: &Settings,
    set_name: &str,
    namespace: &str,
) -> Result<RolloutStep, String> {
    let set = settings
        .sidecar_sets
        .iter()
        .find(|s| s.name == set_name)
        .ok_or_else(|| format!("no sidecar set {set_name:?} in the settings"))?;
    let key = format!("{}{}", keys::INJECTED_PREFIX, set.name);
    let Some(recorded) = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(&key))
        .and_then(Value::as_str)
    else {
        return Ok(RolloutStep::NotInjected);
    };
    let revision = set.revision().map_err(|e| e.to_string())?;
    if recorded == revision {
        return Ok(RolloutStep::Current);
    }
    let (recorded, mut reasons) = (recorded.to_string(), Vec::new());
    let known = settings.known_sidecars.resolve();
    let wanted = reinjected(pod, set, namespace, &known)?;
    let Some(wanted) = wanted else {
        reasons.push(
            "the set no longer selects the pod (or the pod opts out); recreated, it gets none of the set's containers"
                .to_string(),
        );
        return Ok(RolloutStep::Recreate {
            recorded,
            revision,
            reasons,
        });
    };
    let mut images = Vec::new();
    for c in set.all_containers() {
        let name = c.name();
        let (Some((list, index, actual)), Some((_, _, expected))) =
            (container_named(pod, name), container_named(&wanted, name))
        else {
            reasons.push(format!("container {name:?} is new in the set"));
            continue;
        };
        if let Some(field) = differs(actual, expected, name) {
            reasons.push(field);
            continue;
        }
        let (from, to) = (str_at(actual, "image"), str_at(expected, "image"));
        if from != to {
            if c.canary.as_ref().is_some_and(|k| k.percent.is_some()) {
                reasons.push(format!(
                    "container {name:?} has a percent canary, which decides its image again when the pod is created"
                ));
                continue;
            }
            images.push(ImageChange {
                container: name.to_string(),
                list: list.to_string(),
                index,
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    }
    for volume in set.volumes() {
        let name = volume
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let in_pod = pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .and_then(|vs| vs.iter().find(|v| v["name"] == name));
        match in_pod {
            None => reasons.push(format!("volume {name:?} is new in the set")),
            Some(v) if differs(v, volume, name).is_some() => {
                reasons.push(format!("volume {name:?} changed"));
            }
            Some(_) => {}
        }
    }
    for (k, v) in &set.pod_annotations {
        let in_pod = pod.pointer("/metadata/annotations").and_then(|a| a.get(k));
        if in_pod.and_then(Value::as_str) != Some(v.as_str()) {
            reasons.push(format!("pod annotation {k:?} is new or changed"));
        }
    }
    Ok(if reasons.is_empty() {
        RolloutStep::InPlace {
            recorded,
            revision,
            images,
        }
    } else {
        RolloutStep::Recreate {
            recorded,
            revision,
            reasons,
        }
    })
}

/// The pod as the set injects it now: the set's containers and revision taken out, then the
/// injector's edit with this set alone. `None` when the set would not inject it.
fn reinjected(
    pod: &Value,
    set: &SidecarSet,
    namespace: &str,
    known: &crate::kube::KnownSidecars,
) -> Result<Option<Value>, String> {
    let mut bare = pod.clone();
    let names: Vec<&str> = set.all_containers().map(|c| c.name()).collect();
    for list in ["initContainers", "containers"] {
        if let Some(items) = bare
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        {
            items.retain(|c| !names.contains(&str_at(c, "name")));
        }
    }
    if let Some(a) = bare
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(&format!("{}{}", keys::INJECTED_PREFIX, set.name));
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("rollout");
    let (injected, outcomes) =
        inject_value(&bare, std::slice::from_ref(set), namespace, uid, known)?;
    let injects = outcomes
        .iter()
        .any(|o| matches!(o, super::SetOutcome::Injected { .. }));
    Ok(injects.then_some(injected))
}

fn str_at<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Where `actual` (as the API server stored it, defaults added) does not hold `expected`
/// (as the set writes it now), image aside; quantities compared by value.
fn differs(actual: &Value, expected: &Value, name: &str) -> Option<String> {
    fn walk(at: &str, actual: &Value, expected: &Value) -> Option<String> {
        match (actual, expected) {
            (Value::Object(a), Value::Object(e)) => e.iter().find_map(|(k, v)| {
                if at.is_empty() && k == "image" {
                    return None;
                }
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match a.get(k) {
                    Some(x) => walk(&here, x, v),
                    None if v.is_null() || v.as_array().is_some_and(Vec::is_empty) => None,
                    None => Some(here),
                }
            }),
            (Value::Array(a), Value::Array(e)) if a.len() == e.len() => a
                .iter()
                .zip(e)
                .enumerate()
                .find_map(|(i, (x, v))| walk(&format!("{at}[{i}]"), x, v)),
            (Value::String(a), Value::String(e)) if a != e => {
                match (Quantity::parse(a), Quantity::parse(e)) {
                    (Ok(x), Ok(y)) if x == y && at.contains("resources") => None,
                    _ => Some(at.to_string()),
                }
            }
            // A port of 15021 and one named "15021" are two things to the API server.
            _ if actual == expected => None,
            _ => Some(at.to_string()),
        }
    }
    walk("", actual, expected).map(|field| format!("{name}: {field} changed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(image: &str, args: &[&str]) -> Settings {
        serde_json::from_value(json!({"sidecarSets": [{"name": "mesh",
            "selector": {"matchLabels": {"mesh": "enabled"}},
            "containers": [{"name": "proxy", "image": image, "args": args,
                "resources": {"requests": {"cpu": "0.1", "memory": "64Mi"}}}],
            "volumes": [{"name": "envoy", "emptyDir": {}}]}]}))
        .unwrap()
    }

    /// The pod as stored: injected with `old`, then defaulted by the API server.
    fn stored(old: &Settings) -> Value {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "labels": {"mesh": "enabled"}},
            "spec": {"containers": [{"name": "app", "image": "shop:1"}]}});
        let known = old.known_sidecars.resolve();
        let mut pod = reinjected(&pod, &old.sidecar_sets[0], "shop", &known)
            .unwrap()
            .unwrap();
        let proxy = &mut pod["spec"]["initContainers"][0];
        proxy["imagePullPolicy"] = json!("IfNotPresent");
        proxy["terminationMessagePath"] = json!("/dev/termination-log");
        proxy["resources"]["requests"]["cpu"] = json!("100m");
        pod
    }

    #[test]
    fn an_image_only_change_is_in_place_with_tests() {
        let old = settings("proxy:1", &["run"]);
        let new = settings("proxy:2", &["run"]);
        let step = plan(&stored(&old), &new, "mesh", "shop").unwrap();
        let RolloutStep::InPlace {
            images,
            recorded,
            revision,
        } = &step
        else {
            panic!("{step}");
        };
        assert_eq!(images.len(), 1);
        assert_eq!(
            (images[0].list.as_str(), images[0].index),
            ("initContainers", 0)
        );
        assert_eq!(step.to_string(), "in place: proxy proxy:1 → proxy:2");
        let patch = step.patch("mesh").unwrap();
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/spec/initContainers/0/image", "value": "proxy:1"})
        );
        assert_eq!(
            patch[3]["path"],
            "/metadata/annotations/injected.sidecars.dev~1mesh"
        );
        assert_eq!(
            (&patch[2]["value"], &patch[3]["value"]),
            (&json!(recorded), &json!(revision))
        );
    }

    #[test]
    fn an_args_change_is_a_recreate_that_says_why() {
        let old = settings("proxy:1", &["run"]);
        let new = settings("proxy:2", &["run", "--debug"]);
        let step = plan(&stored(&old), &new, "mesh", "shop").unwrap();
        assert!(matches!(step, RolloutStep::Recreate { .. }), "{step}");
        assert_eq!(step.to_string(), "recreate: proxy: args changed");
    }

    #[test]
    fn the_current_revision_and_pods_the_set_never_injected_are_left() {
        let old = settings("proxy:1", &["run"]);
        assert_eq!(
            plan(&stored(&old), &old, "mesh", "shop").unwrap(),
            RolloutStep::Current
        );
        let mut bare = stored(&old);
        bare["metadata"]["annotations"] = json!({});
        assert_eq!(
            plan(&bare, &old, "mesh", "shop").unwrap(),
            RolloutStep::NotInjected
        );
        assert!(
            plan(&bare, &old, "logs", "shop")
                .unwrap_err()
                .contains("no sidecar set \"logs\"")
        );
    }

    #[test]
    fn a_new_volume_or_container_is_a_recreate() {
        let old = settings("proxy:1", &["run"]);
        let mut new = serde_json::to_value(settings("proxy:1", &["run"])).unwrap();
        new["sidecarSets"][0]["volumes"] =
            json!([{"name": "envoy", "emptyDir": {}}, {"name": "certs", "emptyDir": {}}]);
        new["sidecarSets"][0]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "agent", "image": "agent:1"}));
        let new: Settings = serde_json::from_value(new).unwrap();
        let step = plan(&stored(&old), &new, "mesh", "shop").unwrap();
        assert_eq!(
            step.to_string(),
            "recreate: container \"agent\" is new in the set; volume \"certs\" is new in the set"
        );
    }
}
