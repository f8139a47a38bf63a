//! `export mutating-admission-policy`: the injector's sets as the API server's own
//! policies. What each set becomes is the model's (`sidecar_model::inject::export`); this
//! reads the settings or the ClusterAdmissionPolicy and writes the resources.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use sidecar_model::inject::{ExportOptions, Settings, export};

use crate::cli::{ExportOutput, ExportPolicyArgs};
use crate::input::read_file;
use sidecarctl::files::write_atomically;

pub fn mutating_admission_policy(args: ExportPolicyArgs) -> anyhow::Result<ExitCode> {
    let (text, source) = if args.path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        (text, "stdin".to_string())
    } else {
        (read_file(Path::new(&args.path))?, args.path.clone())
    };
    let (settings, mut options) = read(&text).with_context(|| source.clone())?;
    options.name_prefix = args.name_prefix;
    let settings: Settings =
        serde_json::from_value(settings).map_err(|e| anyhow::anyhow!("{source}: settings: {e}"))?;
    let exported =
        export(&settings, &options).map_err(|e| anyhow::anyhow!("{source}: settings: {e}"))?;
    let mut resources = Vec::new();
    let mut refused = false;
    for result in exported {
        match result {
            Ok(set) => {
                resources.push((set.set.clone(), set.revision.clone(), set.policy));
                resources.push((set.set, set.revision, set.binding));
            }
            Err(refusals) => {
                refused = true;
                for r in refusals {
                    eprintln!("{source}: refused: {r}");
                }
            }
        }
    }
    let out = match args.output {
        ExportOutput::Yaml => {
            let mut out = String::new();
            for (set, revision, resource) in &resources {
                out.push_str(&format!(
                    "---\n# sidecar set {set:?}, revision {revision}, from {source}\n"
                ));
                out.push_str(&serde_yaml_ng::to_string(resource)?);
            }
            out
        }
        ExportOutput::Json => {
            let items: Vec<&Value> = resources.iter().map(|(_, _, r)| r).collect();
            serde_json::to_string_pretty(
                &json!({"apiVersion": "v1", "kind": "List", "items": items}),
            )? + "\n"
        }
    };
    match &args.output_path {
        Some(path) => write_atomically(path, out.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().write_all(out.as_bytes())?,
    }
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The settings, and what the ClusterAdmissionPolicy says about where it runs when the
/// input is one: its failure policy, match conditions and selectors.
pub(super) fn read(text: &str) -> anyhow::Result<(Value, ExportOptions)> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let is_policy = |d: &Value| {
        d.get("kind").and_then(Value::as_str) == Some("ClusterAdmissionPolicy")
            || d.get("kind").and_then(Value::as_str) == Some("AdmissionPolicy")
    };
    if !documents.iter().any(is_policy) {
        return match documents.as_slice() {
            [settings] => Ok((settings.clone(), ExportOptions::default())),
            [] => bail!("no settings in it"),
            _ => bail!(
                "{} documents and none a ClusterAdmissionPolicy: give the settings as one document",
                documents.len()
            ),
        };
    }
    let injectors: Vec<&Value> = documents
        .iter()
        .filter(|d| is_policy(d) && d.pointer("/spec/settings/sidecarSets").is_some())
        .collect();
    let policy = match injectors.as_slice() {
        [one] => *one,
        [] => bail!("no ClusterAdmissionPolicy in it has settings with sidecarSets"),
        many => bail!(
            "{} policies in it have sidecarSets ({}); give one",
            many.len(),
            many.iter()
                .map(|p| p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let spec = &policy["spec"];
    let options = ExportOptions {
        failure_policy: spec
            .get("failurePolicy")
            .and_then(Value::as_str)
            .unwrap_or("Fail")
            .to_string(),
        match_conditions: spec
            .get("matchConditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        namespace_selector: spec.get("namespaceSelector").cloned(),
        object_selector: spec.get("objectSelector").cloned(),
        ..ExportOptions::default()
    };
    Ok((spec["settings"].clone(), options))
}
