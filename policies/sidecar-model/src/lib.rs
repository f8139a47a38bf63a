//! The sidecar model: Kubernetes facts and the sidecar vocabulary every policy shares.
//!
//! It reads pods and workload pod templates, types their containers, computes resources
//! and start order, and edits the request's own JSON for mutations. It knows nothing of
//! waPC or wasmtime and builds for wasm32 and native alike.

pub mod budget;
pub mod canonical;
pub mod checks;
pub mod doc;
pub mod error;
pub mod explain;
pub mod finding;
pub mod glob;
pub mod graph;
pub mod graph_view;
pub mod inject;
pub mod keys;
pub mod lazy;
pub mod lifecycle_type;
pub mod mesh;
pub mod ordering;
pub mod pod;
pub mod quantity;
pub mod resize;
pub mod resource_rules;
pub mod resources;
pub mod restart_rules;
pub mod selector;
pub mod spec;
pub mod surgery;
pub mod version;
pub mod workload;

pub use error::ModelError;
pub use finding::Finding;
pub use graph::{Cycle, Edge, EdgeOrigin, StartGraph};
pub use lifecycle_type::{
    ContainerList, KnownRule, KnownSidecar, KnownSidecarSettings, KnownSidecars, LifecycleType,
    TypeReason,
};
pub use mesh::Mesh;
pub use ordering::{EdgeRule, OrderFinding, OrderPlan};
pub use pod::{ContainerInfo, PodModel};
pub use quantity::{Quantity, QuantityError};
pub use resources::{PodResources, QosClass};
pub use selector::ContainerSelector;
pub use version::{Feature, KubeVersion};
pub use workload::{Workload, WorkloadKind};
