//! sidecar-resources-policy: resource accounting with sidecars counted the way Kubernetes
//! counts them. The arithmetic and the fixes are the model's; this crate gives the rules
//! levels and words.

mod settings;

use policy_shell::AdmissionRequest;
use policy_shell::Answer;
use sidecar_model::budget::{self, Accounting, ResourceEdit};
use sidecar_model::doc::Node;
use sidecar_model::{PodModel, QosClass, WorkloadKind, surgery};

use settings::{Level, Rule, Settings};

pub const EFFECTIVE_REQUESTS: &str = "sidecars.dev/effective-requests";
pub const EFFECTIVE_LIMITS: &str = "sidecars.dev/effective-limits";
pub const QOS_CLASS: &str = "sidecars.dev/qos-class";

policy_shell::export_policy!(Settings, evaluate);

struct Verdicts<'s> {
    settings: &'s Settings,
    answer: Answer,
}

impl Verdicts<'_> {
    fn file(&mut self, rule: Rule, message: String) {
        let message = format!("{}: {message}", rule.name());
        self.answer.file(self.settings.rules.of(rule), message);
    }

    fn on(&self, rule: Rule) -> bool {
        self.settings.rules.of(rule) != Level::Off
    }
}

fn evaluate(settings: &Settings, request: &AdmissionRequest) -> Result<Answer, String> {
    let operation = request.operation.as_ref();
    let known = settings.known_sidecars.resolve();
    let Some(model) = PodModel::from_json_with_resources(request.object_json(), &known)
        .map_err(|e| e.to_string())?
    else {
        return Ok(Answer::accept());
    };
    let accounting = Accounting::of(&model).map_err(|e| e.to_string())?;
    let name = |i: usize| model.containers[i].name.clone();
    let mut v = Verdicts {
        settings,
        answer: Answer::accept(),
    };
    // A running pod's containers cannot be changed: report, never patch.
    let may_mutate = !(operation == "UPDATE" && model.pod.kind == WorkloadKind::Pod);
    let mut edits: Vec<ResourceEdit> = Vec::new();

    if v.on(Rule::SidecarRequests) {
        let defaults = if settings.fill_sidecar_requests && may_mutate {
            settings.defaults.as_slice()
        } else {
            &[]
        };
        let gaps = budget::sidecar_gaps(
            &model,
            &accounting,
            settings.require_sidecar_limits,
            defaults,
        );
        for e in &gaps.fill {
            v.answer.warnings.push(format!(
                "{}: set {}.{} of sidecar {:?} to {} from the defaults",
                Rule::SidecarRequests.name(),
                e.field.as_str(),
                e.resource,
                name(e.container),
                e.value
            ));
        }
        edits.extend(gaps.fill);
        for conflict in &gaps.below_request {
            v.file(Rule::SidecarRequests, conflict.to_string());
        }
        for (i, field, resource) in gaps.missing {
            v.file(
                Rule::SidecarRequests,
                format!(
                    "sidecar {:?} sets no {}.{resource}; set it, or give the policy a default for {:?}",
                    name(i),
                    field.as_str(),
                    name(i)
                ),
            );
        }
    }

    // The accounting after every edit, when the QoS fix already computed it.
    let mut settled: Option<Accounting> = None;
    // The accounting after the sidecar edits, when the QoS check computed it.
    let mut after_edits = None;
    if v.on(Rule::Qos) {
        let current = accounting.with(&edits);
        let down = budget::qos_downgrade(&model, &current, &known);
        let names = |list: &[usize]| -> Vec<String> {
            list.iter().map(|&i| format!("{:?}", name(i))).collect()
        };
        if let Some(down) = down.as_ref().filter(|d| !d.own_init_steps.is_empty()) {
            // The pod's own init steps decide its class: the user's choice, which
            // Kubernetes admits. Worth a word, never a rejection or a fix.
            v.answer.warnings.push(format!(
                "{}: the app containers alone are {}, but the pod's own init steps {} make it {}; no sidecar can change that",
                Rule::Qos.name(),
                down.app_class.as_str(),
                names(&down.own_init_steps).join(", "),
                down.pod_class.as_str()
            ));
        } else if let Some(down) = down {
            let offenders = names(&down.offenders);
            let fixable =
                down.app_class == QosClass::Guaranteed && settings.preserve_qos && may_mutate;
            let (fix, stuck) = if fixable {
                budget::guarantee(&model, &current, &down.offenders, &settings.defaults)
            } else {
                (Vec::new(), Vec::new())
            };
            let fixed = (fixable && stuck.is_empty()).then(|| current.with(&fix));
            let fixed = fixed.filter(|f| f.pod().qos_class == QosClass::Guaranteed);
            // What the fix costs, from the pod as it came: shown, and held to the cap.
            let increases = fixed
                .as_ref()
                .map(|f| budget::request_increases(accounting.pod(), f.pod()));
            let caps = &settings.preserve_qos_max_increase;
            let over_cap: Vec<String> = increases
                .as_deref()
                .map(|i| budget::increases_over_cap(i, caps))
                .unwrap_or_default()
                .into_iter()
                .map(|(inc, cap)| {
                    format!(
                        "{} more {} ({inc}), more than preserveQosMaxIncrease.{} {cap}",
                        inc.increase(),
                        inc.resource,
                        inc.resource
                    )
                })
                .collect();
            if !over_cap.is_empty() {
                v.file(
                    Rule::Qos,
                    format!(
                        "the app containers alone are Guaranteed, but {} make the pod {}; keeping it Guaranteed would reserve {}; set their requests equal to their limits, or raise the cap",
                        offenders.join(", "),
                        down.pod_class.as_str(),
                        over_cap.join(", ")
                    ),
                );
            } else if let Some(fixed) = fixed {
                settled = Some(fixed.into_owned());
                let increases: Vec<String> = increases
                    .iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect();
                if !increases.is_empty() {
                    v.answer.warnings.push(format!(
                        "{}: keeping the pod Guaranteed raises its effective requests: {}",
                        Rule::Qos.name(),
                        increases.join(", ")
                    ));
                }
                for e in &fix {
                    v.answer.warnings.push(format!(
                        "{}: set {}.{} of {:?} to {} to keep the pod Guaranteed",
                        Rule::Qos.name(),
                        e.field.as_str(),
                        e.resource,
                        name(e.container),
                        e.value
                    ));
                }
                edits.extend(fix);
            } else if !stuck.is_empty() {
                let names: Vec<String> = stuck
                    .iter()
                    .map(|(i, r)| format!("{:?} ({r})", name(*i)))
                    .collect();
                v.file(
                    Rule::Qos,
                    format!(
                        "the app containers alone are Guaranteed, but {} make the pod {}; cannot make {} Guaranteed: neither requests, limits nor a default give a value; set their requests equal to their limits or add a default",
                        offenders.join(", "),
                        down.pod_class.as_str(),
                        names.join(", ")
                    ),
                );
            } else if down.app_class == QosClass::Guaranteed {
                v.file(
                    Rule::Qos,
                    format!(
                        "the app containers alone are Guaranteed, but {} make the pod {}; set their cpu and memory requests equal to their limits, or enable preserveQos",
                        offenders.join(", "),
                        down.pod_class.as_str()
                    ),
                );
            } else {
                // BestEffort apps gain scheduling guarantees from a helper's requests: a
                // change worth knowing about, never worth a rejection.
                v.answer.warnings.push(format!(
                    "{}: the app containers alone are BestEffort, but {} make the pod {}",
                    Rule::Qos.name(),
                    offenders.join(", "),
                    down.pod_class.as_str()
                ));
            }
        }
        after_edits = Some(current);
    }

    let result = match (settled, after_edits) {
        (Some(all), _) => std::borrow::Cow::Owned(all),
        (None, Some(current)) => current,
        (None, None) => accounting.with(&edits),
    };
    if v.on(Rule::PodLevel) {
        for breach in budget::pod_level_breaches(&result) {
            v.file(Rule::PodLevel, breach.to_string());
        }
    }
    if v.on(Rule::SidecarShare) {
        let share = settings.share();
        for (resource, sidecars, effective, pct) in budget::sidecar_share_over(&result, &share) {
            let max = share
                .get(&resource)
                .or(share.get("*"))
                .copied()
                .unwrap_or_default();
            v.file(
                Rule::SidecarShare,
                format!(
                    "sidecars request {sidecars} of the pod's {effective} {resource} ({pct:.2}%), more than maxSidecarShare {max}%"
                ),
            );
        }
    }
    if v.on(Rule::PodMax) {
        let unbounded: Vec<String> = result
            .pod()
            .unbounded_limits
            .iter()
            .map(|u| u.resource.clone())
            .collect();
        for (field, figures, max, none) in [
            (
                "requests",
                &result.pod().requests,
                &settings.max_effective_requests,
                &Vec::new(),
            ),
            (
                "limits",
                &result.pod().limits,
                &settings.max_effective_limits,
                &unbounded,
            ),
        ] {
            let setting = if field == "requests" {
                "maxEffectiveRequests"
            } else {
                "maxEffectiveLimits"
            };
            for (resource, effective, cap) in budget::over_max(figures, none, max) {
                let message = match effective {
                    Some(e) => format!(
                        "the pod's effective {resource} {field} are {e}, more than {setting}.{resource} {cap}"
                    ),
                    None => {
                        let who = result
                            .pod()
                            .unbounded_limits
                            .iter()
                            .find(|u| u.resource == resource)
                            .map(|u| u.containers.join(", "))
                            .unwrap_or_default();
                        format!(
                            "the pod's {resource} limit is unbounded (no limit on {who}), but {setting}.{resource} is {cap}"
                        )
                    }
                };
                v.file(Rule::PodMax, message);
            }
        }
    }

    let mut answer = v.answer;
    answer.audit.insert(
        EFFECTIVE_REQUESTS.into(),
        budget::summary(&result.pod().requests, &[]),
    );
    answer.audit.insert(
        EFFECTIVE_LIMITS.into(),
        budget::summary(&result.pod().limits, &result.pod().unbounded_limits),
    );
    answer
        .audit
        .insert(QOS_CLASS.into(), result.pod().qos_class.as_str().into());
    if !edits.is_empty() {
        let mut mutated = Node::from(request.object());
        surgery::apply_resource_edits(&mut mutated, &model, &edits).map_err(|e| e.to_string())?;
        answer.set_mutated(&mutated)?;
    }
    Ok(answer)
}
