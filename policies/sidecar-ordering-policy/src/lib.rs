//! sidecar-ordering-policy: makes the pod spec start (and stop) containers in the order
//! their declared dependencies ask for. The analysis is the model's; this crate chooses
//! what rejects, what warns and what is rewritten.

mod settings;

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    protocol_version_guest,
    request::ValidationRequest,
    response::ValidationResponse,
    settings::{SettingsValidationResponse, Validatable},
};
use serde_json::Value;
use sidecar_model::{PodModel, graph, keys, ordering, surgery};
use std::collections::HashMap;

use settings::{Mode, Settings};

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings);
    register_function("protocol_version", protocol_version_guest);
}

/// Like the SDK's, but settings that do not parse are answered `valid: false` with the
/// reason, instead of an error the host has to translate.
fn validate_settings(payload: &[u8]) -> CallResult {
    let verdict = serde_json::from_slice::<Settings>(payload)
        .map_err(|e| format!("invalid settings: {e}"))
        .and_then(|s| s.validate());
    Ok(serde_json::to_vec(&SettingsValidationResponse {
        valid: verdict.is_ok(),
        message: verdict.err(),
    })?)
}

fn answer(
    accepted: bool,
    message: Option<String>,
    mutated_object: Option<Value>,
    audit: HashMap<String, String>,
    warnings: Vec<String>,
) -> CallResult {
    Ok(serde_json::to_vec(&ValidationResponse {
        accepted,
        message,
        code: None,
        mutated_object,
        audit_annotations: (!audit.is_empty()).then_some(audit),
        warnings: (!warnings.is_empty()).then_some(warnings),
    })?)
}

fn reject(message: String) -> CallResult {
    answer(false, Some(message), None, HashMap::new(), Vec::new())
}

fn validate(payload: &[u8]) -> CallResult {
    let request = match ValidationRequest::<Settings>::new(payload) {
        Ok(r) => r,
        Err(e) => return reject(format!("cannot read the admission request: {e}")),
    };
    match evaluate(
        &request.settings,
        &request.request.object,
        &request.request.operation,
    ) {
        Ok(verdict) => verdict,
        Err(message) => reject(message),
    }
}

fn evaluate(settings: &Settings, object: &Value, operation: &str) -> Result<CallResult, String> {
    let known = settings.known_sidecars.resolve();
    let Some(mut model) = PodModel::from_object(object, &known).map_err(|e| e.to_string())? else {
        return Ok(answer(true, None, None, HashMap::new(), Vec::new()));
    };
    // A running pod's containers cannot be changed: nothing to order on its updates.
    if operation == "UPDATE" && model.pod.kind == sidecar_model::WorkloadKind::Pod {
        return Ok(answer(true, None, None, HashMap::new(), Vec::new()));
    }
    let mut warnings = Vec::new();
    let mut mutated = object.clone();
    let mut changed = false;
    if settings.mode == Mode::Mutate {
        let changes = surgery::normalise(&mut mutated, &model).map_err(|e| e.to_string())?;
        if !changes.is_empty() {
            changed = true;
            warnings.extend(changes.iter().map(|c| c.to_string()));
            model = PodModel::from_object(&mutated, &known)
                .map_err(|e| e.to_string())?
                .ok_or("the normalised object holds no pod")?;
        }
    }

    let plan = ordering::plan(&model, &settings.edges);
    let mut errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    for finding in &plan.readiness {
        let blocking = settings.require_startup_probe
            && matches!(finding, sidecar_model::OrderFinding::NoStartupProbe { .. });
        if blocking {
            errors.push(finding.to_string());
        } else {
            warnings.push(finding.to_string());
        }
    }
    if settings.mode == Mode::Validate
        && let Some(first) = plan.violations(&model).into_iter().next()
    {
        errors.push(first.to_string());
    }
    if !errors.is_empty() {
        return Ok(answer(
            false,
            Some(errors.join("; ")),
            None,
            HashMap::new(),
            warnings,
        ));
    }
    let Some(start) = plan.start.as_ref() else {
        return Err("the start graph has no order".into());
    };

    if settings.mode == Mode::Mutate {
        let moves =
            surgery::apply_start_order(&mut mutated, &model, start).map_err(|e| e.to_string())?;
        if !moves.is_empty() {
            changed = true;
            warnings.extend(moves.iter().map(|c| c.to_string()));
            model = PodModel::from_object(&mutated, &known)
                .map_err(|e| e.to_string())?
                .ok_or("the reordered object holds no pod")?;
        }
    }

    // The orders Kubernetes will follow for the spec that is admitted.
    let admitted = graph::spec_order(&model);
    let audit = HashMap::from([
        (
            keys::START_ORDER.to_string(),
            graph::names(&model, &admitted).join(","),
        ),
        (
            keys::STOP_ORDER.to_string(),
            graph::names(&model, &graph::stop_order(&model, &admitted)).join(","),
        ),
    ]);
    Ok(answer(
        true,
        None,
        changed.then_some(mutated),
        audit,
        warnings,
    ))
}
