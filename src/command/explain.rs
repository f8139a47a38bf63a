//! `explain`: what the sidecar model sees in a pod, natively (the one command that
//! speaks sidecars).

use sidecarctl::admission;

use anyhow::Context;
use serde_json::Value;
use std::process::ExitCode;

use crate::cli::{ExplainArgs, ExplainOutput};
use crate::input::read_document;

/// `sidecarctl explain`.
pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let ExplainArgs {
        path,
        output,
        kubernetes_version,
    } = args;
    let document = read_document(&path)?;
    let request = admission::to_request(document)?;
    let object = request.get("object").cloned().unwrap_or(Value::Null);
    let explanation = sidecar_model::explain::explain(
        &object,
        &sidecar_model::KnownSidecars::default(),
        kubernetes_version,
    )
        .with_context(|| path.clone())?
        .with_context(|| {
            format!(
                "{path}: a {} holds no pod spec; explain takes a Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob or ReplicationController",
                object.get("kind").and_then(Value::as_str).unwrap_or("document without kind")
            )
        })?;
    match output {
        ExplainOutput::Text => print!("{}", explanation.render_text()),
        ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
    }
    Ok(ExitCode::SUCCESS)
}
