//! `scaffold`: ClusterAdmissionPolicy manifests and Artifact Hub packages from a module's
//! metadata.

use sidecarctl::{metadata, oci, scaffold};

use anyhow::{Context, bail};
use std::process::ExitCode;

use crate::cli::Scaffold;
use crate::input::read_file;

/// `sidecarctl scaffold`.
pub fn scaffold(command: Scaffold) -> anyhow::Result<ExitCode> {
    match command {
        Scaffold::Manifest {
            kind,
            module,
            settings_path,
            name,
            published_as,
            registry,
        } => {
            let reference = oci::ModuleRef::parse(&module)?;
            let (_, bytes) = oci::fetch(&reference, &registry.access(), None)?;
            let meta = metadata::read(&bytes)
                .with_context(|| module.clone())?
                .with_context(|| {
                    format!("{module} carries no Kubewarden metadata: annotate it first")
                })?;
            // Read as YAML values, which keep the order the settings were written in.
            let settings = match &settings_path {
                Some(path) => {
                    let text = read_file(path)?;
                    serde_yaml_ng::from_str(&text)
                        .with_context(|| format!("{}: invalid YAML", path.display()))?
                }
                None => serde_yaml_ng::Value::Mapping(Default::default()),
            };
            let source = settings_path
                .as_ref()
                .map_or("the settings".to_string(), |p| p.display().to_string());
            if !settings.is_mapping() {
                bail!("{source}: settings must be an object");
            }
            // A manifest the policy would refuse at start-up is no manifest: ask it first.
            let json = serde_json::to_value(&settings)
                .with_context(|| format!("{source}: not JSON-shaped"))?;
            let runtime = sidecarctl::runtime::Runtime::new()?;
            let policy =
                runtime.load_bytes(&module, &bytes, sidecarctl::runtime::DEFAULT_TIMEOUT)?;
            let answer = sidecarctl::evaluation::validate_settings(&policy, &json)
                .with_context(|| format!("{module}: cannot validate {source}"))?;
            if !answer.valid {
                bail!(
                    "{source}: {module} refuses these settings: {}",
                    answer.message.unwrap_or_else(|| "no reason given".into())
                );
            }
            let module = match (published_as, reference) {
                (Some(published), _) => published,
                (None, oci::ModuleRef::Registry(image)) => format!("registry://{image}"),
                (None, oci::ModuleRef::File(path)) => {
                    format!(
                        "file://{}",
                        std::fs::canonicalize(&path).unwrap_or(path).display()
                    )
                }
            };
            print!(
                "{}",
                scaffold::manifest(&kind, &module, &meta, settings, name.as_deref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Scaffold::Artifacthub {
            metadata_path,
            questions_path,
            created_at,
        } => {
            let meta = metadata::Metadata::from_yaml(
                &read_file(&metadata_path)?,
                &metadata_path.display().to_string(),
            )?;
            let questions = questions_path.map(|q| read_file(&q)).transpose()?;
            let created_at = created_at.unwrap_or_else(scaffold::now);
            print!(
                "{}",
                scaffold::artifacthub(&meta, questions.as_deref(), &created_at)?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
