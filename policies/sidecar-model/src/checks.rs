//! Lifecycle-type correctness: every container has the type its role calls for and only
//! the fields that type allows. Each check is a named rule; the policy decides its level.

use crate::spec::Container;
use k8s_openapi::api::core::v1::LifecycleHandler;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::finding::Finding;
use crate::lifecycle_type::{ContainerList, LifecycleType};
use crate::pod::PodModel;

/// The rules, by their stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    LegacySidecar,
    FieldPlacement,
    Annotations,
    StartupProbe,
    TerminationBudget,
    OptionalSidecar,
    PostSidecarJob,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::LegacySidecar,
        Rule::FieldPlacement,
        Rule::Annotations,
        Rule::StartupProbe,
        Rule::TerminationBudget,
        Rule::OptionalSidecar,
        Rule::PostSidecarJob,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::LegacySidecar => "legacy-sidecar",
            Rule::FieldPlacement => "field-placement",
            Rule::Annotations => "annotations",
            Rule::StartupProbe => "startup-probe",
            Rule::TerminationBudget => "termination-budget",
            Rule::OptionalSidecar => "optional-sidecar",
            Rule::PostSidecarJob => "post-sidecar-job",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Kubernetes minor version, for fields that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    /// Container restart rules (`restartPolicy` and `restartPolicyRules` on app
    /// containers, KEP-5307) arrived in 1.34.
    pub const CONTAINER_RESTART_RULES: KubeVersion = KubeVersion {
        major: 1,
        minor: 34,
    };

    /// `1.33`, `v1.33`, `1.33.2`, and what clusters print: `v1.30.4-eks-a737599` (EKS),
    /// `v1.31.2+k3s1` (k3s), `v1.29.1-gke.1589018` (GKE). A pre-release or build suffix
    /// follows the patch number, as in semantic versions; only major and minor gate rules.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid Kubernetes version {text:?} (expected e.g. \"1.33\" or \"v1.33.2-eks-1\")"
            )
        };
        let trimmed = text.trim();
        let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let number = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        let mut parts = trimmed.splitn(3, '.');
        let major = parts.next().and_then(number).ok_or_else(bad)?;
        let minor = parts.next().and_then(number).ok_or_else(bad)?;
        if let Some(rest) = parts.next() {
            // `4-eks-a737599`, `2+k3s1`: the patch, then a suffix that is not empty.
            let end = rest.find(['-', '+']).unwrap_or(rest.len());
            let (patch, suffix) = rest.split_at(end);
            if number(patch).is_none() || suffix.len() == 1 {
                return Err(bad());
            }
        }
        Ok(KubeVersion { major, minor })
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One stop-time cost: a container and its `preStop` wait, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreStop {
    pub container: String,
    pub seconds: i64,
}

/// What a rule found, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Problem {
    /// A sidecar runs as a regular container.
    LegacySidecar {
        container: String,
        runs_to_completion: bool,
    },
    /// A field an init step may not have (probes, hooks, a restartPolicy other than Always).
    InitField { container: String, field: String },
    /// `restartPolicy`/`restartPolicyRules` on an app container before Kubernetes 1.34.
    AppRestartField {
        container: String,
        field: String,
        version: String,
    },
    /// An annotation the model could not use.
    Annotation { finding: Finding },
    /// A sidecar without a startupProbe.
    NoStartupProbe { container: String },
    /// The grace period cannot cover the preStop hooks.
    TerminationBudget {
        grace: i64,
        longest_app: Option<PreStop>,
        sidecars: Vec<PreStop>,
        needed: i64,
    },
    /// An optional sidecar whose readinessProbe gates the pod's readiness.
    OptionalGatesReadiness { container: String },
    /// A post-sidecar in a pod that runs to completion.
    PostSidecarInJob { container: String },
}

/// A rule and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub rule: Rule,
    pub problem: Problem,
}

impl Violation {
    pub fn container(&self) -> Option<&str> {
        match &self.problem {
            Problem::LegacySidecar { container, .. }
            | Problem::InitField { container, .. }
            | Problem::AppRestartField { container, .. }
            | Problem::NoStartupProbe { container }
            | Problem::OptionalGatesReadiness { container }
            | Problem::PostSidecarInJob { container } => Some(container),
            Problem::Annotation { finding } => finding.container(),
            Problem::TerminationBudget { .. } => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.rule)?;
        match &self.problem {
            Problem::LegacySidecar {
                container,
                runs_to_completion,
            } => {
                write!(f, "sidecar {container:?} runs as a regular container")?;
                if *runs_to_completion {
                    f.write_str(
                        ", so it keeps running after the app exits and the Job would never complete",
                    )?;
                } else {
                    f.write_str(", so nothing makes it start before the app or stop after it")?;
                }
                f.write_str(
                    "; move it to initContainers with restartPolicy: Always (a native sidecar)",
                )
            }
            Problem::InitField { container, field } => write!(
                f,
                "init container {container:?} has {field}, which only a native sidecar may have; the API server will refuse every pod of it: remove {field}, or give {container:?} restartPolicy: Always if it is a sidecar"
            ),
            Problem::AppRestartField {
                container,
                field,
                version,
            } => write!(
                f,
                "app container {container:?} sets {field}, which Kubernetes {version} refuses (container restart rules arrive in 1.34); remove it, or make {container:?} a native sidecar in initContainers"
            ),
            Problem::Annotation { finding } => write!(f, "{finding}"),
            Problem::NoStartupProbe { container } => write!(
                f,
                "sidecar {container:?} has no startupProbe: Kubernetes counts it started as soon as its process runs, so the containers after it may start before it is ready; add a startupProbe"
            ),
            Problem::TerminationBudget {
                grace,
                longest_app,
                sidecars,
                needed,
            } => {
                let mut terms = Vec::new();
                if let Some(app) = longest_app {
                    terms.push(format!(
                        "{}s ({} preStop, longest app)",
                        app.seconds, app.container
                    ));
                }
                for s in sidecars {
                    terms.push(format!("{}s ({} preStop)", s.seconds, s.container));
                }
                write!(
                    f,
                    "terminationGracePeriodSeconds {grace} cannot cover the preStop hooks: {} = {needed}s, and sidecars stop one after the other after the apps; raise terminationGracePeriodSeconds to at least {needed} or shorten the hooks",
                    terms.join(" + ")
                )
            }
            Problem::OptionalGatesReadiness { container } => write!(
                f,
                "sidecar {container:?} is marked optional, but its readinessProbe counts toward the pod's Ready condition, so its failure takes the pod out of service; remove its readinessProbe"
            ),
            Problem::PostSidecarInJob { container } => write!(
                f,
                "post-sidecar {container:?} runs in a pod that runs to completion: it keeps running after the work is done and the pod never completes; make it a native sidecar or drop it"
            ),
        }
    }
}

/// Settings the checks need.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    pub kubernetes_version: KubeVersion,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            kubernetes_version: KubeVersion {
                major: 1,
                minor: 33,
            },
        }
    }
}

/// Every rule over `model`, in rule order.
pub fn check(model: &PodModel, options: &CheckOptions) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut push = |rule: Rule, problem: Problem| out.push(Violation { rule, problem });

    for c in model.legacy_sidecars() {
        push(
            Rule::LegacySidecar,
            Problem::LegacySidecar {
                container: c.name.clone(),
                runs_to_completion: model.runs_to_completion(),
            },
        );
    }

    for (i, info) in model.containers.iter().enumerate() {
        let c = model.container(i);
        match (info.list, info.lifecycle_type) {
            (ContainerList::InitContainers, LifecycleType::Init) => {
                for field in init_only_sidecar_fields(c) {
                    push(
                        Rule::FieldPlacement,
                        Problem::InitField {
                            container: info.name.clone(),
                            field,
                        },
                    );
                }
            }
            (ContainerList::Containers, _)
                if options.kubernetes_version < KubeVersion::CONTAINER_RESTART_RULES =>
            {
                // A legacy sidecar carries no restartPolicy before conversion; anything
                // else set here is refused by the API server.
                let fields = [
                    ("restartPolicy", c.restart_policy.is_some()),
                    ("restartPolicyRules", c.restart_policy_rules.is_some()),
                ];
                for (field, present) in fields {
                    if present {
                        push(
                            Rule::FieldPlacement,
                            Problem::AppRestartField {
                                container: info.name.clone(),
                                field: field.into(),
                                version: options.kubernetes_version.to_string(),
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for f in &model.findings {
        let rule = match f {
            Finding::DuplicateContainerName { .. } | Finding::UnnamedContainer { .. } => {
                Rule::FieldPlacement
            }
            _ => Rule::Annotations,
        };
        push(rule, Problem::Annotation { finding: f.clone() });
    }

    for (i, info) in model.containers.iter().enumerate() {
        if info.lifecycle_type == LifecycleType::Sidecar
            && model.container(i).startup_probe.is_none()
        {
            push(
                Rule::StartupProbe,
                Problem::NoStartupProbe {
                    container: info.name.clone(),
                },
            );
        }
    }

    if let Some(problem) = termination_budget(model) {
        push(Rule::TerminationBudget, problem);
    }

    for i in model.optional_sidecars_gating_readiness() {
        push(
            Rule::OptionalSidecar,
            Problem::OptionalGatesReadiness {
                container: model.containers[i].name.clone(),
            },
        );
    }

    if model.runs_to_completion() {
        for c in model.of_type(LifecycleType::PostSidecar) {
            push(
                Rule::PostSidecarJob,
                Problem::PostSidecarInJob {
                    container: c.name.clone(),
                },
            );
        }
    }
    out
}

/// Fields the API server allows on an init container only when it is a native sidecar.
fn init_only_sidecar_fields(c: &Container) -> Vec<String> {
    let mut fields = Vec::new();
    for (name, present) in [
        ("startupProbe", c.startup_probe.is_some()),
        ("readinessProbe", c.readiness_probe.is_some()),
        ("livenessProbe", c.liveness_probe.is_some()),
    ] {
        if present {
            fields.push(name.to_string());
        }
    }
    if let Some(l) = &c.lifecycle {
        if l.post_start.is_some() {
            fields.push("a postStart hook".into());
        }
        if l.pre_stop.is_some() {
            fields.push("a preStop hook".into());
        }
    }
    if let Some(policy) = c.restart_policy.as_deref()
        && policy != "Always"
    {
        fields.push(format!("restartPolicy: {policy}"));
    }
    fields
}

/// Seconds a preStop hook waits, when it says: a `sleep` action, or an exec hook that runs
/// `sleep N` (directly or through a shell). Other hooks count as 0.
pub fn pre_stop_seconds(c: &Container) -> i64 {
    let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return 0;
    };
    handler_seconds(hook)
}

fn handler_seconds(hook: &LifecycleHandler) -> i64 {
    if let Some(sleep) = &hook.sleep {
        return sleep.seconds.max(0);
    }
    let Some(command) = hook.exec.as_ref().and_then(|e| e.command.as_ref()) else {
        return 0;
    };
    // Words of the command line, shell strings split too: ["sh", "-c", "sleep 5 && x"].
    let words: Vec<&str> = command
        .iter()
        .flat_map(|part| part.split_whitespace())
        .collect();
    let mut total = 0;
    for pair in words.windows(2) {
        let program = pair[0].rsplit('/').next().unwrap_or(pair[0]);
        if program == "sleep"
            && let Ok(n) = pair[1].trim_end_matches([';', '&', 's']).parse::<i64>()
        {
            total += n.max(0);
        }
    }
    total
}

fn termination_budget(model: &PodModel) -> Option<Problem> {
    let grace = model
        .workload
        .spec
        .termination_grace_period_seconds
        .unwrap_or(30);
    let longest_app = model
        .containers
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.list == ContainerList::Containers && c.lifecycle_type != LifecycleType::Sidecar
        })
        .map(|(i, c)| PreStop {
            container: c.name.clone(),
            seconds: pre_stop_seconds(model.container(i)),
        })
        .filter(|p| p.seconds > 0)
        .max_by_key(|p| p.seconds);
    // Sidecars, legacy ones included (they are sidecars once converted), in reverse
    // start order: the order they stop in.
    let sidecars: Vec<PreStop> = model
        .containers
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, c)| c.lifecycle_type == LifecycleType::Sidecar)
        .map(|(i, c)| PreStop {
            container: c.name.clone(),
            seconds: pre_stop_seconds(model.container(i)),
        })
        .filter(|p| p.seconds > 0)
        .collect();
    let needed = longest_app.as_ref().map_or(0, |a| a.seconds)
        + sidecars.iter().map(|s| s.seconds).sum::<i64>();
    (needed > grace).then_some(Problem::TerminationBudget {
        grace,
        longest_app,
        sidecars,
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle_type::KnownSidecars;
    use serde_json::{Value, json};

    fn model(object: Value) -> PodModel {
        PodModel::of(&object, &KnownSidecars::default())
    }

    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.rule.name()).collect()
    }

    #[test]
    fn versions() {
        assert_eq!(
            KubeVersion::parse("1.33").unwrap(),
            KubeVersion {
                major: 1,
                minor: 33
            }
        );
        assert_eq!(
            KubeVersion::parse("v1.34.2").unwrap(),
            KubeVersion {
                major: 1,
                minor: 34
            }
        );
        // What `kubectl version` prints on EKS, k3s and GKE.
        for (printed, minor) in [
            ("v1.30.4-eks-a737599", 30),
            ("v1.31.2+k3s1", 31),
            ("v1.29.1-gke.1589018", 29),
            (" 1.35 ", 35),
        ] {
            assert_eq!(
                KubeVersion::parse(printed).unwrap(),
                KubeVersion { major: 1, minor },
                "{printed}"
            );
        }
        for bad in [
            "",
            "1",
            "one.two",
            "1.33.x",
            "1.2.3.4",
            "1.30-eks",
            "1.30.4-",
            "1.30.+k3s",
            "vv1.30",
            "1.-3",
        ] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_steps_may_not_carry_sidecar_fields() {
        let m = model(json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "initContainers": [{"name": "migrate", "readinessProbe": {"exec": {"command": ["true"]}},
                                "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}, "restartPolicy": "OnFailure"}],
            "containers": [{"name": "app", "restartPolicy": "Always"}]}}}}));
        let v = check(&m, &CheckOptions::default());
        let fields: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(rules(&v), ["field-placement"; 4], "{fields:?}");
        assert!(fields[0].contains("readinessProbe"));
        assert!(fields[2].contains("restartPolicy: OnFailure"));
        assert!(fields[3].contains("Kubernetes 1.33 refuses"));
        let newer = CheckOptions {
            kubernetes_version: KubeVersion::parse("1.34").unwrap(),
        };
        assert_eq!(check(&m, &newer).len(), 3);
    }

    #[test]
    fn legacy_sidecars_in_jobs_never_complete() {
        let m = model(
            json!({"kind": "Job", "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "pi", "image": "perl"}, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1",
                            "startupProbe": {"httpGet": {"port": 15021}}}]}}}}),
        );
        let v = check(&m, &CheckOptions::default());
        assert_eq!(rules(&v), ["legacy-sidecar"]);
        assert!(
            v[0].to_string().contains("the Job would never complete"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn the_termination_budget_shows_its_arithmetic() {
        let m = model(json!({"kind": "Pod", "spec": {
        "terminationGracePeriodSeconds": 30,
        "initContainers": [
            {"name": "vault", "restartPolicy": "Always", "startupProbe": {"exec": {"command": ["true"]}},
             "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5; vault token revoke"]}}}},
            {"name": "proxy", "restartPolicy": "Always", "startupProbe": {"exec": {"command": ["true"]}},
             "lifecycle": {"preStop": {"sleep": {"seconds": 10}}}}
        ],
        "containers": [
            {"name": "web", "lifecycle": {"preStop": {"exec": {"command": ["sleep", "20"]}}}},
            {"name": "worker", "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}}
        ]}}));
        let v = check(&m, &CheckOptions::default());
        assert_eq!(rules(&v), ["termination-budget"]);
        let text = v[0].to_string();
        assert!(
            text.contains("terminationGracePeriodSeconds 30 cannot cover the preStop hooks: 20s (web preStop, longest app) + 10s (proxy preStop) + 5s (vault preStop) = 35s"),
            "{text}"
        );
    }

    #[test]
    fn optional_sidecars_and_post_sidecars_in_jobs() {
        let m = model(json!({"kind": "Pod", "metadata": {"annotations": {
                "optional.sidecars.dev/logs": "true", "lifecycle.sidecars.dev/flush": "PostSidecar"}},
            "spec": {"restartPolicy": "OnFailure",
                "initContainers": [{"name": "logs", "restartPolicy": "Always", "startupProbe": {"exec": {"command": ["true"]}},
                                    "readinessProbe": {"exec": {"command": ["true"]}}}],
                "containers": [{"name": "app"}, {"name": "flush"}]}}));
        let v = check(&m, &CheckOptions::default());
        assert_eq!(rules(&v), ["optional-sidecar", "post-sidecar-job"]);
    }

    #[test]
    fn annotations_and_startup_probes() {
        let m = model(
            json!({"kind": "Pod", "metadata": {"annotations": {"lifecycle.sidecars.dev/ghost": "Sidecar"}},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]}}),
        );
        let v = check(&m, &CheckOptions::default());
        assert_eq!(rules(&v), ["annotations", "startup-probe"]);
    }
}
