//! `annotate` and `inspect`: Kubewarden metadata written into, and read from, a module.

use sidecarctl::{metadata, oci, runtime};

use anyhow::Context;
use std::process::ExitCode;

use runtime::Runtime;

use crate::cli::{AnnotateArgs, InspectArgs};
use crate::input::read_file;

/// `sidecarctl annotate`.
pub fn annotate(args: AnnotateArgs) -> anyhow::Result<ExitCode> {
    let AnnotateArgs {
        metadata_path,
        usage_path,
        output_path,
        module,
    } = args;
    let mut meta = metadata::Metadata::from_yaml(
        &read_file(&metadata_path)?,
        &metadata_path.display().to_string(),
    )?;
    let bytes =
        std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
    if meta.execution_mode == "kubewarden-wapc" {
        let policy = Runtime::new()?.load_bytes(
            &module.display().to_string(),
            &bytes,
            runtime::DEFAULT_TIMEOUT,
        )?;
        let answer = policy.call("protocol_version", &[])?;
        let version: String = serde_json::from_slice(&answer).with_context(|| {
            format!(
                "{}: protocol_version answered {:?}",
                module.display(),
                String::from_utf8_lossy(&answer)
            )
        })?;
        meta.protocol_version = Some(version);
    }
    if let Some(usage) = usage_path {
        meta.annotations
            .insert(metadata::USAGE.into(), read_file(&usage)?);
    }
    let annotated = metadata::embed(&bytes, &meta)?;
    std::fs::write(&output_path, annotated)
        .with_context(|| format!("cannot write {}", output_path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// `sidecarctl inspect`.
pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let InspectArgs { module, registry } = args;
    let (name, bytes) = oci::fetch(&oci::ModuleRef::parse(&module)?, &registry.access(), None)?;
    match metadata::read(&bytes).with_context(|| name.clone())? {
        Some(meta) => {
            print!("{}", serde_yaml_ng::to_string(&meta)?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "{name} carries no Kubewarden metadata: it was not annotated (sidecarctl annotate)"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
