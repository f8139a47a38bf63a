//! `push` and `pull`: policies as OCI artifacts.

use sidecarctl::oci;

use anyhow::{Context, bail};
use std::process::ExitCode;

use crate::cli::{PullArgs, PushArgs};

/// `sidecarctl push`.
pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let PushArgs {
        module,
        destination,
        force,
        source,
        registry,
    } = args;
    let oci::ModuleRef::Registry(image) = oci::ModuleRef::parse(&destination)? else {
        bail!("{destination}: push to a registry:// reference");
    };
    let bytes =
        std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
    // A file that is no module is named before any registry is asked.
    sidecarctl::metadata::read(&bytes).with_context(|| module.display().to_string())?;
    let url = oci::push(&bytes, &image, &registry.access(), force, source.as_deref())?;
    println!("{url}");
    Ok(ExitCode::SUCCESS)
}

/// `sidecarctl pull`.
pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let PullArgs {
        source,
        output_path,
        registry,
    } = args;
    let oci::ModuleRef::Registry(image) = oci::ModuleRef::parse(&source)? else {
        bail!("{source}: pull from a registry:// reference");
    };
    let bytes = oci::pull(&image, &registry.access())?;
    std::fs::write(&output_path, bytes)
        .with_context(|| format!("cannot write {}", output_path.display()))?;
    Ok(ExitCode::SUCCESS)
}
