//! What the model finds wrong with a pod's sidecar annotations: data first, text second.

use serde::Serialize;
use std::fmt;

use crate::kube::lifecycle_type::LifecycleType;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "code",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Finding {
    /// `lifecycle.sidecars.dev/<name>` holds no known type.
    UnknownLifecycleType {
        key: String,
        value: String,
        container: String,
    },
    /// A per-container key names no container of the pod.
    AnnotationForMissingContainer { key: String, container: String },
    /// A type annotation on an init container, whose position decides its type.
    TypeAnnotationIgnored {
        key: String,
        container: String,
        annotated: LifecycleType,
        actual: LifecycleType,
    },
    /// `after.sidecars.dev/<name>` is not a comma-separated list of names.
    MalformedAfter {
        key: String,
        value: String,
        container: String,
    },
    /// `after.sidecars.dev/<name>` names a container the pod does not have.
    AfterMissingContainer {
        key: String,
        container: String,
        missing: String,
    },
    /// `after.sidecars.dev/<name>` names the container itself.
    AfterSelf { key: String, container: String },
    /// `optional.sidecars.dev/<name>` is neither "true" nor "false".
    MalformedOptional {
        key: String,
        value: String,
        container: String,
    },
    /// Two containers share a name (the API server rejects such a pod).
    DuplicateContainerName { container: String },
    /// A container has no name.
    UnnamedContainer { list: String, index: usize },
    /// The start graph has a cycle: `path` starts and ends with the same container.
    StartCycle { path: Vec<String> },
    /// The spec starts `after` before `before`, against a declared edge.
    OrderViolated {
        before: String,
        after: String,
        origin: String,
    },
    /// A sidecar runs as a regular app container.
    LegacySidecar {
        container: String,
        runs_to_completion: bool,
    },
}

impl Finding {
    /// A stable name for the kind of finding.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::UnknownLifecycleType { .. } => "unknownLifecycleType",
            Finding::AnnotationForMissingContainer { .. } => "annotationForMissingContainer",
            Finding::TypeAnnotationIgnored { .. } => "typeAnnotationIgnored",
            Finding::MalformedAfter { .. } => "malformedAfter",
            Finding::AfterMissingContainer { .. } => "afterMissingContainer",
            Finding::AfterSelf { .. } => "afterSelf",
            Finding::MalformedOptional { .. } => "malformedOptional",
            Finding::DuplicateContainerName { .. } => "duplicateContainerName",
            Finding::UnnamedContainer { .. } => "unnamedContainer",
            Finding::StartCycle { .. } => "startCycle",
            Finding::OrderViolated { .. } => "orderViolated",
            Finding::LegacySidecar { .. } => "legacySidecar",
        }
    }

    /// The container the finding is about, when there is one.
    pub fn container(&self) -> Option<&str> {
        match self {
            Finding::UnknownLifecycleType { container, .. }
            | Finding::AnnotationForMissingContainer { container, .. }
            | Finding::TypeAnnotationIgnored { container, .. }
            | Finding::MalformedAfter { container, .. }
            | Finding::AfterMissingContainer { container, .. }
            | Finding::AfterSelf { container, .. }
            | Finding::MalformedOptional { container, .. }
            | Finding::DuplicateContainerName { container }
            | Finding::LegacySidecar { container, .. }
            | Finding::OrderViolated {
                after: container, ..
            } => Some(container),
            Finding::StartCycle { path } => path.first().map(String::as_str),
            Finding::UnnamedContainer { .. } => None,
        }
    }
}

/// Container names as messages quote them: `"istio-init", "istio-proxy"`.
pub(crate) fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::UnknownLifecycleType { key, value, .. } => write!(
                f,
                "annotation {key}: unknown lifecycle type {value:?}; use one of {}",
                LifecycleType::NAMES
            ),
            Finding::AnnotationForMissingContainer { key, container } => write!(
                f,
                "annotation {key} names container {container:?}, which this pod does not have; fix the name or remove the annotation"
            ),
            Finding::TypeAnnotationIgnored {
                key,
                container,
                annotated,
                actual,
            } => write!(
                f,
                "annotation {key} says {annotated}, but {container:?} is an init container and so a {actual}; {}",
                if *annotated == LifecycleType::Sidecar {
                    "give it restartPolicy: Always to make it a native sidecar"
                } else {
                    "move it out of initContainers or remove the annotation"
                }
            ),
            Finding::MalformedAfter { key, value, .. } => write!(
                f,
                "annotation {key}: {value:?} is not a comma-separated list of container names"
            ),
            Finding::AfterMissingContainer { key, missing, .. } => write!(
                f,
                "annotation {key} names container {missing:?}, which this pod does not have"
            ),
            Finding::AfterSelf { key, container } => write!(
                f,
                "annotation {key}: container {container:?} cannot start after itself"
            ),
            Finding::MalformedOptional { key, value, .. } => {
                write!(
                    f,
                    "annotation {key}: {value:?} must be \"true\" or \"false\""
                )
            }
            Finding::DuplicateContainerName { container } => write!(
                f,
                "more than one container is named {container:?}; container names must be unique across initContainers and containers"
            ),
            Finding::UnnamedContainer { list, index } => {
                write!(f, "{list}[{index}] has no name")
            }
            Finding::StartCycle { path } => cycle(f, path),
            Finding::OrderViolated {
                before,
                after,
                origin,
            } => write!(
                f,
                "{after:?} starts before {before:?}, but {origin} says it must start after it; move {before:?} earlier"
            ),
            Finding::LegacySidecar {
                container,
                runs_to_completion,
            } => {
                write!(
                    f,
                    "{container:?} is a sidecar running as a regular container: it is not guaranteed to start before the app"
                )?;
                if *runs_to_completion {
                    f.write_str(", and in a run-to-completion pod it keeps running after the app exits, so the Job never completes")?;
                }
                f.write_str(
                    "; make it a native sidecar (initContainers with restartPolicy: Always)",
                )
            }
        }
    }
}
/// A cycle of start dependencies, in the one wording explain and the ordering policy share.
pub(crate) fn cycle(f: &mut fmt::Formatter<'_>, path: &[String]) -> fmt::Result {
    write!(
        f,
        "the start dependencies form a cycle: {}; remove one of these edges",
        path.join(" → ")
    )
}
