//! The ordering policy's room: the start graph from annotations, settings and lifecycle
//! types, the spec order that honours it, and the edit that puts a pod in that order.

mod apply;
mod graph;
mod plan;
mod view;

pub use apply::apply_start_order;
pub use graph::{
    Cycle, Edge, EdgeOrigin, ImplicitEdge, StartGraph, by_list, names, order_annotations,
    spec_order, stop_order,
};
pub use plan::{EdgeRule, OrderFinding, OrderPlan, plan};
pub use view::{EdgeKind, GraphView, MAX_IMPLIED_EDGES, ViewEdge, view};
