//! sidecar-injector-policy: the admission half of OpenKruise's SidecarSet, with native
//! sidecars. Matching, placement, canaries and revisions are the model's; this crate
//! decides when to inject and what to report.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::inject::{self, SetOutcome};
use sidecar_model::json::Node;
use sidecar_model::kube::keys;
use sidecar_model::lifecycle::{self, NormaliseError};
use sidecar_model::{PodModel, WorkloadKind};

use settings::Settings;

policy_shell::export_policy!(Settings, evaluate);

fn evaluate(settings: &Settings, request: &AdmissionRequest) -> Result<Answer, String> {
    let operation = request.operation.as_ref();
    let known = settings.known_sidecars.resolve();
    let Some(model) =
        PodModel::from_json(request.object_json(), &known).map_err(|e| e.to_string())?
    else {
        return Ok(Answer::accept());
    };
    let namespace = Some(request.namespace.as_ref())
        .filter(|n| !n.is_empty())
        .or(model.workload.namespace.as_deref())
        .unwrap_or("default")
        .to_string();
    let namespace = namespace.as_str();
    // SidecarSets inject into pods, not into workload templates: a template injected
    // once would pin its sidecars' versions until the workload itself changes.
    if model.workload.kind != WorkloadKind::Pod {
        return Ok(Answer::accept());
    }
    let mut answer = Answer::accept();
    let outcomes =
        inject::survey(&model, &settings.sidecar_sets, namespace).map_err(|e| e.to_string())?;
    for outcome in &outcomes {
        if let SetOutcome::Outdated { .. } = outcome {
            let message = outcome.to_string();
            // On UPDATE a warning; anything else (a CREATE, Kubewarden's audit scan of a
            // running pod) is a failed check, so it lands in the policy report.
            if operation == "UPDATE" {
                answer.warnings.push(message);
            } else {
                answer.rejections.push(message);
            }
        }
    }
    let wants = outcomes
        .iter()
        .any(|o| matches!(o, SetOutcome::Injected { .. }));
    if operation != "CREATE" || !wants || !answer.rejections.is_empty() {
        return Ok(answer);
    }

    // Legacy sidecars become native first, as the other policies make them, so the
    // injected containers land where they would in any order of the policies.
    let mut mutated = Node::from(request.object());
    let changes = match lifecycle::normalise(&mut mutated, &model) {
        Ok(changes) => changes,
        // Every container is typed a sidecar: there is no app to convert them around, and
        // the lifecycle and ordering policies say why; the sets are injected all the same.
        Err(NormaliseError::NoAppContainerLeft(_)) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    answer
        .warnings
        .extend(changes.iter().map(ToString::to_string));
    let model = if changes.is_empty() {
        model
    } else {
        lifecycle::normalised(model, &known)
    };
    let outcomes = inject::inject_surveyed(
        &mut mutated,
        model,
        &settings.sidecar_sets,
        namespace,
        &request.uid,
        outcomes,
        &known,
    )
    .map_err(|e| e.to_string())?;
    let mut injected = Vec::new();
    for outcome in &outcomes {
        if let SetOutcome::Injected { set, revision, .. } = outcome {
            injected.push(format!("{set}@{revision}"));
            answer.warnings.push(outcome.to_string());
        }
    }
    answer
        .audit
        .insert(keys::INJECTED.into(), injected.join(","));
    answer.set_mutated(&mutated)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    fn settings() -> String {
        json!({"sidecarSets": [{"name": "logs", "selector": {"matchLabels": {"logs": "ship"}},
            "namespaces": ["shop"],
            "containers": [{"name": "fluent-bit", "image": "cr.fluentbit.io/fluent/fluent-bit:3.1.9",
                            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}}}]}]})
        .to_string()
    }

    fn run(operation: &str, namespace: &str, object: Value) -> Answer {
        let request =
            json!({"uid": "1", "operation": operation, "namespace": namespace, "object": object});
        policy_shell::evaluate_natively(evaluate, &settings(), &request.to_string()).unwrap()
    }

    fn pod(labels: Value) -> Value {
        json!({"kind": "Pod", "metadata": {"name": "web", "labels": labels},
               "spec": {"containers": [{"name": "app", "image": "shop:1"}]}})
    }

    #[test]
    fn a_selected_pod_gets_the_set_as_native_sidecars() {
        let answer = run("CREATE", "shop", pod(json!({"logs": "ship"})));
        assert!(answer.rejections.is_empty(), "{answer:?}");
        let object = answer.mutated_object().unwrap();
        assert_eq!(object["spec"]["initContainers"][0]["name"], "fluent-bit");
        assert_eq!(
            object["spec"]["initContainers"][0]["restartPolicy"],
            "Always"
        );
        let revision = answer.audit[sidecar_model::kube::keys::INJECTED]
            .strip_prefix("logs@")
            .unwrap()
            .to_string();
        assert_eq!(
            answer.warnings,
            [format!(
                "injected sidecar set \"logs\" (revision {revision}): fluent-bit"
            )]
        );
        // Its own output is left alone: the set is present.
        let again = run("CREATE", "shop", object);
        assert!(again.mutated.is_none() && again.warnings.is_empty());
    }

    #[rstest]
    #[case::other_namespace("CREATE", "pay", pod(json!({"logs": "ship"})))]
    #[case::not_selected("CREATE", "shop", pod(json!({"logs": "keep"})))]
    #[case::update("UPDATE", "shop", pod(json!({"logs": "ship"})))]
    #[case::workload_template("CREATE", "shop", json!({"kind": "Deployment", "spec": {"template": {
        "metadata": {"labels": {"logs": "ship"}}, "spec": {"containers": [{"name": "app"}]}}}}))]
    fn left_alone(#[case] operation: &str, #[case] namespace: &str, #[case] object: Value) {
        let answer = run(operation, namespace, object);
        assert!(answer.mutated.is_none() && answer.rejections.is_empty());
    }
}
