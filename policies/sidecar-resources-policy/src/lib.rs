//! sidecar-resources-policy: resource accounting with sidecars counted the way Kubernetes
//! counts them. The arithmetic and the fixes are the model's; this crate gives the rules
//! levels and words.

mod settings;

use policy_shell::Answer;
use policy_shell::{AdmissionRequest, PodChange};
use sidecar_model::PodModel;
use sidecar_model::json::Node;
use sidecar_model::resources::{self, Accounting, Options, ResourceFinding, Rule};

use settings::{Level, Settings};

policy_shell::export_policy!(Settings, evaluate);

fn evaluate(settings: &Settings, request: &AdmissionRequest) -> Result<Answer, String> {
    let known = settings.known_sidecars.resolve();
    let Some(model) =
        PodModel::from_json(request.object_json(), &known).map_err(|e| e.to_string())?
    else {
        return Ok(Answer::accept());
    };
    let change = request.pod_change(&model);
    // An update that leaves the pod as it was (a label, a finalizer, a scale) is not
    // judged again: refusing it would block every metadata change of a pod admitted
    // before this policy.
    if change == PodChange::Untouched {
        return Ok(Answer::accept());
    }
    let version = settings.version()?;
    let accounting = Accounting::of(&model, version).map_err(|e| e.to_string())?;
    let resize = request.is_resize();
    let mut answer = Answer::accept();
    if resize && settings.rules.of(Rule::Resize) != Level::Off {
        let old = PodModel::from_json(request.old_object_json(), &known)
            .map_err(|e| format!("oldObject: {e}"))?
            .ok_or("a pods/resize request without its oldObject")?;
        let before = Accounting::of(&old, version).map_err(|e| format!("oldObject: {e}"))?;
        for problem in resources::resize_problems(&before, &accounting, version) {
            let finding = ResourceFinding::Resize(problem);
            answer.file(
                settings.rules.of(Rule::Resize),
                format!("{}: {finding}", finding.rule()),
            );
        }
    }
    // A resize is judged by what holds after it: the pod-level budget, the sidecars' share
    // and the maxima. How the pod got its class is not the resize's doing.
    let rules: Vec<Rule> = settings
        .rules
        .on()
        .filter(|r| !resize || matches!(r, Rule::PodLevel | Rule::SidecarShare | Rule::PodMax))
        .collect();
    let options = Options {
        rules: &rules,
        // A running pod's containers and a Job's template cannot be changed: report,
        // never patch.
        may_mutate: change.may_rewrite(),
        settings,
    };
    let review = resources::review(&model, &accounting, &known, &options);

    for finding in &review.findings {
        let rule = finding.rule();
        let message = format!("{rule}: {finding}");
        if finding.is_notice() {
            answer.warnings.push(message);
        } else {
            answer.file(settings.rules.of(rule), message);
        }
    }
    // A refused pod is not patched: its figures are those it came with, not those of fixes
    // that are not made.
    let recorded = if answer.rejections.is_empty() {
        review.after.pod()
    } else {
        accounting.pod()
    };
    answer.audit.extend(
        recorded
            .audit_annotations()
            .map(|(k, v)| (k.to_string(), v)),
    );
    if !review.edits.is_empty() {
        let mut mutated = Node::from(request.object());
        resources::apply_resource_edits(&mut mutated, &model, &review.edits)
            .map_err(|e| e.to_string())?;
        answer.set_mutated(&mutated)?;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    fn run(settings: Value, operation: &str) -> Answer {
        run_with(
            settings,
            operation,
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}}),
        )
    }

    fn run_with(settings: Value, operation: &str, proxy: Value) -> Answer {
        let object = json!({"kind": "Pod", "metadata": {"name": "shop"}, "spec": {
            "initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
                "restartPolicy": "Always",
                "resources": proxy}],
            "containers": [{"name": "app", "image": "shop:1", "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        let request = json!({"uid": "1", "operation": operation, "object": object});
        policy_shell::evaluate_natively(evaluate, &settings.to_string(), &request.to_string())
            .unwrap()
    }

    /// A Guaranteed app and a proxy without limits: kept Guaranteed, or told why not.
    #[rstest]
    #[case::kept_guaranteed(json!({}), "CREATE", true, None, "Guaranteed")]
    #[case::running_pod_reported(json!({}), "UPDATE", false,
        Some(r#"qos: the app containers alone are Guaranteed, but "istio-proxy" makes the pod Burstable; set its cpu and memory requests equal to its limits, or enable preserveQos"#),
        "Burstable")]
    #[case::not_preserved(json!({"preserveQos": false}), "CREATE", false,
        Some(r#"qos: the app containers alone are Guaranteed, but "istio-proxy" makes the pod Burstable; set its cpu and memory requests equal to its limits, or enable preserveQos"#),
        "Burstable")]
    #[case::rule_off(json!({"rules": {"qos": "off"}}), "CREATE", false, None, "Burstable")]
    fn a_proxy_without_limits(
        #[case] settings: Value,
        #[case] operation: &str,
        #[case] mutates: bool,
        #[case] rejection: Option<&str>,
        #[case] class: &str,
    ) {
        let answer = run(settings, operation);
        assert_eq!(answer.mutated.is_some(), mutates, "{answer:?}");
        match rejection {
            Some(r) => assert!(answer.rejections[0].starts_with(r), "{answer:?}"),
            None => assert!(answer.rejections.is_empty(), "{answer:?}"),
        }
        assert_eq!(answer.audit[sidecar_model::kube::keys::QOS_CLASS], class);
        if let Some(object) = answer.mutated_object() {
            let proxy = &object["spec"]["initContainers"][0]["resources"];
            assert_eq!(proxy["limits"], json!({"cpu": "100m", "memory": "128Mi"}));
            assert!(
                answer.warnings.iter().all(|w| w.starts_with("qos: ")),
                "{answer:?}"
            );
        }
    }

    /// A label or a finalizer on a running pod that breaks a rule is not refused: the pod is
    /// as it was, and refusing would block its metadata for good (a finalizer never
    /// removed keeps it from being deleted).
    #[test]
    fn a_running_pod_updated_as_it_was_is_not_judged_again() {
        let object = |labels: Value| {
            json!({"kind": "Pod", "metadata": {"name": "shop", "labels": labels,
            "finalizers": []}, "spec": {
            "initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
                "restartPolicy": "Always", "resources": {}}],
            "containers": [{"name": "app", "image": "shop:1", "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "1Gi"}}}]}})
        };
        let old = object(json!({"app": "shop"}));
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!(["example.com/keep"]);
        let request = json!({"uid": "1", "operation": "UPDATE", "object": new, "oldObject": old});
        let answer = policy_shell::evaluate_natively(evaluate, "{}", &request.to_string()).unwrap();
        assert!(
            answer.rejections.is_empty() && answer.mutated.is_none(),
            "{answer:?}"
        );
        // A changed label is a change: judged (and reported, never patched).
        let request = json!({"uid": "1", "operation": "UPDATE",
            "object": object(json!({"app": "shop", "team": "a"})), "oldObject": old});
        let answer = policy_shell::evaluate_natively(evaluate, "{}", &request.to_string()).unwrap();
        assert!(
            !answer.rejections.is_empty() && answer.mutated.is_none(),
            "{answer:?}"
        );
    }

    fn resize(old: Value, new: Value, settings: Value) -> Answer {
        let pod = |proxy: Value, init: Value| {
            json!({"kind": "Pod", "metadata": {"name": "shop"}, "spec": {
            "initContainers": [{"name": "setup", "resources": init},
                {"name": "istio-proxy", "restartPolicy": "Always", "resources": proxy}],
            "containers": [{"name": "app", "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}})
        };
        let request = json!({"uid": "1", "operation": "UPDATE", "subResource": "resize",
            "object": pod(new[0].clone(), new[1].clone()), "oldObject": pod(old[0].clone(), old[1].clone())});
        policy_shell::evaluate_natively(evaluate, &settings.to_string(), &request.to_string())
            .unwrap()
    }

    #[test]
    fn resizes_keep_the_class_and_leave_init_steps_alone() {
        let fixed = |cpu: &str| json!({"requests": {"cpu": cpu, "memory": "128Mi"}, "limits": {"cpu": cpu, "memory": "128Mi"}});
        let old = json!([fixed("100m"), fixed("50m")]);
        // The proxy grows, still Guaranteed: fine.
        let grown = resize(old.clone(), json!([fixed("200m"), fixed("50m")]), json!({}));
        assert!(
            grown.rejections.is_empty() && grown.mutated.is_none(),
            "{grown:?}"
        );
        // Requests below limits would make it Burstable; the init step has finished.
        let burstable = json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "300m", "memory": "128Mi"}});
        let answer = resize(old.clone(), json!([burstable, fixed("60m")]), json!({}));
        assert_eq!(answer.rejections.len(), 2, "{answer:?}");
        assert!(
            answer.rejections[0].starts_with(
                "resize: the resize changes the resources of init container \"setup\""
            ),
            "{answer:?}"
        );
        assert!(
            answer.rejections[1]
                .starts_with("resize: the resize would make the pod Burstable (it is Guaranteed)"),
            "{answer:?}"
        );
        // The share holds after a resize too.
        let share = resize(
            old,
            json!([fixed("900m"), fixed("50m")]),
            json!({"maxSidecarShare": 25}),
        );
        assert!(
            share.rejections[0].starts_with("sidecar-share: "),
            "{share:?}"
        );
    }

    #[test]
    fn a_fix_that_reserves_more_than_the_cap_is_not_made() {
        let proxy = json!({"requests": {"cpu": "100m", "memory": "128Mi"},
                           "limits": {"cpu": "2", "memory": "128Mi"}});
        let answer = run_with(
            json!({"preserveQosMaxIncrease": {"cpu": "1"}}),
            "CREATE",
            proxy.clone(),
        );
        assert_eq!(
            answer.rejections,
            [
                "qos: the app containers alone are Guaranteed, but \"istio-proxy\" makes the pod Burstable; keeping it Guaranteed would reserve 1900m more cpu (cpu 1100m \u{2192} 3), more than preserveQosMaxIncrease.cpu 1; set its requests equal to its limits, or raise the cap"
            ]
        );
        let answer = run_with(json!({}), "CREATE", proxy);
        assert!(answer.rejections.is_empty());
        assert_eq!(
            answer.warnings[0],
            "qos: keeping the pod Guaranteed raises its effective requests: cpu 1100m \u{2192} 3"
        );
    }

    #[test]
    fn maxima_and_share_name_the_setting() {
        let answer = run(
            json!({"rules": {"qos": "off"}, "maxSidecarShare": 5,
                   "maxEffectiveRequests": {"cpu": "1"}, "maxEffectiveLimits": {"memory": "2Gi"}}),
            "CREATE",
        );
        assert_eq!(
            answer.rejections,
            [
                "sidecar-share: sidecars request 100m of the pod's 1100m cpu (9.09%), more than maxSidecarShare 5%",
                "sidecar-share: sidecars request 128Mi of the pod's 1152Mi memory (11.11%), more than maxSidecarShare 5%",
                "pod-max: the pod's effective cpu requests are 1100m, more than maxEffectiveRequests.cpu 1",
                "pod-max: the pod's memory limit is unbounded (no limit on istio-proxy), but maxEffectiveLimits.memory is 2Gi",
            ]
        );
    }
}
