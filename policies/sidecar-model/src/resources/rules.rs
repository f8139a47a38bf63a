//! The resources policy's rules, run in order over one pod: which sidecar requests the
//! defaults fill, whether a sidecar costs a Guaranteed pod its class and how it is kept,
//! pod-level budgets, the sidecars' share and the pod's maxima. The review returns typed
//! findings and the edits; the policy only gives each rule its level.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

use crate::kube::KnownSidecars;
use crate::kube::PodModel;
use crate::kube::Quantity;
use crate::kube::quoted;
use crate::resources::effective::QosClass;
use crate::resources::findings::{
    self, Accounting, Field, LimitBelowRequest, OverMax, PodLevelBreach, RequestIncrease,
    ResourceEdit, ShareOver,
};
use crate::resources::resize::ResizeProblem;
use crate::resources::settings::{Rule, Settings};

/// What one review is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Options<'s> {
    /// The rules to run; the others are not evaluated.
    pub rules: &'s [Rule],
    /// The request may be changed (not an UPDATE of a running pod).
    pub may_mutate: bool,
    /// What the rules are asked to do.
    pub settings: &'s Settings,
}

/// One thing a rule found. A notice says what was done or what is so, and is only ever
/// a warning; a violation takes the level the policy gives its rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "code",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ResourceFinding {
    /// Notice: a sidecar's missing request or limit was set from the defaults.
    FilledFromDefaults {
        container: String,
        edit: ResourceEdit,
    },
    /// A default limit below the sidecar's own request: not filled.
    LimitBelowRequest(LimitBelowRequest),
    /// A sidecar sets no `field.resource` and no default gives one.
    SidecarResourceMissing {
        container: String,
        field: Field,
        resource: String,
    },
    /// Notice: the pod's own init steps, not a helper, decide its class.
    ClassSetByOwnInitSteps {
        app_class: QosClass,
        pod_class: QosClass,
        init_steps: Vec<String>,
    },
    /// Keeping the pod Guaranteed would add more than `preserveQosMaxIncrease` allows.
    QosFixOverCap {
        offenders: Vec<String>,
        pod_class: QosClass,
        over: Vec<(RequestIncrease, Quantity)>,
    },
    /// Notice: keeping the pod Guaranteed raises what it reserves.
    QosFixRaisesRequests {
        increases: Vec<RequestIncrease>,
    },
    /// Notice: one edit of the fix that keeps the pod Guaranteed.
    QosFixed {
        container: String,
        edit: ResourceEdit,
    },
    /// No value for some offenders' requests and limits: the pod cannot be kept Guaranteed.
    QosUnfixable {
        offenders: Vec<String>,
        pod_class: QosClass,
        /// Container and resource.
        missing: Vec<(String, String)>,
    },
    /// Helpers make a Guaranteed pod Burstable, and no fix is made.
    QosDowngraded {
        offenders: Vec<String>,
        pod_class: QosClass,
    },
    /// Notice: helpers' requests lift BestEffort apps into another class.
    BestEffortLifted {
        offenders: Vec<String>,
        pod_class: QosClass,
    },
    PodLevel(PodLevelBreach),
    /// `spec.resources` names a resource the API server refuses there (only cpu, memory
    /// and hugepages-* may be set at pod level).
    PodLevelUnsupported {
        field: Field,
        resource: String,
    },
    SidecarShare(ShareOver),
    PodMax(OverMax),
    /// A `pods/resize` the cluster would refuse.
    Resize(ResizeProblem),
}

impl ResourceFinding {
    pub fn rule(&self) -> Rule {
        use ResourceFinding::*;
        match self {
            FilledFromDefaults { .. } | LimitBelowRequest(_) | SidecarResourceMissing { .. } => {
                Rule::SidecarRequests
            }
            ClassSetByOwnInitSteps { .. }
            | QosFixOverCap { .. }
            | QosFixRaisesRequests { .. }
            | QosFixed { .. }
            | QosUnfixable { .. }
            | QosDowngraded { .. }
            | BestEffortLifted { .. } => Rule::Qos,
            PodLevel(_) | PodLevelUnsupported { .. } => Rule::PodLevel,
            SidecarShare(_) => Rule::SidecarShare,
            PodMax(_) => Rule::PodMax,
            Resize(_) => Rule::Resize,
        }
    }

    /// Said as a warning whatever the rule's level: what was done, or what is so.
    pub fn is_notice(&self) -> bool {
        use ResourceFinding::*;
        matches!(
            self,
            FilledFromDefaults { .. }
                | ClassSetByOwnInitSteps { .. }
                | QosFixRaisesRequests { .. }
                | QosFixed { .. }
                | BestEffortLifted { .. }
        )
    }
}

impl fmt::Display for ResourceFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ResourceFinding::*;
        match self {
            FilledFromDefaults { container, edit } => write!(
                f,
                "set {}.{} of sidecar {container:?} to {} from the defaults",
                edit.field.as_str(),
                edit.resource,
                edit.value
            ),
            LimitBelowRequest(l) => l.fmt(f),
            SidecarResourceMissing {
                container,
                field,
                resource,
            } => write!(
                f,
                "sidecar {container:?} sets no {}.{resource}; set it, or give the policy a default for {container:?}",
                field.as_str()
            ),
            ClassSetByOwnInitSteps {
                app_class,
                pod_class,
                init_steps,
            } => write!(
                f,
                "the app containers alone are {}, but the pod's own init steps {} make it {}; no sidecar can change that",
                app_class.as_str(),
                quoted(init_steps),
                pod_class.as_str()
            ),
            QosFixOverCap {
                offenders,
                pod_class,
                over,
            } => over_cap(f, offenders, pod_class, over),
            QosFixRaisesRequests { increases } => {
                let increases: Vec<String> = increases.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "keeping the pod Guaranteed raises its effective requests: {}",
                    increases.join(", ")
                )
            }
            QosFixed { container, edit } => write!(
                f,
                "set {}.{} of {container:?} to {} to keep the pod Guaranteed",
                edit.field.as_str(),
                edit.resource,
                edit.value
            ),
            QosUnfixable {
                offenders,
                pod_class,
                missing,
            } => unfixable(f, offenders, pod_class, missing),
            QosDowngraded {
                offenders,
                pod_class,
            } => {
                guaranteed_but(f, offenders, pod_class)?;
                let their = agree(offenders.len()).1;
                write!(
                    f,
                    "; set {their} cpu and memory requests equal to {their} limits, or enable preserveQos"
                )
            }
            BestEffortLifted {
                offenders,
                pod_class,
            } => write!(
                f,
                "the app containers alone are BestEffort, but {} {} the pod {}",
                quoted(offenders),
                agree(offenders.len()).0,
                pod_class.as_str()
            ),
            PodLevel(b) => b.fmt(f),
            PodLevelUnsupported { field, resource } => write!(
                f,
                "spec.resources.{}.{resource}: the API server refuses it at pod level, where only cpu, memory and hugepages-* may be set",
                field.as_str()
            ),
            SidecarShare(s) => s.fmt(f),
            PodMax(o) => o.fmt(f),
            Resize(r) => r.fmt(f),
        }
    }
}

/// One container "makes" the pod Burstable and has "its" limits; several "make" it and
/// have "their".
fn agree(n: usize) -> (&'static str, &'static str) {
    if n == 1 {
        ("makes", "its")
    } else {
        ("make", "their")
    }
}

fn guaranteed_but(
    f: &mut fmt::Formatter<'_>,
    offenders: &[String],
    class: &QosClass,
) -> fmt::Result {
    write!(
        f,
        "the app containers alone are Guaranteed, but {} {} the pod {}",
        quoted(offenders),
        agree(offenders.len()).0,
        class.as_str()
    )
}

/// qos: the fix that would keep the pod Guaranteed costs more than the cap.
fn over_cap(
    f: &mut fmt::Formatter<'_>,
    offenders: &[String],
    pod_class: &QosClass,
    over: &[(RequestIncrease, Quantity)],
) -> fmt::Result {
    guaranteed_but(f, offenders, pod_class)?;
    let over: Vec<String> = over
        .iter()
        .map(|(inc, cap)| {
            format!(
                "{} more {} ({inc}), more than preserveQosMaxIncrease.{} {cap}",
                inc.increase(),
                inc.resource,
                inc.resource
            )
        })
        .collect();
    let their = agree(offenders.len()).1;
    write!(
        f,
        "; keeping it Guaranteed would reserve {}; set {their} requests equal to {their} limits, or raise the cap",
        over.join(", ")
    )
}

/// qos: nothing gives the figures that would keep the pod Guaranteed.
fn unfixable(
    f: &mut fmt::Formatter<'_>,
    offenders: &[String],
    pod_class: &QosClass,
    missing: &[(String, String)],
) -> fmt::Result {
    guaranteed_but(f, offenders, pod_class)?;
    let containers: std::collections::BTreeSet<&String> = missing.iter().map(|(c, _)| c).collect();
    let their = agree(containers.len()).1;
    let missing: Vec<String> = missing
        .iter()
        .map(|(c, r)| format!("{c:?} ({r})"))
        .collect();
    write!(
        f,
        "; cannot make {} Guaranteed: neither requests, limits nor a default give a value; set {their} requests equal to {their} limits or add a default",
        missing.join(", ")
    )
}

/// What the rules found, the edits they make, and the pod's figures after those edits.
#[derive(Debug, Clone)]
pub struct Review<'a> {
    pub findings: Vec<ResourceFinding>,
    pub edits: Vec<ResourceEdit>,
    pub after: Cow<'a, Accounting>,
}

/// Runs the rules `options` turns on over `model`, in their order: each later rule sees
/// the pod as the earlier rules' edits leave it.
pub fn review<'a>(
    model: &PodModel,
    accounting: &'a Accounting,
    known: &KnownSidecars,
    options: &Options,
) -> Review<'a> {
    let on = |rule| options.rules.contains(&rule);
    let mut review = Review {
        findings: Vec::new(),
        edits: Vec::new(),
        after: Cow::Borrowed(accounting),
    };
    if on(Rule::SidecarRequests) {
        sidecar_requests(model, accounting, options, &mut review);
        review.after = accounting.with(&review.edits);
    }
    if on(Rule::Qos) {
        qos(model, accounting, known, options, &mut review);
    }
    let after = &review.after;
    let mut later = Vec::new();
    if on(Rule::PodLevel) {
        later.extend(
            findings::unsupported_pod_level(after)
                .into_iter()
                .map(|(field, resource)| ResourceFinding::PodLevelUnsupported { field, resource }),
        );
        later.extend(
            findings::pod_level_breaches(after)
                .into_iter()
                .map(ResourceFinding::PodLevel),
        );
    }
    if on(Rule::SidecarShare) {
        later.extend(
            findings::sidecar_share_over(after, &options.settings.share())
                .into_iter()
                .map(ResourceFinding::SidecarShare),
        );
    }
    if on(Rule::PodMax) {
        later.extend(
            findings::over_max(
                after.pod(),
                &options.settings.max_effective_requests,
                &options.settings.max_effective_limits,
            )
            .into_iter()
            .map(ResourceFinding::PodMax),
        );
    }
    review.findings.extend(later);
    review
}

fn name(model: &PodModel, i: usize) -> String {
    model.containers[i].name.clone()
}

fn names(model: &PodModel, list: &[usize]) -> Vec<String> {
    list.iter().map(|&i| name(model, i)).collect()
}

/// sidecar-requests: sidecars' missing requests (and limits), filled from the defaults
/// where the request may change, reported otherwise.
fn sidecar_requests(
    model: &PodModel,
    accounting: &Accounting,
    options: &Options,
    review: &mut Review,
) {
    let defaults = if options.settings.fill_sidecar_requests && options.may_mutate {
        options.settings.defaults.as_slice()
    } else {
        &[]
    };
    let gaps = findings::sidecar_gaps(
        model,
        accounting,
        options.settings.require_sidecar_limits,
        defaults,
    );
    review.findings.extend(
        gaps.fill
            .iter()
            .map(|e| ResourceFinding::FilledFromDefaults {
                container: name(model, e.container),
                edit: e.clone(),
            }),
    );
    review.edits.extend(gaps.fill);
    review.findings.extend(
        gaps.below_request
            .into_iter()
            .map(ResourceFinding::LimitBelowRequest),
    );
    review
        .findings
        .extend(gaps.missing.into_iter().map(|(i, field, resource)| {
            ResourceFinding::SidecarResourceMissing {
                container: name(model, i),
                field,
                resource,
            }
        }));
}

/// qos: a helper that costs the pod the class its apps alone would have.
fn qos<'a>(
    model: &PodModel,
    accounting: &'a Accounting,
    known: &KnownSidecars,
    options: &Options,
    review: &mut Review<'a>,
) {
    let Some(down) = findings::qos_downgrade(model, &review.after, known) else {
        return;
    };
    let offenders = names(model, &down.offenders);
    let pod_class = down.pod_class;
    let finding = if !down.own_init_steps.is_empty() {
        // The pod's own init steps decide its class: the user's choice, which Kubernetes
        // admits. Worth a word, never a rejection or a fix.
        ResourceFinding::ClassSetByOwnInitSteps {
            app_class: down.app_class,
            pod_class,
            init_steps: names(model, &down.own_init_steps),
        }
    } else if down.app_class != QosClass::Guaranteed {
        // BestEffort apps gain scheduling guarantees from a helper's requests: a change
        // worth knowing about, never worth a rejection.
        ResourceFinding::BestEffortLifted {
            offenders,
            pod_class,
        }
    } else if !(options.settings.preserve_qos && options.may_mutate) {
        ResourceFinding::QosDowngraded {
            offenders,
            pod_class,
        }
    } else {
        return keep_guaranteed(model, accounting, options, &down, review);
    };
    review.findings.push(finding);
}

/// preserveQos: makes the offenders Guaranteed when requests, limits or defaults give the
/// figures and the cost stays under the cap; otherwise says why not.
fn keep_guaranteed<'a>(
    model: &PodModel,
    accounting: &'a Accounting,
    options: &Options,
    down: &findings::QosDowngrade,
    review: &mut Review<'a>,
) {
    let (offenders, pod_class) = (names(model, &down.offenders), down.pod_class);
    let (fix, stuck) = findings::guarantee(
        model,
        &review.after,
        &down.offenders,
        &options.settings.defaults,
    );
    let fixed = stuck
        .is_empty()
        .then(|| review.after.with(&fix).into_owned())
        .filter(|f| f.pod().qos_class == QosClass::Guaranteed);
    let Some(fixed) = fixed else {
        review.findings.push(match stuck.is_empty() {
            true => ResourceFinding::QosDowngraded {
                offenders,
                pod_class,
            },
            false => ResourceFinding::QosUnfixable {
                offenders,
                pod_class,
                missing: stuck
                    .into_iter()
                    .map(|(i, r)| (name(model, i), r))
                    .collect(),
            },
        });
        return;
    };
    // What the fix costs, from the pod as it came: shown, and held to the cap.
    let increases = findings::request_increases(accounting.pod(), fixed.pod());
    let over: Vec<(RequestIncrease, Quantity)> =
        findings::increases_over_cap(&increases, &options.settings.preserve_qos_max_increase)
            .into_iter()
            .map(|(inc, cap)| (inc.clone(), cap))
            .collect();
    if !over.is_empty() {
        review.findings.push(ResourceFinding::QosFixOverCap {
            offenders,
            pod_class,
            over,
        });
        return;
    }
    if !increases.is_empty() {
        review
            .findings
            .push(ResourceFinding::QosFixRaisesRequests { increases });
    }
    review
        .findings
        .extend(fix.iter().map(|e| ResourceFinding::QosFixed {
            container: name(model, e.container),
            edit: e.clone(),
        }));
    review.edits.extend(fix);
    review.after = Cow::Owned(fixed);
}
