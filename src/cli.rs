//! The command line: every command's arguments, as clap reads them.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::path::PathBuf;

use sidecarctl::{admission, bench, oci, runtime};

use crate::input::read_file;

#[derive(Parser)]
#[command(
    name = "sidecarctl",
    version,
    about = "Runs Kubewarden policies locally, the way policy-server does"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Evaluate one admission request with a policy and print the AdmissionResponse.
    Run(RunArgs),
    /// Print the AdmissionReview the API server sends for an object (a CREATE), to post to
    /// `serve` or keep as a test input.
    Review(ReviewArgs),
    /// Show what the sidecar model sees in a pod or workload: types, order, resources, QoS.
    Explain(ExplainArgs),
    /// Run declarative test suites (*.suite.yaml).
    Test(TestArgs),
    /// Embed Kubewarden metadata (and the README) in a policy module, as kwctl annotate does.
    Annotate(AnnotateArgs),
    /// Print the Kubewarden metadata a module carries.
    Inspect(InspectArgs),
    /// Push a policy to an OCI registry.
    Push(PushArgs),
    /// Pull a policy from an OCI registry.
    Pull(PullArgs),
    /// Time validate and validate_settings, fresh and reused instances, against a baseline.
    Bench(BenchArgs),
    /// Generate deployment resources and packages from a policy's metadata.
    #[command(subcommand)]
    Scaffold(Scaffold),
    /// Serve policies as an admission webhook, configured by policy-server's policies.yml.
    Serve(ServeArgs),
    /// Serve the playground page (built by `make playground`) and print its URL.
    Playground(PlaygroundArgs),
    /// Write what a policy's settings mean as Kubernetes' own admission resources.
    #[command(subcommand)]
    Export(Export),
    /// Bring a sidecar set's current revision to the pods injected with an older one, in
    /// batches: in place where only images changed, by eviction otherwise.
    Rollout(RolloutArgs),
}

#[derive(clap::Args)]
pub struct RolloutArgs {
    /// The sidecar set, by name.
    pub set: String,
    /// The injector's settings, or its ClusterAdmissionPolicy; by default the cluster's
    /// ClusterAdmissionPolicy that has the set.
    #[arg(long, short = 's')]
    pub settings_path: Option<PathBuf>,
    /// Only this namespace; every namespace when omitted.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only pods with these labels (a label selector, as kubectl takes it): a canary group first.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Pods between the old revision and ready at once: a count or a percentage of the
    /// injected pods.
    #[arg(long, default_value = "10%")]
    pub max_unavailable: sidecarctl::rollout::MaxUnavailable,
    /// Pods left on the old revision (the last ones by namespace and name).
    #[arg(long, default_value_t = 0)]
    pub partition: usize,
    /// Print the plan (which pods, in place or evicted, and why) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long a batch may take: the kubelet starting the new images, or evicted pods going.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// The cluster; KUBECONFIG, ~/.kube/config or the pod's service account when omitted.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// text: progress per batch for a person; json: the outcome for a script.
    #[arg(long, short = 'o', value_enum, default_value_t = RolloutOutput::Text)]
    pub output: RolloutOutput,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RolloutOutput {
    Text,
    Json,
}

#[derive(clap::Subcommand)]
pub enum Export {
    /// Each sidecar set of the injector as a MutatingAdmissionPolicy and its binding
    /// (admissionregistration.k8s.io/v1, Kubernetes 1.36 and later): injection with no
    /// webhook. A set CEL cannot express is refused, one line per field, and the rest
    /// are written (exit 1).
    MutatingAdmissionPolicy(ExportPolicyArgs),
}

#[derive(clap::Args)]
pub struct ExportPolicyArgs {
    /// The injector's settings (YAML or JSON), or its ClusterAdmissionPolicy (a file of
    /// several documents is searched for the one that injects); - for stdin.
    pub path: String,
    /// Each policy and binding is named <prefix><set>.
    #[arg(long, default_value = "sidecar-set-", value_parser = dns_prefix)]
    pub name_prefix: String,
    /// Where to write them; stdout when omitted.
    #[arg(long)]
    pub output_path: Option<PathBuf>,
    /// yaml (documents separated by ---) or json (a v1 List).
    #[arg(long, short = 'o', value_enum, default_value_t = ExportOutput::Yaml)]
    pub output: ExportOutput,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportOutput {
    Yaml,
    Json,
}

/// A prefix that keeps `<prefix><set>` a DNS subdomain: lower-case letters, digits, '-'
/// and '.'.
fn dns_prefix(text: &str) -> Result<String, String> {
    if text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} must be lower-case letters, digits, '-' or '.'"
        ))
    }
}

#[derive(clap::Args)]
pub struct PlaygroundArgs {
    /// Where to listen; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// The built page.
    #[arg(long, default_value = sidecarctl::playground::DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The policy module: a path, file://PATH or registry://HOST/REPO:TAG.
    #[arg(long, short = 'p')]
    pub policy: String,
    /// An AdmissionReview, AdmissionRequest or Kubernetes object (JSON or YAML); - for stdin.
    #[arg(long, short = 'r')]
    pub request_path: String,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// How to print the AdmissionResponse: json (as policy-server sends it), yaml, or
    /// pretty (the verdict and the patch as a diff).
    #[arg(long, short = 'o', value_enum, default_value_t = RunOutput::Json)]
    pub output: RunOutput,
    /// Evaluation deadline in milliseconds (policy-server's default is 2 s).
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct ReviewArgs {
    /// A Kubernetes object, AdmissionRequest or AdmissionReview (JSON or YAML); - for stdin.
    pub path: String,
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// A Kubernetes object, AdmissionRequest or AdmissionReview (JSON or YAML); - for stdin.
    pub path: String,
    /// How to print it: text for a person, json for a script.
    #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
    /// The Kubernetes version the pod runs on, as the policies' kubernetesVersion setting
    /// takes it (how pod-level resources are defaulted and decide the QoS class).
    #[arg(long, default_value = "1.34", value_parser = kubernetes_version)]
    pub kubernetes_version: sidecar_model::KubeVersion,
}

fn kubernetes_version(text: &str) -> Result<sidecar_model::KubeVersion, String> {
    sidecar_model::KubeVersion::parse(text)
}

#[derive(clap::Args)]
pub struct TestArgs {
    /// Suite files or directories to search for *.suite.yaml.
    #[arg(default_value = "tests/suites")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct AnnotateArgs {
    /// metadata.yml
    #[arg(long, short = 'm')]
    pub metadata_path: PathBuf,
    /// A README to embed as io.kubewarden.policy.usage.
    #[arg(long, short = 'u')]
    pub usage_path: Option<PathBuf>,
    /// Where to write the annotated module (`-o` is an output format in every command).
    #[arg(long)]
    pub output_path: PathBuf,
    /// The module to annotate.
    pub module: PathBuf,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A path, file:// or registry:// reference.
    pub module: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// The module to push (annotated, unless --force).
    pub module: PathBuf,
    /// registry://HOST/REPO:TAG
    pub destination: String,
    /// Push a module that carries no metadata.
    #[arg(long)]
    pub force: bool,
    /// org.opencontainers.image.source (default: io.kubewarden.policy.source).
    #[arg(long)]
    pub source: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// registry://HOST/REPO:TAG
    pub source: String,
    /// Where to write the pulled module (`-o` is an output format in every command).
    #[arg(long)]
    pub output_path: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Policy modules (paths, file:// or registry://); repeat for several.
    #[arg(long = "policy", short = 'p', required = true)]
    pub policies: Vec<String>,
    /// Requests or objects to evaluate; repeat for several.
    #[arg(long = "request-path", short = 'r', required = true)]
    pub requests: Vec<String>,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Settings per policy: DIR/<module name>.yaml, when present, for that policy.
    #[arg(long)]
    pub settings_dir: Option<PathBuf>,
    /// A policy measured on the same requests in the same run (the null policy); every
    /// row gets its ratio to it.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Only this mode; both when omitted.
    #[arg(long, value_enum)]
    pub instance: Option<bench::InstanceMode>,
    /// Timed evaluations per policy, request and mode.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Evaluations run first and not timed.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// How to print the table: text for a person, json for a script.
    #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// policies.yml: policy id -> module, settings, policyMode, allowedToMutate,
    /// timeoutEvalSeconds, message.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Where to listen (0.0.0.0:8443 for every interface; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub addr: std::net::SocketAddr,
    /// TLS certificate (PEM). With --key; HTTPS is the default and the API server's only way.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (a laptop, a test, a TLS-terminating proxy).
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    pub insecure_plain_http: bool,
    /// Evaluations at the same time (default: the number of cores); the instance pool has
    /// one slot per worker.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest request body accepted, in bytes (the API server sends at most ~3 MiB).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// What one instance's memory may grow to, in MiB: a policy that allocates
    /// without end fails that request, not the node.
    #[arg(long, default_value_t = runtime::DEFAULT_MAX_MEMORY >> 20)]
    pub max_memory_mib: usize,
    /// Seconds a client may take to send a request's headers, and then its body.
    #[arg(long, default_value_t = 10)]
    pub read_timeout: u64,
    /// Evaluation deadline in seconds for policies without timeoutEvalSeconds.
    #[arg(long, default_value_t = 2)]
    pub policy_timeout: u64,
    /// Seconds a shutdown waits for requests in flight.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Milliseconds a request waits for a free worker (and its instance slot) before it is
    /// answered 503 with Retry-After; the webhook's failurePolicy then decides.
    #[arg(long, default_value_t = 5000)]
    pub pool_wait_ms: u64,
    /// How the log on stderr is written: text lines, or JSON objects (policy-server's
    /// --log-fmt).
    #[arg(long, value_enum, default_value = "text")]
    pub log_fmt: sidecarctl::serve::LogFormat,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Subcommand)]
pub enum Scaffold {
    /// A policies.kubewarden.io/v1 ClusterAdmissionPolicy or AdmissionPolicy for a module.
    Manifest {
        /// ClusterAdmissionPolicy, or AdmissionPolicy (namespaced).
        #[arg(long = "type", short = 't', value_parser = ["ClusterAdmissionPolicy", "AdmissionPolicy"])]
        kind: String,
        /// The module as the cluster fetches it (registry://…), or a path; its metadata is read.
        module: String,
        /// The policy's settings (YAML or JSON); the policy's validate_settings is asked.
        #[arg(long, short = 's')]
        settings_path: Option<PathBuf>,
        /// The resource's name (a DNS-1123 subdomain); from the module's name when omitted.
        #[arg(long, value_parser = dns_name)]
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
        /// The policy's metadata.yml.
        #[arg(long, short = 'm')]
        metadata_path: PathBuf,
        /// The policy's questions-ui.yml, embedded for the Rancher UI.
        #[arg(long, short = 'q')]
        questions_path: Option<PathBuf>,
        /// RFC 3339 time (2026-12-05T10:00:00Z); now when omitted.
        #[arg(long, value_parser = rfc3339)]
        created_at: Option<String>,
    },
}

#[derive(clap::Args, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP to registries (a registry on loopback); HTTPS otherwise.
    #[arg(long)]
    pub plain_http: bool,
    /// Seconds one push or pull may take, connecting included; a pull that fails falls
    /// back to the copy pulled before, if there is one.
    #[arg(long, value_name = "SECONDS", default_value_t = oci::DEFAULT_REGISTRY_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub registry_timeout: u64,
}

impl RegistryArgs {
    pub fn access(&self) -> oci::Access {
        oci::Access {
            plain_http: self.plain_http,
            docker_config: None,
            timeout: std::time::Duration::from_secs(self.registry_timeout),
        }
    }
}

#[derive(clap::Args)]
#[group(multiple = false)]
pub struct SettingsArgs {
    /// Policy settings as a JSON or YAML file.
    #[arg(long, short = 's')]
    pub settings_path: Option<PathBuf>,
    /// Policy settings as inline JSON.
    #[arg(long)]
    pub settings_json: Option<String>,
}

impl SettingsArgs {
    pub fn load(&self) -> anyhow::Result<Value> {
        let (settings, source) = if let Some(path) = &self.settings_path {
            let source = path.display().to_string();
            (
                admission::parse_document(&read_file(path)?, &source)?,
                source,
            )
        } else if let Some(json) = &self.settings_json {
            let settings = serde_json::from_str(json).context("--settings-json: invalid JSON")?;
            (settings, "--settings-json".to_string())
        } else {
            return Ok(Value::Object(Default::default()));
        };
        if !settings.is_object() {
            bail!("{source}: settings must be an object");
        }
        Ok(settings)
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RunOutput {
    Json,
    Yaml,
    Pretty,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExplainOutput {
    Text,
    Json,
}

/// A Kubernetes object name: a DNS-1123 subdomain (lower-case letters, digits, `-` and
/// `.`, starting and ending alphanumeric, at most 253 characters).
fn dns_name(text: &str) -> Result<String, String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !text.is_empty()
        && text.len() <= 253
        && text.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && text.starts_with(alnum)
        && text.ends_with(alnum);
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// An RFC 3339 time, as Artifact Hub reads createdAt.
fn rfc3339(text: &str) -> Result<String, String> {
    humantime::parse_rfc3339(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (2026-12-05T10:00:00Z): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `--help` says what every option and argument of every command is.
    #[test]
    fn every_option_says_what_it_is() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if !["help", "version"].contains(&id) && arg.get_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "sidecarctl", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
