//! sidecar-lifecycle-policy: every container has the lifecycle type its role calls for,
//! and only the fields that type allows. The checks are the model's; this crate gives
//! them levels and applies the fixes `convert` allows.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::PodModel;
use sidecar_model::json::Node;
use sidecar_model::kube::Feature;
use sidecar_model::lifecycle::{self, CheckOptions, NormaliseError, Problem, Rule};

use settings::{Level, Settings};

policy_shell::export_policy!(Settings, evaluate);

fn evaluate(settings: &Settings, request: &AdmissionRequest) -> Result<Answer, String> {
    let known = settings.known_sidecars.resolve();
    let options = CheckOptions {
        kubernetes_version: settings.version()?,
    };
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
    let levels = &settings.rules;
    let mut answer = Answer::accept();
    // The object is opened for editing only when something is about to change.
    let mut mutated: Option<Node> = None;

    // Before 1.29 the API server refuses native sidecars: nothing is converted, the rules
    // report.
    let convert = settings.convert && options.kubernetes_version.supports(Feature::NativeSidecars);
    if convert
        && levels.of(Rule::LegacySidecar) != Level::Off
        && model.legacy_sidecars().next().is_some()
    {
        let mut target = Node::from(request.object());
        match lifecycle::normalise(&mut target, &model) {
            Ok(changes) if !changes.is_empty() => {
                answer.warnings.extend(
                    changes
                        .iter()
                        .map(|c| format!("{}: {c}", Rule::LegacySidecar)),
                );
                model = lifecycle::normalised(model, &known);
                mutated = Some(target);
            }
            // Nothing was changed: the request is answered as it came.
            Ok(_) | Err(NormaliseError::NoAppContainerLeft(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if convert && levels.of(Rule::OptionalSidecar) != Level::Off {
        let optional = lifecycle::readiness_probes_to_drop(&model);
        if !optional.is_empty() {
            let target = mutated.get_or_insert_with(|| request.object().into());
            let changes = lifecycle::drop_readiness_probes(target, &model, &optional)
                .map_err(|e| e.to_string())?;
            answer.warnings.extend(
                changes
                    .iter()
                    .map(|c| format!("{}: {c}", Rule::OptionalSidecar)),
            );
            model = lifecycle::without_readiness_probes(model, &optional, &known);
        }
    }

    for violation in lifecycle::check(&model, &options) {
        let mut level = levels.of(violation.rule);
        // A proxy its mesh's annotation keeps legacy is the user's choice where it does no
        // harm; in a pod that runs to completion it still never lets the pod complete.
        if let Problem::LegacySidecar {
            opted_out: Some(_),
            runs_to_completion: false,
            ..
        } = violation.problem
            && level == Level::Deny
        {
            level = Level::Warn;
        }
        answer.file(level, violation.to_string());
    }
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

    fn run(settings: Value, operation: &str, object: Value) -> Answer {
        let request = json!({"uid": "1", "operation": operation, "object": object});
        policy_shell::evaluate_natively(evaluate, &settings.to_string(), &request.to_string())
            .unwrap()
    }

    fn job_with_legacy_proxy() -> Value {
        json!({"kind": "Job", "metadata": {"name": "pi"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never",
        "containers": [
            {"name": "pi", "image": "perl:5.34"},
            {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1"}
        ]}}}})
    }

    fn update(object: Value, old: Value) -> Answer {
        let request =
            json!({"uid": "1", "operation": "UPDATE", "object": object, "oldObject": old});
        policy_shell::evaluate_natively(evaluate, "{}", &request.to_string()).unwrap()
    }

    /// The day-2 updates of a legacy Job: a label, a finalizer, anything that leaves its
    /// template as it was, is neither rewritten nor refused (the API server refuses any
    /// change to a Job's template, and with it the user's own change); nor is a change to
    /// the template itself, which the API server judges.
    #[rstest]
    #[case::label("/metadata/labels", json!({"team": "batch"}))]
    #[case::finalizer("/metadata/finalizers", json!([]))]
    #[case::template_label("/spec/template/metadata/labels", json!({"team": "batch"}))]
    fn a_legacy_job_updated(#[case] at: &str, #[case] value: Value) {
        let old = job_with_legacy_proxy();
        let mut new = old.clone();
        let (parent, field) = at.rsplit_once('/').unwrap();
        if new.pointer(parent).is_none() {
            new["spec"]["template"]["metadata"] = json!({});
        }
        new.pointer_mut(parent).unwrap()[field] = value;
        let answer = update(new, old);
        assert!(answer.mutated.is_none(), "{answer:?}");
        assert!(answer.rejections.is_empty(), "{answer:?}");
    }

    /// A Deployment scaled, or labelled, keeps its template as it is; one whose template
    /// changes is converted like a new one.
    #[test]
    fn a_legacy_deployment_updated() {
        let job = job_with_legacy_proxy();
        let old = json!({"kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "template": job["spec"]["template"]}});
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        assert!(update(scaled, old.clone()).mutated.is_none());
        let mut new_image = old.clone();
        new_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:5.36");
        assert!(update(new_image, old).mutated.is_some());
    }

    #[rstest]
    #[case::converted(json!({"convert": true}), true, false)]
    #[case::reported(json!({"convert": false}), false, true)]
    #[case::warned_only(json!({"convert": false, "rules": {"legacy-sidecar": "warn"}}), false, false)]
    fn a_legacy_proxy_in_a_job(
        #[case] settings: Value,
        #[case] mutates: bool,
        #[case] rejects: bool,
    ) {
        let answer = run(settings, "CREATE", job_with_legacy_proxy());
        assert_eq!(answer.mutated.is_some(), mutates);
        assert_eq!(!answer.rejections.is_empty(), rejects, "{answer:?}");
        let said: Vec<&String> = answer.rejections.iter().chain(&answer.warnings).collect();
        assert!(said[0].starts_with("legacy-sidecar: "), "{said:?}");
        if let Some(object) = answer.mutated_object() {
            // Converted, the proxy has the startupProbe Istio gives a native proxy.
            assert_eq!(said.len(), 1, "{said:?}");
            let spec = &object["spec"]["template"]["spec"];
            assert_eq!(spec["initContainers"][0]["name"], "istio-proxy");
            assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
            assert_eq!(
                spec["initContainers"][0]["startupProbe"]["httpGet"]["port"],
                15021
            );
            assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        } else {
            // Left legacy, it has no startupProbe: a warning of its own rule.
            assert!(said[1].starts_with("startup-probe: "), "{said:?}");
            assert!(said[0].contains("the Job would never complete"), "{said:?}");
        }
    }

    #[rstest]
    #[case::running_pod_update("UPDATE", json!({"kind": "Pod", "spec": {"containers": [
        {"name": "app"}, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1"}]}}))]
    #[case::no_pod_inside("CREATE", json!({"kind": "ConfigMap", "data": {"a": "b"}}))]
    fn accepted_untouched(#[case] operation: &str, #[case] object: Value) {
        let answer = run(json!({}), operation, object);
        assert!(answer.rejections.is_empty() && answer.warnings.is_empty());
        assert!(answer.mutated.is_none());
    }

    #[test]
    fn a_malformed_pod_is_rejected_naming_the_field() {
        let answer = run(
            json!({}),
            "CREATE",
            json!({"kind": "Pod", "spec": {"containers": "app"}}),
        );
        assert!(
            answer.rejections[0].contains("spec.containers"),
            "{answer:?}"
        );
    }
}
