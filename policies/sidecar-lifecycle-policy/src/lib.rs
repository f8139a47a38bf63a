//! sidecar-lifecycle-policy: every container has the lifecycle type its role calls for,
//! and only the fields that type allows. The checks are the model's; this crate gives
//! them levels and applies the fixes `convert` allows.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::PodModel;
use sidecar_model::checks::{self, CheckOptions, Rule};
use sidecar_model::doc::Node;
use sidecar_model::surgery::{self, NormaliseError};

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
    if request.updates_running_pod(&model) {
        return Ok(Answer::accept());
    }
    let levels = &settings.rules;
    let mut answer = Answer::accept();
    // The object is opened for editing only when something is about to change.
    let mut mutated: Option<Node> = None;

    if settings.convert
        && levels.of(Rule::LegacySidecar) != Level::Off
        && model.legacy_sidecars().next().is_some()
    {
        let mut target = Node::from(request.object());
        match surgery::normalise(&mut target, &model) {
            Ok(changes) if !changes.is_empty() => {
                answer.warnings.extend(
                    changes
                        .iter()
                        .map(|c| format!("{}: {c}", Rule::LegacySidecar)),
                );
                model = surgery::normalised(model, &known);
                mutated = Some(target);
            }
            // Nothing was changed: the request is answered as it came.
            Ok(_) | Err(NormaliseError::NoAppContainerLeft(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if settings.convert && levels.of(Rule::OptionalSidecar) != Level::Off {
        // Only native sidecars: a legacy one left unconverted keeps its probe.
        let optional: Vec<usize> = model
            .optional_sidecars_gating_readiness()
            .filter(|&i| model.containers[i].is_native_sidecar())
            .collect();
        for &i in &optional {
            let target = mutated.get_or_insert_with(|| request.object().into());
            surgery::remove_container_field(target, &model, i, "readinessProbe")
                .map_err(|e| e.to_string())?;
            answer.warnings.push(format!(
                "{}: removed the readinessProbe of optional sidecar {:?} so its failures do not take the pod out of service",
                Rule::OptionalSidecar,
                model.containers[i].name
            ));
        }
        if !optional.is_empty() {
            model = surgery::without_readiness_probes(model, &optional, &known);
        }
    }

    for violation in checks::check(&model, &options) {
        answer.file(levels.of(violation.rule), violation.to_string());
    }
    if let Some(doc) = &mutated {
        answer.set_mutated(doc)?;
    }
    Ok(answer)
}
