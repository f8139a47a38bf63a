//! sidecar-resources-policy: resource accounting with sidecars counted the way Kubernetes
//! counts them. The arithmetic and the fixes are the model's; this crate gives the rules
//! levels and words.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::budget::Accounting;
use sidecar_model::doc::Node;
use sidecar_model::resource_rules::{self, Options, Rule};
use sidecar_model::{PodModel, surgery};

use settings::{Level, Settings};

policy_shell::export_policy!(Settings, evaluate);

fn evaluate(settings: &Settings, request: &AdmissionRequest) -> Result<Answer, String> {
    let known = settings.known_sidecars.resolve();
    let Some(model) = PodModel::from_json_with_resources(request.object_json(), &known)
        .map_err(|e| e.to_string())?
    else {
        return Ok(Answer::accept());
    };
    let accounting = Accounting::of(&model).map_err(|e| e.to_string())?;
    let rules: Vec<Rule> = Rule::ALL
        .into_iter()
        .filter(|&r| settings.rules.of(r) != Level::Off)
        .collect();
    let share = settings.share();
    let options = Options {
        rules: &rules,
        // A running pod's containers cannot be changed: report, never patch.
        may_mutate: !request.updates_running_pod(&model),
        fill_sidecar_requests: settings.fill_sidecar_requests,
        require_sidecar_limits: settings.require_sidecar_limits,
        preserve_qos: settings.preserve_qos,
        preserve_qos_max_increase: &settings.preserve_qos_max_increase,
        defaults: &settings.defaults,
        max_sidecar_share: &share,
        max_effective_requests: &settings.max_effective_requests,
        max_effective_limits: &settings.max_effective_limits,
    };
    let review = resource_rules::review(&model, &accounting, &known, &options);

    let mut answer = Answer::accept();
    for finding in &review.findings {
        let rule = finding.rule();
        let message = format!("{rule}: {finding}");
        if finding.is_notice() {
            answer.warnings.push(message);
        } else {
            answer.file(settings.rules.of(rule), message);
        }
    }
    answer.audit.extend(
        review
            .after
            .pod()
            .audit_annotations()
            .map(|(k, v)| (k.to_string(), v)),
    );
    if !review.edits.is_empty() {
        let mut mutated = Node::from(request.object());
        surgery::apply_resource_edits(&mut mutated, &model, &review.edits)
            .map_err(|e| e.to_string())?;
        answer.set_mutated(&mutated)?;
    }
    Ok(answer)
}
