//! sidecarctl: runs Kubewarden waPC policies locally, the way policy-server does.

use sidecarctl::{
    admission, bench, evaluation, metadata, oci, runtime, scaffold, serve, testsuite,
};

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
        /// The policy module: a path, file://PATH or registry://HOST/REPO:TAG.
        #[arg(long, short = 'p')]
        policy: String,
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
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Print the AdmissionReview the API server sends for an object (a CREATE), to post to
    /// `serve` or keep as a test input.
    Review {
        /// A Kubernetes object, AdmissionRequest or AdmissionReview (JSON or YAML); - for stdin.
        path: String,
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
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Embed Kubewarden metadata (and the README) in a policy module, as kwctl annotate does.
    Annotate {
        /// metadata.yml
        #[arg(long, short = 'm')]
        metadata_path: PathBuf,
        /// A README to embed as io.kubewarden.policy.usage.
        #[arg(long, short = 'u')]
        usage_path: Option<PathBuf>,
        #[arg(long, short = 'o')]
        output_path: PathBuf,
        /// The module to annotate.
        module: PathBuf,
    },
    /// Print the Kubewarden metadata a module carries.
    Inspect {
        /// A path, file:// or registry:// reference.
        module: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a policy to an OCI registry.
    Push {
        module: PathBuf,
        /// registry://HOST/REPO:TAG
        destination: String,
        /// Push a module that carries no metadata.
        #[arg(long)]
        force: bool,
        /// org.opencontainers.image.source (default: io.kubewarden.policy.source).
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull a policy from an OCI registry.
    Pull {
        /// registry://HOST/REPO:TAG
        source: String,
        #[arg(long, short = 'o')]
        output_path: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Time validate and validate_settings, fresh and reused instances, against a baseline.
    Bench {
        /// Policy modules (paths, file:// or registry://); repeat for several.
        #[arg(long = "policy", short = 'p', required = true)]
        policies: Vec<String>,
        /// Requests or objects to evaluate; repeat for several.
        #[arg(long = "request-path", short = 'r', required = true)]
        requests: Vec<String>,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Settings per policy: DIR/<module name>.yaml, when present, for that policy.
        #[arg(long)]
        settings_dir: Option<PathBuf>,
        /// A policy measured on the same requests in the same run (the null policy); every
        /// row gets its ratio to it.
        #[arg(long)]
        baseline: Option<String>,
        /// Only this mode; both when omitted.
        #[arg(long, value_enum)]
        instance: Option<bench::InstanceMode>,
        #[arg(long, default_value_t = 200)]
        samples: usize,
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
        output: ExplainOutput,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Generate deployment resources and packages from a policy's metadata.
    #[command(subcommand)]
    Scaffold(Scaffold),
    /// Serve policies as an admission webhook, configured by policy-server's policies.yml.
    Serve {
        /// policies.yml: policy id -> module, settings, policyMode, allowedToMutate,
        /// timeoutEvalSeconds, message.
        #[arg(long, short = 'c')]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        addr: std::net::SocketAddr,
        /// TLS certificate (PEM). With --key; HTTPS is the default and the API server's only way.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Serve plain HTTP instead of HTTPS (a laptop, a test, a TLS-terminating proxy).
        #[arg(long, conflicts_with_all = ["cert", "key"])]
        insecure_plain_http: bool,
        /// Evaluations at the same time (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Largest request body accepted, in bytes (the API server sends at most ~3 MiB).
        #[arg(long, default_value_t = 3 * 1024 * 1024)]
        max_body_bytes: usize,
        /// What one instance's memory may grow to, in MiB: a policy that allocates
        /// without end fails that request, not the node.
        #[arg(long, default_value_t = runtime::DEFAULT_MAX_MEMORY >> 20)]
        max_memory_mib: usize,
        /// Seconds a client may take to send a request's headers, and then its body.
        #[arg(long, default_value_t = 10)]
        read_timeout: u64,
        /// Evaluation deadline in seconds for policies without timeoutEvalSeconds.
        #[arg(long, default_value_t = 2)]
        policy_timeout: u64,
        /// Seconds a shutdown waits for requests in flight.
        #[arg(long, default_value_t = 30)]
        shutdown_grace: u64,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Subcommand)]
enum Scaffold {
    /// A policies.kubewarden.io/v1 ClusterAdmissionPolicy or AdmissionPolicy for a module.
    Manifest {
        #[arg(long = "type", short = 't')]
        kind: String,
        /// The module as the cluster fetches it (registry://…), or a path; its metadata is read.
        module: String,
        #[arg(long, short = 's')]
        settings_path: Option<PathBuf>,
        #[arg(long)]
        name: Option<String>,
        /// The module reference to write into the manifest, when the metadata is read from
        /// a local copy of a published module (e.g. registry://ghcr.io/org/policy:v1).
        #[arg(long)]
        published_as: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// The Artifact Hub package (artifacthub-pkg.yml) of a policy.
    Artifacthub {
        #[arg(long, short = 'm')]
        metadata_path: PathBuf,
        #[arg(long, short = 'q')]
        questions_path: Option<PathBuf>,
        /// RFC 3339 time; now when omitted.
        #[arg(long)]
        created_at: Option<String>,
    },
}

#[derive(clap::Args, Clone)]
struct RegistryArgs {
    /// Talk plain HTTP to registries (a registry on loopback); HTTPS otherwise.
    #[arg(long)]
    plain_http: bool,
}

impl RegistryArgs {
    fn access(&self) -> oci::Access {
        oci::Access {
            plain_http: self.plain_http,
            docker_config: None,
        }
    }
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
            registry,
        } => {
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
            let (response, failure) = evaluator.evaluate(&request);
            print_response(&response, &request, output)?;
            match failure {
                // stdout has what policy-server would answer (a 500 rejection); the
                // failure itself is the user's to fix.
                Some(reason) => bail!("{}: {reason}", evaluator.policy.name),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Review { path } => {
            let request = admission::to_request(read_document(&path)?)?;
            println!("{}", admission::review(&request));
            Ok(ExitCode::SUCCESS)
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
        Command::Test { paths, registry } => {
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
            let outcome = testsuite::run(&runtime, &registry.access(), &files, &mut stdout)?;
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
        Command::Annotate {
            metadata_path,
            usage_path,
            output_path,
            module,
        } => {
            let mut meta = metadata::Metadata::from_yaml(
                &read_file(&metadata_path)?,
                &metadata_path.display().to_string(),
            )?;
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read {}", module.display()))?;
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
        Command::Inspect { module, registry } => {
            let (name, bytes) =
                oci::fetch(&oci::ModuleRef::parse(&module)?, &registry.access(), None)?;
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
        Command::Push {
            module,
            destination,
            force,
            source,
            registry,
        } => {
            let oci::ModuleRef::Registry(image) = oci::ModuleRef::parse(&destination)? else {
                bail!("{destination}: push to a registry:// reference");
            };
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read {}", module.display()))?;
            let url = oci::push(&bytes, &image, &registry.access(), force, source.as_deref())?;
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull {
            source,
            output_path,
            registry,
        } => {
            let oci::ModuleRef::Registry(image) = oci::ModuleRef::parse(&source)? else {
                bail!("{source}: pull from a registry:// reference");
            };
            let bytes = oci::pull(&image, &registry.access())?;
            std::fs::write(&output_path, bytes)
                .with_context(|| format!("cannot write {}", output_path.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
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
        } => {
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
            match output {
                ExplainOutput::Text => print!("{}", bench::table(&rows)),
                ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            addr,
            cert,
            key,
            insecure_plain_http,
            workers,
            max_body_bytes,
            max_memory_mib,
            read_timeout,
            policy_timeout,
            shutdown_grace,
            registry,
        } => {
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                _ if insecure_plain_http => None,
                _ => bail!(
                    "serve needs --cert and --key (HTTPS), or --insecure-plain-http to serve plain HTTP"
                ),
            };
            if policy_timeout == 0 {
                bail!("--policy-timeout must be at least 1 second");
            }
            let workers = workers
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1);
            if workers == 0 {
                bail!("--workers must be at least 1");
            }
            if max_memory_mib == 0 || max_memory_mib > 4096 {
                bail!("--max-memory-mib must be from 1 to 4096 (wasm32's whole address space)");
            }
            serve::run(
                &config,
                serve::Options {
                    addr,
                    tls,
                    workers,
                    max_body_bytes,
                    max_memory: max_memory_mib << 20,
                    default_timeout: Duration::from_secs(policy_timeout),
                    grace: Duration::from_secs(shutdown_grace),
                    read_timeout: Duration::from_secs(read_timeout.max(1)),
                },
                &registry.access(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scaffold(Scaffold::Manifest {
            kind,
            module,
            settings_path,
            name,
            published_as,
            registry,
        }) => {
            let reference = oci::ModuleRef::parse(&module)?;
            let (_, bytes) = oci::fetch(&reference, &registry.access(), None)?;
            let meta = metadata::read(&bytes)?.with_context(|| {
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
            if !settings.is_mapping() {
                bail!("settings must be an object");
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
        Command::Scaffold(Scaffold::Artifacthub {
            metadata_path,
            questions_path,
            created_at,
        }) => {
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
