//! sidecar-ordering-policy: makes the pod spec start (and stop) containers in the order
//! their declared dependencies ask for. The analysis is the model's; this crate chooses
//! what rejects, what warns and what is rewritten.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::json::Node;
use sidecar_model::lifecycle;
use sidecar_model::ordering;
use sidecar_model::{OrderFinding, PodModel};

use settings::{Mode, Settings};

policy_shell::export_policy!(Settings, evaluate);

fn evaluate(settings: &Settings, request: &AdmissionRequest) -> Result<Answer, String> {
    let known = settings.known_sidecars.resolve();
    let Some(mut model) =
        PodModel::from_json(request.object_json(), &known).map_err(|e| e.to_string())?
    else {
        return Ok(Answer::accept());
    };
    // A running pod, a Job's template, or an update that leaves the pod as it was: the
    // API server would refuse a rewrite, or the user changed nothing this policy judges.
    if !request.pod_change(&model).may_rewrite() {
        return Ok(Answer::accept());
    }
    let mut answer = Answer::accept();
    // The object is opened for editing only when something is about to change.
    let mut mutated: Option<Node> = None;
    if settings.mode == Mode::Mutate && model.legacy_sidecars().next().is_some() {
        let target = mutated.get_or_insert_with(|| request.object().into());
        let changes = lifecycle::normalise(target, &model).map_err(|e| e.to_string())?;
        answer
            .warnings
            .extend(changes.iter().map(ToString::to_string));
        model = lifecycle::normalised(model, &known);
    }

    let plan = ordering::plan(&model, &settings.edges);
    answer
        .rejections
        .extend(plan.errors.iter().map(ToString::to_string));
    for finding in &plan.readiness {
        let blocking = settings.require_startup_probe
            && matches!(finding, OrderFinding::NoStartupProbe { .. });
        if blocking {
            answer.rejections.push(finding.to_string());
        } else {
            answer.warnings.push(finding.to_string());
        }
    }
    if settings.mode == Mode::Validate
        && let Some(first) = plan.violations(&model).into_iter().next()
    {
        answer.rejections.push(first.to_string());
    }
    if !answer.rejections.is_empty() {
        return Ok(answer);
    }
    let start = plan.start.as_ref().ok_or("the start graph has no order")?;

    // The orders Kubernetes will follow for the spec that is admitted.
    let mut admitted = ordering::spec_order(&model);
    if settings.mode == Mode::Mutate && *start != admitted {
        let target = mutated.get_or_insert_with(|| request.object().into());
        let moves =
            ordering::apply_start_order(target, &model, start).map_err(|e| e.to_string())?;
        answer
            .warnings
            .extend(moves.iter().map(ToString::to_string));
        admitted = ordering::by_list(&model, start);
    }
    answer
        .audit
        .extend(ordering::order_annotations(&model, &admitted).map(|(k, v)| (k.to_string(), v)));
    if let Some(doc) = &mutated {
        answer.set_mutated(doc)?;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    fn run(settings: Value, annotations: Value) -> Answer {
        let object = json!({"kind": "Pod", "metadata": {"name": "shop", "annotations": annotations},
            "spec": {"initContainers": [
                {"name": "vault-agent", "image": "hashicorp/vault:1.17", "restartPolicy": "Always"},
                {"name": "envoy", "image": "envoyproxy/envoy:v1.31", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "shop:1"}]}});
        let request = json!({"uid": "1", "operation": "CREATE", "object": object});
        policy_shell::evaluate_natively(evaluate, &settings.to_string(), &request.to_string())
            .unwrap()
    }

    /// `vault-agent` must start after `envoy`, which the spec starts second.
    #[rstest]
    #[case::reordered(json!({"mode": "mutate"}), true, false, "envoy,vault-agent,app")]
    #[case::refused(json!({"mode": "validate"}), false, true, "")]
    fn a_declared_edge_against_the_spec(
        #[case] settings: Value,
        #[case] mutates: bool,
        #[case] rejects: bool,
        #[case] start_order: &str,
    ) {
        let answer = run(settings, json!({"after.sidecars.dev/vault-agent": "envoy"}));
        assert_eq!(answer.mutated.is_some(), mutates, "{answer:?}");
        assert_eq!(!answer.rejections.is_empty(), rejects, "{answer:?}");
        if mutates {
            let object = answer.mutated_object().unwrap();
            assert_eq!(object["spec"]["initContainers"][0]["name"], "envoy");
            assert_eq!(
                answer.audit[sidecar_model::kube::keys::START_ORDER],
                start_order
            );
            assert_eq!(
                answer.audit[sidecar_model::kube::keys::STOP_ORDER],
                "app,vault-agent,envoy"
            );
        } else {
            assert!(
                answer.rejections[0].contains("\"vault-agent\""),
                "{answer:?}"
            );
        }
    }

    #[test]
    fn a_cycle_is_refused_and_nothing_is_moved() {
        let answer = run(
            json!({"mode": "mutate"}),
            json!({"after.sidecars.dev/vault-agent": "envoy", "after.sidecars.dev/envoy": "vault-agent"}),
        );
        assert!(answer.mutated.is_none());
        assert!(
            answer.rejections[0].starts_with("the start dependencies form a cycle"),
            "{answer:?}"
        );
    }

    #[test]
    fn an_ordered_pod_is_answered_without_a_patch() {
        let answer = run(
            json!({"mode": "mutate"}),
            json!({"after.sidecars.dev/envoy": "vault-agent"}),
        );
        assert!(answer.mutated.is_none() && answer.rejections.is_empty());
        assert_eq!(
            answer.audit[sidecar_model::kube::keys::START_ORDER],
            "vault-agent,envoy,app"
        );
    }
}
