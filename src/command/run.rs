//! `run` and `review`: one admission request through a policy, as policy-server would
//! answer it, and the AdmissionReview the API server would send.

use sidecarctl::{admission, evaluation, oci, runtime};

use anyhow::bail;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

use admission::AdmissionResponse;
use evaluation::Evaluator;
use runtime::Runtime;

use crate::cli::{ReviewArgs, RunArgs, RunOutput};
use crate::input::read_document;

/// `sidecarctl run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        policy,
        request_path,
        settings,
        output,
        timeout_ms,
        registry,
    } = args;
    let settings = settings.load()?;
    let request = admission::to_request(read_document(&request_path)?)?;
    let runtime = Runtime::new()?;
    let module = oci::load_policy(
        &runtime,
        &oci::ModuleRef::parse(&policy)?,
        &registry.access(),
        Duration::from_millis(timeout_ms),
    )?;
    let evaluator = Evaluator::new(module, settings)?;
    let evaluation = evaluator.evaluate(&request);
    print_response(&evaluation.response, &request, output)?;
    match evaluation.failure {
        // stdout has what policy-server would answer (a 500 rejection); the
        // failure itself is the user's to fix.
        Some(reason) => bail!("{}: {reason}", evaluator.policy.name),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `sidecarctl review`.
pub fn review(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let ReviewArgs { path } = args;
    let request = admission::to_request(read_document(&path)?)?;
    println!("{}", admission::review(&request));
    Ok(ExitCode::SUCCESS)
}

fn print_response(
    response: &AdmissionResponse,
    request: &Value,
    output: RunOutput,
) -> anyhow::Result<()> {
    match output {
        RunOutput::Json => println!("{}", serde_json::to_string(response)?),
        RunOutput::Yaml => print!("{}", serde_yaml_ng::to_string(response)?),
        RunOutput::Pretty => print!("{}", pretty(response, request)?),
    }
    Ok(())
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Verdict, message, warnings and the patch as a diff of the object.
fn pretty(response: &AdmissionResponse, request: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let status = response.status.clone().unwrap_or_default();
    let verdict = match (response.allowed, &response.patch) {
        (true, Some(_)) => "ALLOWED (mutated)".to_string(),
        (true, None) => "ALLOWED".to_string(),
        (false, _) => match status.code {
            Some(code) => format!("REJECTED ({code})"),
            None => "REJECTED".to_string(),
        },
    };
    out.push_str(&format!("{verdict}\n"));
    if let Some(message) = &status.message {
        out.push_str(&format!("message: {message}\n"));
    }
    for w in response.warnings.iter().flatten() {
        out.push_str(&format!("warning: {w}\n"));
    }
    for (k, v) in response.audit_annotations.iter().flatten() {
        out.push_str(&format!("audit: {k}={v}\n"));
    }
    if response.patch.is_some() {
        let object = request.get("object").cloned().unwrap_or(Value::Null);
        let patched = response.patched(&object)?;
        // Keys sorted on both sides: applying a patch does not keep the author's key order,
        // and a diff should show what changed, not where keys landed.
        let before = serde_yaml_ng::to_string(&sorted(&object))?;
        let after = serde_yaml_ng::to_string(&sorted(&patched))?;
        let diff = similar::TextDiff::from_lines(&before, &after);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header("object", "patched object")
                .to_string(),
        );
    }
    Ok(out)
}
