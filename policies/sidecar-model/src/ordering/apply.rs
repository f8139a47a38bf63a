//! The ordering policy's edit: each container list put into the start order, moving
//! the containers' JSON as it is (see `kube::edit`).

use crate::json::Node;
use crate::kube::ContainerList;
use crate::kube::ModelError;
use crate::kube::PodModel;
use crate::kube::{Change, list_mut, spec_mut};

/// Puts each list into the order `start` gives (indices into `model.containers`),
/// moving the containers' JSON as it is. Containers stay in their lists. Returns one
/// change per list that moved.
pub fn apply_start_order(
    object: &mut Node,
    model: &PodModel,
    start: &[usize],
) -> Result<Vec<Change>, ModelError> {
    let spec = spec_mut(object, model.workload.kind)?;
    let mut changes = Vec::new();
    for list in [ContainerList::InitContainers, ContainerList::Containers] {
        let wanted: Vec<usize> = start
            .iter()
            .filter(|&&i| model.containers[i].list == list)
            .map(|&i| model.containers[i].index)
            .collect();
        if wanted.iter().enumerate().all(|(pos, &index)| pos == index) {
            continue;
        }
        let items = list_mut(spec, list)?;
        if wanted.len() != items.len() {
            return Err(ModelError::Malformed(format!(
                "{} has {} entries, expected {}",
                list.field(),
                items.len(),
                wanted.len()
            )));
        }
        let name_at = |i: usize| {
            model
                .containers
                .iter()
                .find(|c| c.list == list && c.index == i)
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let mut old: Vec<Option<Node>> = std::mem::take(items).into_iter().map(Some).collect();
        *items = wanted.iter().filter_map(|&i| old[i].take()).collect();
        changes.push(Change::Reordered {
            list,
            before: (0..wanted.len()).map(name_at).collect(),
            after: wanted.iter().map(|&i| name_at(i)).collect(),
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::edit_value;
    use crate::kube::KnownSidecars;
    use crate::ordering::StartGraph;
    use serde_json::Value;
    use serde_json::json;

    fn model(object: &Value) -> PodModel {
        PodModel::of(object, &KnownSidecars::default())
    }

    #[test]
    fn apply_start_order_moves_entries_not_fields() {
        let mut object = json!({"kind": "Pod", "metadata": {"annotations": {"after.sidecars.dev/proxy": "vault"}},
            "spec": {"initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "image": "p"},
                {"name": "vault", "restartPolicy": "Always", "image": "v", "args": ["agent"]}
            ], "containers": [{"name": "app"}]}});
        let m = model(&object);
        let order = StartGraph::build(&m, []).order().unwrap();
        let changes = edit_value(&mut object, |d| apply_start_order(d, &m, &order)).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            object["spec"]["initContainers"][0],
            json!({"name": "vault", "restartPolicy": "Always", "image": "v", "args": ["agent"]})
        );
        let m2 = model(&object);
        let order2 = StartGraph::build(&m2, []).order().unwrap();
        let mut again = object.clone();
        assert!(
            edit_value(&mut again, |d| apply_start_order(d, &m2, &order2))
                .unwrap()
                .is_empty()
        );
        assert_eq!(again, object);
    }
}
