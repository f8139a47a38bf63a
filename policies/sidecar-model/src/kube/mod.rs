//! The reading of Kubernetes every rule stands on: pods and the workloads that template
//! them, their containers' lifecycle types, quantities, versions and what each allows,
//! the annotation keys, the meshes' layouts, and where in a request's JSON a pod lives.

mod edit;
mod error;
mod finding;
pub mod glob;
pub mod keys;
mod lifecycle_type;
mod mesh;
mod pod;
mod quantity;
mod selector;
mod spec;
mod version;
mod workload;

pub use edit::{Change, remove_container_field, set_pod_annotation};
pub(crate) use edit::{container_mut, empty_object, list_mut, spec_mut};
pub use error::ModelError;
pub use finding::Finding;
pub(crate) use finding::{cycle, quoted};
pub use lifecycle_type::{
    ContainerList, InitSteps, KnownRule, KnownSidecar, KnownSidecarSettings, KnownSidecars,
    LifecycleType, TypeReason,
};
pub use mesh::Mesh;
pub use pod::{ContainerInfo, DeclaredAfter, InitStepOf, PodModel};
pub use quantity::{Quantity, QuantityError, QuantityFormat};
pub use selector::{ContainerSelector, matches_fields};
pub use spec::{Container, PodSpec, Text};
pub use version::{Feature, KubeVersion, gates_table};
pub(crate) use workload::where_and_why;
pub use workload::{Workload, WorkloadKind};
