//! The resources policy's room: effective requests and limits and the QoS class as
//! Kubernetes computes them, the rules about what sidecars cost, in-place resize, and
//! the edits that fill in requests and limits.

mod edit;
mod effective;
mod findings;
mod resize;
mod rules;
mod settings;

pub use edit::apply_resource_edits;
pub use effective::{
    Accounted, Breakdown, CPU, ContainerResources, MEMORY, PerResource, PodResources, QosClass,
    Role, Unbounded, accounted_containers, compute, compute_from, is_pod_level_resource, pod_level,
    qos_of,
};
pub use findings::{
    Accounting, Field, LimitBelowRequest, OverMax, PodLevelBreach, QosDowngrade, RequestIncrease,
    ResourceDefault, ResourceEdit, ShareOver, SidecarGaps,
};
pub use resize::{ResizeProblem, check as resize_problems};
pub use rules::{Options, ResourceFinding, Review, review};
pub use settings::{Rule, Settings, Share};
