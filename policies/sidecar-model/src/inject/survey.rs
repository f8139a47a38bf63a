//! What the sets would do to a pod, without editing it: for the decision to inject, for
//! reports and for audits.

use super::set::{SetContainer, SidecarSet};
use crate::kube::keys;
use crate::kube::{ModelError, PodModel};
use serde::Serialize;
use std::fmt;

/// What happened to one set on one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum SetOutcome {
    Injected {
        set: String,
        revision: String,
        containers: Vec<String>,
        canary: Vec<String>,
    },
    /// The pod opted out with an annotation.
    OptedOut { set: String },
    /// The pod has the set's containers at the current revision, or containers of those
    /// names that the set did not inject: left alone.
    Present { set: String },
    /// The pod has the set's containers from an older revision.
    Outdated {
        set: String,
        recorded: String,
        current: String,
        /// (container, image in the pod, image of the set now)
        images: Vec<(String, String, String)>,
    },
}

impl fmt::Display for SetOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetOutcome::Injected {
                set,
                revision,
                containers,
                canary,
            } => {
                write!(
                    f,
                    "injected sidecar set {set:?} (revision {revision}): {}",
                    containers.join(", ")
                )?;
                if !canary.is_empty() {
                    write!(f, "; canary image for {}", canary.join(", "))?;
                }
                Ok(())
            }
            SetOutcome::OptedOut { set } => {
                write!(f, "the pod opted out of sidecar set {set:?}")
            }
            SetOutcome::Present { set } => {
                write!(
                    f,
                    "the pod already has the containers of sidecar set {set:?}"
                )
            }
            SetOutcome::Outdated {
                set,
                recorded,
                current,
                images,
            } => {
                let changes: Vec<String> = images
                    .iter()
                    .map(|(c, old, new)| {
                        if old == new {
                            format!("{c} runs {old}")
                        } else {
                            format!("{c} runs {old}, the set now injects {new}")
                        }
                    })
                    .collect();
                write!(
                    f,
                    "outdated sidecar: set {set:?} is at revision {current}, this pod was injected with revision {recorded} ({}); recreate the pod to get the current sidecars",
                    changes.join("; ")
                )
            }
        }
    }
}

fn annotation_is_false(model: &PodModel, key: &str) -> bool {
    model
        .workload
        .annotations
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// What the sets would do to the pod (no edits): for reports and audits.
pub fn survey(
    model: &PodModel,
    sets: &[SidecarSet],
    namespace: &str,
) -> Result<Vec<SetOutcome>, ModelError> {
    let mut out = Vec::new();
    for set in sets.iter().filter(|s| s.selects(model, namespace)) {
        let name = set.name.clone();
        if annotation_is_false(model, keys::INJECT)
            || annotation_is_false(model, &format!("{}{}", keys::INJECT_PREFIX, set.name))
        {
            out.push(SetOutcome::OptedOut { set: name });
            continue;
        }
        let present: Vec<&SetContainer> = set
            .all_containers()
            .filter(|c| model.index_of(c.name()).is_some())
            .collect();
        if present.is_empty() {
            out.push(SetOutcome::Injected {
                set: name,
                revision: set.revision()?,
                containers: set.all_containers().map(|c| c.name().to_string()).collect(),
                canary: Vec::new(),
            });
            continue;
        }
        let recorded =
            model
                .workload
                .annotations
                .get(&format!("{}{}", keys::INJECTED_PREFIX, set.name));
        // Hashing the set costs more than the rest of a survey: only for a recorded revision.
        let current = recorded.map(|_| set.revision()).transpose()?;
        match recorded.zip(current) {
            Some((recorded, current)) if *recorded != current => {
                let images = present
                    .iter()
                    .filter_map(|c| {
                        let i = model.index_of(c.name())?;
                        Some((
                            c.name().to_string(),
                            model.containers[i].image.clone().unwrap_or_default(),
                            c.image().to_string(),
                        ))
                    })
                    .collect();
                out.push(SetOutcome::Outdated {
                    set: name,
                    recorded: recorded.clone(),
                    current,
                    images,
                });
            }
            _ => out.push(SetOutcome::Present { set: name }),
        }
    }
    Ok(out)
}
