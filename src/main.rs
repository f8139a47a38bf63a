//! sidecarctl: runs Kubewarden waPC policies locally, the way policy-server does.

mod admission;
mod evaluation;
mod runtime;
mod testsuite;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use admission::AdmissionResponse;
use evaluation::Evaluator;
use runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "sidecarctl",
    version,
    about = "Runs Kubewarden policies locally, the way policy-server does"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate one admission request with a policy and print the AdmissionResponse.
    Run {
        /// The policy module (.wasm).
        #[arg(long, short = 'p')]
        policy: PathBuf,
        /// An AdmissionReview, AdmissionRequest or Kubernetes object (JSON or YAML); - for stdin.
        #[arg(long, short = 'r')]
        request_path: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = RunOutput::Json)]
        output: RunOutput,
        /// Evaluation deadline in milliseconds (policy-server's default is 2 s).
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Show what the sidecar model sees in a pod or workload: types, order, resources, QoS.
    Explain {
        /// A Kubernetes object, AdmissionRequest or AdmissionReview (JSON or YAML); - for stdin.
        path: String,
        #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
        output: ExplainOutput,
    },
    /// Run declarative test suites (*.suite.yaml).
    Test {
        /// Suite files or directories to search for *.suite.yaml.
        #[arg(default_value = "tests/suites")]
        paths: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
#[group(multiple = false)]
struct SettingsArgs {
    /// Policy settings as a JSON or YAML file.
    #[arg(long, short = 's')]
    settings_path: Option<PathBuf>,
    /// Policy settings as inline JSON.
    #[arg(long)]
    settings_json: Option<String>,
}

impl SettingsArgs {
    fn load(&self) -> anyhow::Result<Value> {
        let settings = if let Some(path) = &self.settings_path {
            admission::parse_document(&read_file(path)?, &path.display().to_string())?
        } else if let Some(json) = &self.settings_json {
            serde_json::from_str(json).context("--settings-json: invalid JSON")?
        } else {
            return Ok(Value::Object(Default::default()));
        };
        if !settings.is_object() {
            bail!("settings must be an object");
        }
        Ok(settings)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum RunOutput {
    Json,
    Yaml,
    Pretty,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExplainOutput {
    Text,
    Json,
}

/// A failure the user can act on: one line on stderr, exit status 2.
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    // Whatever goes wrong, the user gets one line and no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let reason = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal error: {reason}");
        std::process::exit(EXIT_BAD_INPUT as i32);
    }));
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            policy,
            request_path,
            settings,
            output,
            timeout_ms,
        } => {
            let settings = settings.load()?;
            let request = admission::to_request(read_document(&request_path)?)?;
            let runtime = Runtime::new()?;
            let module = runtime.load(&policy, Duration::from_millis(timeout_ms))?;
            let evaluator = Evaluator::new(module, settings)?;
            let (response, failure) = evaluator.evaluate(&request);
            print_response(&response, &request, output)?;
            match failure {
                // stdout has what policy-server would answer (a 500 rejection); the
                // failure itself is the user's to fix.
                Some(reason) => bail!("{}: {reason}", evaluator.policy.name),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Explain { path, output } => {
            let document = read_document(&path)?;
            let request = admission::to_request(document)?;
            let object = request.get("object").cloned().unwrap_or(Value::Null);
            let explanation = sidecar_model::explain::explain(&object, &sidecar_model::KnownSidecars::default())?
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
        Command::Test { paths } => {
            let files = testsuite::collect(&paths)?;
            if files.is_empty() {
                bail!(
                    "no *.suite.yaml files under {}",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let runtime = Runtime::new()?;
            let mut stdout = std::io::stdout().lock();
            let outcome = testsuite::run(&runtime, &files, &mut stdout)?;
            writeln!(
                stdout,
                "{} passed, {} failed",
                outcome.passed, outcome.failed
            )?;
            Ok(if outcome.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A document from a file, or from stdin for `-`.
fn read_document(path: &str) -> anyhow::Result<Value> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        text
    } else {
        read_file(Path::new(path))?
    };
    admission::parse_document(&text, if path == "-" { "stdin" } else { path })
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
