//! sidecar-injector-policy: the admission half of OpenKruise's SidecarSet, with native
//! sidecars. Matching, placement, canaries and revisions are the model's; this crate
//! decides when to inject and what to report.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::doc::Node;
use sidecar_model::inject::{self, SetOutcome};
use sidecar_model::surgery::NormaliseError;
use sidecar_model::{PodModel, WorkloadKind, keys, surgery};

use settings::Settings;

policy_shell::export_policy!(Settings, evaluate);

fn outdated_message(
    set: &str,
    recorded: &str,
    current: &str,
    images: &[(String, String, String)],
) -> String {
    let changes: Vec<String> = images
        .iter()
        .map(|(c, old, new)| {
            if old == new {
                format!("{c} runs {old}")
            } else {
                format!("{c} runs {old}, the set now injects {new}")
            }
        })
        .collect();
    format!(
        "outdated sidecar: set {set:?} is at revision {current}, this pod was injected with revision {recorded} ({}); recreate the pod to get the current sidecars",
        changes.join("; ")
    )
}

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
        .or(model.pod.namespace.as_deref())
        .unwrap_or("default")
        .to_string();
    let namespace = namespace.as_str();
    // SidecarSets inject into pods, not into workload templates: a template injected
    // once would pin its sidecars' versions until the workload itself changes.
    if model.pod.kind != WorkloadKind::Pod {
        return Ok(Answer::accept());
    }
    let mut answer = Answer::accept();
    let outcomes = inject::survey(&model, &settings.sidecar_sets, namespace);
    for outcome in &outcomes {
        if let SetOutcome::Outdated {
            set,
            recorded,
            current,
            images,
        } = outcome
        {
            let message = outdated_message(set, recorded, current, images);
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
    let changes = match surgery::normalise(&mut mutated, &model) {
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
        surgery::normalised(model, &known)
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
        if let SetOutcome::Injected {
            set,
            revision,
            containers,
            canary,
        } = outcome
        {
            injected.push(format!("{set}@{revision}"));
            let mut line = format!(
                "injected sidecar set {set:?} (revision {revision}): {}",
                containers.join(", ")
            );
            if !canary.is_empty() {
                line.push_str(&format!("; canary image for {}", canary.join(", ")));
            }
            answer.warnings.push(line);
        }
    }
    answer
        .audit
        .insert(keys::INJECTED.into(), injected.join(","));
    answer.set_mutated(&mutated)?;
    Ok(answer)
}
