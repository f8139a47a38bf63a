//! The sidecar model: Kubernetes facts and the sidecar vocabulary every policy shares.
//!
//! It reads pods and workload pod templates, types their containers, computes resources
//! and start order, and edits the request's own JSON for mutations. It knows nothing of
//! waPC or wasmtime and builds for wasm32 and native alike.

pub mod explain;
pub mod inject;
pub mod json;
pub mod kube;
pub mod lifecycle;
pub mod ordering;
pub mod resources;
pub mod rule;

pub use kube::{
    ContainerInfo, ContainerList, ContainerSelector, Feature, Finding, KnownRule, KnownSidecar,
    KnownSidecarSettings, KnownSidecars, KubeVersion, LifecycleType, Mesh, ModelError, PodModel,
    Quantity, QuantityError, TypeReason, Workload, WorkloadKind,
};
pub use ordering::{Cycle, Edge, EdgeOrigin, EdgeRule, OrderFinding, OrderPlan, StartGraph};
pub use resources::{PodResources, QosClass};
