//! `bench`: fresh and reused instances timed against a baseline in the same run.

use sidecarctl::{admission, bench, evaluation, oci, runtime};

use anyhow::bail;
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

use evaluation::Evaluator;
use runtime::Runtime;

use crate::cli::{BenchArgs, ExplainOutput};
use crate::input::{read_document, read_file};

/// `sidecarctl bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let BenchArgs {
        policies,
        requests,
        settings,
        settings_dir,
        baseline,
        instance,
        samples,
        warmup,
        output,
        registry,
    } = args;
    if let Some(dir) = settings_dir.as_ref().filter(|d| !d.is_dir()) {
        bail!("--settings-dir {}: no such directory", dir.display());
    }
    if samples == 0 {
        bail!("--samples must be at least 1");
    }
    let runtime = Runtime::new()?;
    let access = registry.access();
    let common = settings.load()?;
    let plan = bench::Plan { warmup, samples };
    let modes = match instance {
        Some(m) => vec![m],
        None => vec![bench::InstanceMode::Fresh, bench::InstanceMode::Reused],
    };
    let stem = |s: &str| {
        Path::new(s.rsplit('/').next().unwrap_or(s))
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_else(|| s.to_string())
    };
    let mut loaded = Vec::new();
    for (reference, is_baseline) in baseline
        .iter()
        .map(|b| (b, true))
        .chain(policies.iter().map(|p| (p, false)))
    {
        let policy = oci::load_policy(
            &runtime,
            &oci::ModuleRef::parse(reference)?,
            &access,
            runtime::DEFAULT_TIMEOUT,
        )?;
        let name = stem(reference);
        let own = settings_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.yaml")))
            .filter(|f| f.is_file());
        let settings = match (is_baseline, own) {
            (true, _) => Value::Object(Default::default()),
            (false, Some(file)) => {
                admission::parse_document(&read_file(&file)?, &file.display().to_string())?
            }
            (false, None) => common.clone(),
        };
        let evaluator = Evaluator::new(policy, settings.clone())?;
        loaded.push((name, evaluator.policy, settings));
    }
    let mut rows = Vec::new();
    for request_path in &requests {
        let request = admission::to_request(read_document(request_path)?)?;
        rows.extend(bench::bench_request(
            &loaded,
            &stem(request_path),
            &request,
            &modes,
            &plan,
        )?);
    }
    rows.extend(bench::bench_settings(&loaded, &modes, &plan)?);
    let rows = match &baseline {
        Some(b) => bench::with_ratios(rows, &stem(b)),
        None => rows,
    };
    let rows = bench::with_instantiation(rows);
    match output {
        ExplainOutput::Text => print!(
            "{}{}",
            bench::table(&rows),
            bench::instantiation_table(&rows)
        ),
        ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(ExitCode::SUCCESS)
}
