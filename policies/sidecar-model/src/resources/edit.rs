//! The resources policy's edit: requests and limits written into the containers' JSON
//! (see `kube::edit`).

use serde_json::Value;

use crate::json::Node;
use crate::kube::ModelError;
use crate::kube::PodModel;
use crate::kube::{container_mut, empty_object, spec_mut};
use crate::resources::findings::ResourceEdit;

/// Applies resource edits to the containers' JSON: `resources.<requests|limits>.<name>`,
/// creating the maps it needs and writing the quantity in Kubernetes' canonical form.
pub fn apply_resource_edits(
    object: &mut Node,
    model: &PodModel,
    edits: &[ResourceEdit],
) -> Result<(), ModelError> {
    let spec = spec_mut(object, model.workload.kind)?;
    for edit in edits {
        let mut node = container_mut(spec, model, edit.container)?;
        for key in ["resources", edit.field.as_str()] {
            node = node
                .entry_or(key, empty_object)
                .as_object_mut()?
                .ok_or_else(|| {
                    ModelError::Malformed(format!(
                        "{} {key} is not an object",
                        model.containers[edit.container].location()
                    ))
                })?;
        }
        node.insert(
            &edit.resource,
            Node::Value(Value::String(edit.value.to_string())),
        );
    }
    Ok(())
}
