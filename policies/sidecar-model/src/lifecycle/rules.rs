//! Lifecycle-type correctness: every container has the type its role calls for and only
//! the fields that type allows. Each check is a named rule; the policy decides its level.

use crate::kube::Container;
use k8s_openapi::api::core::v1::LifecycleHandler;
use serde::Serialize;
use std::fmt;

use crate::kube::Feature;
use crate::kube::Finding;
pub use crate::kube::KubeVersion;
use crate::kube::PodModel;
use crate::kube::{ContainerList, LifecycleType};
use crate::lifecycle::restart_rules::{self, RestartCause, RuleError};

crate::declare_rules! {
    /// The lifecycle policy's rules.
    pub enum Rule {
        LegacySidecar = "legacy-sidecar", Deny, "a sidecar running as a regular container";
        FieldPlacement = "field-placement", Deny,
            "probes or hooks on init steps, restart fields on app containers, duplicate names";
        Annotations = "annotations", Deny,
            "sidecars.dev annotations naming no container, unknown types";
        StartupProbe = "startup-probe", Warn, "a sidecar without startupProbe";
        TerminationBudget = "termination-budget", Warn,
            "terminationGracePeriodSeconds shorter than the preStop hooks";
        OptionalSidecar = "optional-sidecar", Deny, "an optional sidecar gating the pod's readiness";
        PostSidecarJob = "post-sidecar-job", Deny, "a post-sidecar in a Job";
        RestartForever = "restart-forever", Deny,
            "an app container restarted after it succeeds, in a Job";
        RestartRules = "restart-rules", Deny,
            "restartPolicyRules the API server refuses, or that never match";
        SidecarRestartRules = "sidecar-restart-rules", Warn,
            "restart rules on a sidecar; off lets a sidecar restart the whole pod";
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
        /// The mesh annotation that keeps it legacy, which conversion honours.
        #[serde(skip_serializing_if = "Option::is_none")]
        opted_out: Option<String>,
    },
    /// A field an init step may not have (probes, hooks, a restartPolicy other than Always).
    InitField { container: String, field: String },
    /// A regular init container whose `resizePolicy` says `RestartContainer`: the API
    /// server refuses it from Kubernetes 1.36, when regular init containers became
    /// resizable in place.
    InitRestartsOnResize { container: String, version: String },
    /// `restartPolicy`/`restartPolicyRules` on an app container, or `restartPolicy: Never`
    /// or `OnFailure` on an init step, before Kubernetes 1.35: refused, or (`dropped`, on
    /// a release whose gate is off) stored without it.
    AppRestartField {
        container: String,
        field: String,
        version: String,
        dropped: bool,
        /// A regular init container (its `restartPolicy: Never` or `OnFailure`).
        init: bool,
        /// A native sidecar (its `restartPolicyRules`): removing them is the only advice.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        sidecar: bool,
    },
    /// A `restartPolicy` other than Always, OnFailure or Never on a regular container (a
    /// typo, the empty string): the API server refuses it from Kubernetes 1.35.
    UnsupportedRestartPolicy {
        container: String,
        value: String,
        init: bool,
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
    /// A container of `containers` that is started again after it succeeds, in a pod that
    /// runs to completion: the pod never completes.
    RestartsForever {
        container: String,
        cause: RestartCause,
    },
    /// A restart rule the API server refuses, or one that never matches.
    BadRestartRule { container: String, error: RuleError },
    /// Restart rules on a native sidecar, which restarts whatever they say.
    SidecarRestartRuleIgnored { container: String, index: usize },
    /// A native sidecar whose exit restarts every container of the pod, the apps too.
    SidecarRestartsPod { container: String, index: usize },
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
            | Problem::InitRestartsOnResize { container, .. }
            | Problem::AppRestartField { container, .. }
            | Problem::UnsupportedRestartPolicy { container, .. }
            | Problem::NoStartupProbe { container }
            | Problem::OptionalGatesReadiness { container }
            | Problem::PostSidecarInJob { container }
            | Problem::RestartsForever { container, .. }
            | Problem::BadRestartRule { container, .. }
            | Problem::SidecarRestartRuleIgnored { container, .. }
            | Problem::SidecarRestartsPod { container, .. } => Some(container),
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
                opted_out,
            } => {
                write!(f, "sidecar {container:?} runs as a regular container")?;
                if let Some(key) = opted_out {
                    write!(f, " ({key}: \"false\" keeps it so)")?;
                }
                if *runs_to_completion {
                    f.write_str(
                        ", so it keeps running after the app exits and the Job would never complete",
                    )?;
                } else {
                    f.write_str(", so nothing makes it start before the app or stop after it")?;
                }
                if opted_out.is_some() {
                    f.write_str("; remove the annotation to let it become a native sidecar")
                } else {
                    f.write_str(
                        "; move it to initContainers with restartPolicy: Always (a native sidecar)",
                    )
                }
            }
            Problem::InitRestartsOnResize { container, version } => write!(
                f,
                "init container {container:?} has a resizePolicy with restartPolicy: RestartContainer, which the API server refuses on a regular init container from Kubernetes {} (this pod runs on {version}): use NotRequired, or give {container:?} restartPolicy: Always if it is a sidecar",
                Feature::InitContainerResize.since()
            ),
            Problem::InitField { container, field } => write!(
                f,
                "init container {container:?} has {field}, which only a native sidecar may have; the API server will refuse every pod of it: remove {field}, or give {container:?} restartPolicy: Always if it is a sidecar"
            ),
            Problem::AppRestartField {
                container,
                field,
                version,
                dropped,
                init,
                sidecar,
            } => {
                write!(
                    f,
                    "{}container {container:?} sets {field}, which Kubernetes {version} {} (container restart rules are on by default from {}); remove it",
                    match (*sidecar, *init) {
                        (true, _) => "sidecar ",
                        (false, true) => "init ",
                        (false, false) => "",
                    },
                    if *dropped {
                        "drops without a word, so it would not take effect"
                    } else {
                        "refuses"
                    },
                    Feature::ContainerRestartRules.since()
                )?;
                if !sidecar {
                    write!(
                        f,
                        ", or make {container:?} a native sidecar in initContainers"
                    )?;
                }
                Ok(())
            }
            Problem::UnsupportedRestartPolicy {
                container,
                value,
                init,
            } => write!(
                f,
                "{}container {container:?} sets restartPolicy: {value:?}, which the API server refuses: it must be Always, OnFailure or Never",
                if *init { "init " } else { "" },
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
            Problem::RestartsForever { container, cause } => write!(
                f,
                "{container:?} restarts forever in a run-to-completion pod ({cause} starts it again after it succeeds), so the pod never completes: make it a native sidecar (initContainers with restartPolicy: Always) if it serves the app, or let it stop on exit code 0"
            ),
            Problem::BadRestartRule { container, error } => {
                write!(f, "container {container:?}: {error}")
            }
            Problem::SidecarRestartRuleIgnored { container, index } => write!(
                f,
                "sidecar {container:?} has restartPolicyRules[{index}] with action Restart, which does nothing: a native sidecar is restarted whenever it exits; remove the rule"
            ),
            Problem::SidecarRestartsPod { container, index } => write!(
                f,
                "sidecar {container:?} restarts every container of the pod when it exits (restartPolicyRules[{index}]: RestartAllContainers), so a crashing helper restarts the app; remove the rule, or set this rule to off if the sidecar may do that"
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
            kubernetes_version: KubeVersion::DEFAULT,
        }
    }
}

/// Every rule over `model`, in rule order.
pub fn check(model: &PodModel, options: &CheckOptions) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut push = |rule: Rule, problem: Problem| out.push(Violation { rule, problem });

    // A proxy its mesh keeps legacy in the mesh's own pods is how the mesh works: nothing
    // to tell the user.
    for c in model
        .legacy_sidecars()
        .filter(|c| model.kept_legacy_by_mesh(c).is_none())
    {
        push(
            Rule::LegacySidecar,
            Problem::LegacySidecar {
                container: c.name.clone(),
                runs_to_completion: model.runs_to_completion(),
                opted_out: model.mesh_opt_out(c).map(|(_, key)| key.to_string()),
            },
        );
    }

    let version = options.kubernetes_version;
    let restart_rules = version.supports(Feature::ContainerRestartRules);
    field_placement(model, version, &mut push);
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
            && model.kept_legacy_by_mesh(info).is_none()
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

    if restart_rules {
        restart_checks(model, version, &mut push);
    }
    out
}

/// field-placement: fields only native sidecars may have, on regular init containers, and
/// restart fields the declared version refuses or drops.
fn field_placement(model: &PodModel, version: KubeVersion, push: &mut impl FnMut(Rule, Problem)) {
    let restart_rules = version.supports(Feature::ContainerRestartRules);
    for (i, info) in model.containers.iter().enumerate() {
        let c = model.container(i);
        let restart_fields: &[(&str, bool)] = match (info.list, info.lifecycle_type) {
            (ContainerList::InitContainers, LifecycleType::Init) => {
                let drops = version.drops_fields_of(Feature::ContainerRestartRules);
                for field in init_only_sidecar_fields(c, restart_rules || drops) {
                    push(
                        Rule::FieldPlacement,
                        Problem::InitField {
                            container: info.name.clone(),
                            field,
                        },
                    );
                }
                if version.supports(Feature::InitContainerResize) && c.restarts_on_resize() {
                    push(
                        Rule::FieldPlacement,
                        Problem::InitRestartsOnResize {
                            container: info.name.clone(),
                            version: version.to_string(),
                        },
                    );
                }
                // Measured on 1.34: every value but Always is dropped, typos too.
                if let Some(policy) = c.restart_policy.as_deref()
                    && drops
                    && policy != "Always"
                {
                    push(
                        Rule::FieldPlacement,
                        Problem::AppRestartField {
                            container: info.name.clone(),
                            field: format!("restartPolicy: {policy}"),
                            version: version.to_string(),
                            dropped: true,
                            init: true,
                            sidecar: false,
                        },
                    );
                }
                &[("restartPolicyRules", c.restart_policy_rules.is_some())]
            }
            // Before 1.35 a native sidecar's rules are dropped (measured on 1.34).
            (ContainerList::InitContainers, LifecycleType::Sidecar) => {
                &[("restartPolicyRules", c.restart_policy_rules.is_some())]
            }
            // A legacy sidecar carries no restartPolicy before conversion; anything
            // else set here is refused by the API server.
            (ContainerList::Containers, _) => &[
                ("restartPolicy", c.restart_policy.is_some()),
                ("restartPolicyRules", c.restart_policy_rules.is_some()),
            ],
            _ => &[],
        };
        if !restart_rules {
            for &(field, _) in restart_fields.iter().filter(|(_, present)| *present) {
                // restartPolicyRules is unknown before 1.34 and gated in 1.34: dropped either
                // way; restartPolicy on an app container is refused before 1.34.
                let dropped = field == "restartPolicyRules"
                    || version.drops_fields_of(Feature::ContainerRestartRules);
                push(
                    Rule::FieldPlacement,
                    Problem::AppRestartField {
                        container: info.name.clone(),
                        field: field.into(),
                        version: version.to_string(),
                        dropped,
                        init: info.list == ContainerList::InitContainers,
                        sidecar: info.is_native_sidecar(),
                    },
                );
            }
        }
        // From 1.35 the API server checks the value itself (measured on 1.35–1.37).
        if restart_rules
            && !info.is_native_sidecar()
            && let Some(value) = c.restart_policy.as_deref()
            && !matches!(value, "Always" | "OnFailure" | "Never")
        {
            push(
                Rule::FieldPlacement,
                Problem::UnsupportedRestartPolicy {
                    container: info.name.clone(),
                    value: value.to_string(),
                    init: info.list == ContainerList::InitContainers,
                },
            );
        }
    }
}

/// Restart rules as the API server checks them, what they do to sidecars, and the app
/// containers that keep a run-to-completion pod from completing.
fn restart_checks(model: &PodModel, version: KubeVersion, push: &mut impl FnMut(Rule, Problem)) {
    for (i, info) in model.containers.iter().enumerate() {
        let c = model.container(i);
        for error in restart_rules::validate(c, version) {
            push(
                Rule::RestartRules,
                Problem::BadRestartRule {
                    container: info.name.clone(),
                    error,
                },
            );
        }
        if info.is_native_sidecar()
            && c.restart_policy_rules.is_some()
            && !version.supports(Feature::RestartAllContainers)
        {
            // While RestartAllContainers is off (1.35), the API server refuses any rule on
            // a native sidecar.
            push(
                Rule::RestartRules,
                Problem::BadRestartRule {
                    container: info.name.clone(),
                    error: RuleError::OnASidecar {
                        since: Feature::RestartAllContainers.since().to_string(),
                        version: version.to_string(),
                    },
                },
            );
        } else if info.is_native_sidecar() {
            for (index, rule) in c.restart_policy_rules.iter().flatten().enumerate() {
                let container = info.name.clone();
                match rule.action.as_str() {
                    restart_rules::RESTART => push(
                        Rule::SidecarRestartRules,
                        Problem::SidecarRestartRuleIgnored { container, index },
                    ),
                    restart_rules::RESTART_ALL_CONTAINERS => push(
                        Rule::SidecarRestartRules,
                        Problem::SidecarRestartsPod { container, index },
                    ),
                    _ => {}
                }
            }
        }
    }
    if !model.runs_to_completion() {
        return;
    }
    // Legacy sidecars are the legacy-sidecar rule's: converting them fixes this too.
    for (i, info) in model.containers.iter().enumerate() {
        if info.list == ContainerList::Containers
            && info.lifecycle_type != LifecycleType::Sidecar
            && let Some(cause) = restart_rules::restart_after(model.container(i), 0)
        {
            push(
                Rule::RestartForever,
                Problem::RestartsForever {
                    container: info.name.clone(),
                    cause,
                },
            );
        }
    }
}

/// Fields the API server allows on an init container only when it is a native sidecar.
/// With container restart rules, a regular init step may say `Never` or `OnFailure`.
fn init_only_sidecar_fields(c: &Container, restart_rules: bool) -> Vec<String> {
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
    // With container restart rules (on, or dropped by the release) the restartPolicy of
    // an init step is checked, or reported dropped, on its own.
    if let Some(policy) = c.restart_policy.as_deref()
        && policy != "Always"
        && !restart_rules
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
    use crate::kube::KnownSidecars;
    use serde_json::{Value, json};

    fn model(object: Value) -> PodModel {
        PodModel::of(&object, &KnownSidecars::default())
    }

    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| crate::rule::Rule::name(v.rule)).collect()
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
        // The 1.34 API server stores the pod without them (seen in make e2e).
        assert!(
            fields[2].contains("init container \"migrate\" sets restartPolicy: OnFailure, which Kubernetes 1.34 drops without a word"),
            "{fields:?}"
        );
        assert!(
            fields[3].contains("Kubernetes 1.34 drops without a word"),
            "{fields:?}"
        );
        // From 1.35 a regular init step may be tried once (Never) or retried (OnFailure),
        // and an app container may carry its own restartPolicy.
        let newer = on("1.35");
        let fields: Vec<String> = check(&m, &newer).iter().map(ToString::to_string).collect();
        assert_eq!(fields.len(), 2, "{fields:?}");
    }

    fn on(version: &str) -> CheckOptions {
        CheckOptions {
            kubernetes_version: KubeVersion::parse(version).unwrap(),
        }
    }

    #[test]
    fn an_app_that_restarts_after_success_keeps_a_job_running() {
        let job = |container: Value| {
            model(
                json!({"kind": "Job", "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "pi", "image": "perl"}, container]}}}}),
            )
        };
        let watcher =
            job(json!({"name": "watcher", "image": "busybox", "restartPolicy": "Always"}));
        let said = check(&watcher, &on("1.35"));
        assert_eq!(rules(&said), ["restart-forever"]);
        assert!(
            said[0].to_string().starts_with(
                "restart-forever: \"watcher\" restarts forever in a run-to-completion pod (restartPolicy: Always starts it again after it succeeds)"
            ),
            "{}",
            said[0]
        );
        // Before 1.35 the API server refuses the field itself.
        assert_eq!(rules(&check(&watcher, &on("1.34"))), ["field-placement"]);
        // A rule that restarts on exit code 0 does the same; one that spares 0 does not.
        let on_zero = job(
            json!({"name": "w", "restartPolicy": "Never", "restartPolicyRules": [
            {"action": "Restart", "exitCodes": {"operator": "NotIn", "values": [3]}}]}),
        );
        let said = check(&on_zero, &on("1.35"));
        assert!(
            said[0]
                .to_string()
                .contains("(restartPolicyRules[0] (Restart) starts it"),
            "{said:?}"
        );
        let spares_zero = job(
            json!({"name": "w", "restartPolicy": "Never", "restartPolicyRules": [
            {"action": "Restart", "exitCodes": {"operator": "In", "values": [3]}}]}),
        );
        assert!(check(&spares_zero, &on("1.35")).is_empty());
        // In a long-running pod, restarting is what the pod does anyway.
        let deployment = model(json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "web"}, {"name": "watcher", "restartPolicy": "Always"}]}}}}));
        assert!(check(&deployment, &on("1.35")).is_empty());
    }

    #[test]
    fn restart_rules_on_sidecars() {
        let m = model(json!({"kind": "Pod", "spec": {"initContainers": [
            {"name": "logs", "image": "fluent/fluent-bit:3", "restartPolicy": "Always",
             "startupProbe": {"exec": {"command": ["true"]}},
             "restartPolicyRules": [
                {"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}},
                {"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [2]}}]}],
            "containers": [{"name": "app"}]}}));
        let said = check(&m, &on("1.36"));
        assert_eq!(rules(&said), ["sidecar-restart-rules"; 2]);
        assert!(
            said[1]
                .to_string()
                .contains("restarts every container of the pod"),
            "{said:?}"
        );
        // 1.35 has RestartAllContainers only behind its alpha gate, and while it is off
        // the API server refuses any rule on a native sidecar (measured on 1.35).
        let said = check(&m, &on("1.35"));
        assert_eq!(rules(&said), ["restart-rules", "restart-rules"]);
        assert!(
            said[0].to_string().contains("needs Kubernetes 1.36"),
            "{said:?}"
        );
        assert!(
            said[1].to_string().contains(
                "restartPolicyRules on a native sidecar are refused before Kubernetes 1.36"
            ),
            "{said:?}"
        );
        // 1.34 drops them without a word.
        let said = check(&m, &on("1.34"));
        assert_eq!(rules(&said), ["field-placement"]);
        assert!(
            said[0].to_string().starts_with(
                "field-placement: sidecar container \"logs\" sets restartPolicyRules, which Kubernetes 1.34 drops without a word"
            ) && said[0].to_string().ends_with("; remove it"),
            "{said:?}"
        );
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
