//! `rollout`: a sidecar set's current revision brought to the pods injected with an older
//! one, in batches. Which pods and what each needs are the model's
//! (`sidecar_model::inject::plan_rollout`) and the schedule's (`sidecarctl::rollout`); this
//! speaks the Kubernetes API: it lists pods, patches them in place, evicts those that must
//! be recreated, and reads from the pods' statuses when the kubelet has done its part.

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, EvictParams, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sidecar_model::inject::{ImageChange, RolloutStep, Settings, plan_rollout};
use sidecarctl::rollout::{PodKey, schedule};

use crate::cli::{RolloutArgs, RolloutOutput};
use crate::input::read_file;

pub fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// What happened to one pod.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PodReport {
    namespace: String,
    name: String,
    batch: Option<usize>,
    plan: String,
    result: String,
}

async fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let settings = settings(&client, &args).await?;
    let set = &args.set;
    let pods_api: Api<DynamicObject> = match &args.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &pods()),
        None => Api::all_with(client.clone(), &pods()),
    };
    let mut list = ListParams::default();
    if let Some(selector) = &args.selector {
        list = list.labels(selector);
    }
    let key = format!("{}{set}", sidecar_model::kube::keys::INJECTED_PREFIX);
    let listed = pods_api.list(&list).await.context("listing pods")?;
    let (mut covered, mut current, mut outdated) = (0, 0, Vec::new());
    for pod in listed.items {
        // The items of a list carry no kind of their own.
        let mut pod = serde_json::to_value(&pod)?;
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        if pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(&key))
            .is_none()
        {
            continue;
        }
        let pod_key = PodKey {
            namespace: str_at(&pod, "/metadata/namespace").to_string(),
            name: str_at(&pod, "/metadata/name").to_string(),
        };
        covered += 1;
        let step = plan_rollout(&pod, &settings, set, &pod_key.namespace)
            .map_err(|e| anyhow::anyhow!("{pod_key}: {e}"))?;
        match step {
            RolloutStep::Current | RolloutStep::NotInjected => current += 1,
            step => outdated.push((pod_key, (step, pod))),
        }
    }
    let plan = schedule(outdated, covered, args.max_unavailable, args.partition);
    let mut reports: Vec<PodReport> = Vec::new();
    let person = matches!(args.output, RolloutOutput::Text);
    let total: usize = plan.batches.iter().map(Vec::len).sum();
    if person {
        println!(
            "sidecar set {set:?}: {covered} pods injected, {current} current, {total} to roll in {} batches of at most {} (--max-unavailable {}), {} left by --partition",
            plan.batches.len(),
            args.max_unavailable.of(covered),
            args.max_unavailable,
            plan.left.len()
        );
    }
    for (key, (step, _)) in &plan.left {
        reports.push(PodReport {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            batch: None,
            plan: step.to_string(),
            result: "left on the old revision (--partition)".into(),
        });
    }
    let started = Instant::now();
    let (mut done, mut stopped) = (0usize, None::<String>);
    for (b, batch) in plan.batches.iter().enumerate() {
        if args.dry_run {
            for (key, (step, _)) in batch {
                if person {
                    println!("  batch {}: {key}: {step}", b + 1);
                }
                reports.push(report(key, b, step, "planned (--dry-run)"));
            }
            continue;
        }
        let mut waiting: Vec<(PodKey, &RolloutStep, Option<String>)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for (key, (step, pod)) in batch {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &key.namespace, &pods());
            match step {
                RolloutStep::InPlace { .. } => {
                    let patch: json_patch::Patch =
                        serde_json::from_value(step.patch(set).unwrap_or_default())?;
                    match api
                        .patch(
                            &key.name,
                            &PatchParams::default(),
                            &Patch::Json::<()>(patch),
                        )
                        .await
                    {
                        Ok(_) => waiting.push((key.clone(), step, None)),
                        // A failed `test`: the pod changed since it was read.
                        Err(kube::Error::Api(e))
                            if e.code == 422 || e.code == 409 || e.code == 404 =>
                        {
                            reports.push(report(
                                key,
                                b,
                                step,
                                &format!("skipped: changed since it was read ({})", e.message),
                            ));
                        }
                        Err(e) => failed.push(format!("{key}: the patch failed: {e}")),
                    }
                }
                RolloutStep::Recreate { .. } => {
                    let evictions: Api<k8s_openapi::api::core::v1::Pod> =
                        Api::namespaced(client.clone(), &key.namespace);
                    match evictions.evict(&key.name, &EvictParams::default()).await {
                        Ok(_) => waiting.push((
                            key.clone(),
                            step,
                            pod.pointer("/metadata/uid")
                                .and_then(Value::as_str)
                                .map(String::from),
                        )),
                        Err(kube::Error::Api(e)) => failed.push(format!(
                            "{key}: eviction refused ({}): {}",
                            e.code, e.message
                        )),
                        Err(e) => failed.push(format!("{key}: eviction failed: {e}")),
                    }
                }
                _ => {}
            }
        }
        // Wait for the kubelet (in place) or for the pod to go (evicted).
        let deadline = Instant::now() + args.timeout;
        let mut pending = waiting;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (key, step, uid) in pending {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &key.namespace, &pods());
                let pod = match api.get_opt(&key.name).await? {
                    Some(p) => Some(serde_json::to_value(&p)?),
                    None => None,
                };
                match (step, pod) {
                    (RolloutStep::Recreate { .. }, None) => {
                        done += 1;
                        reports.push(report(&key, b, step, "evicted"));
                    }
                    (RolloutStep::Recreate { .. }, Some(p))
                        if uid.as_deref() != p.pointer("/metadata/uid").and_then(Value::as_str) =>
                    {
                        done += 1;
                        reports.push(report(&key, b, step, "evicted"));
                    }
                    (RolloutStep::InPlace { images, .. }, Some(p)) => {
                        match runs_new_images(&p, images) {
                            Started::Yes => {
                                done += 1;
                                reports.push(report(&key, b, step, "in place"));
                            }
                            Started::Failing(why) => failed.push(format!("{key}: {why}")),
                            Started::NotYet => still.push((key, step, uid)),
                        }
                    }
                    (RolloutStep::InPlace { .. }, None) => {
                        reports.push(report(&key, b, step, "skipped: the pod is gone"));
                    }
                    _ => still.push((key, step, uid)),
                }
            }
            pending = still;
            if !pending.is_empty() {
                if Instant::now() > deadline {
                    for (key, step, _) in &pending {
                        let what = match step {
                            RolloutStep::Recreate { .. } => "was not gone",
                            _ => "had not started its new image",
                        };
                        failed.push(format!(
                            "{key}: {what} after {:?} (--timeout)",
                            args.timeout
                        ));
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        if person {
            println!(
                "batch {}/{}: {} pods; done {done}/{total} in {:.1?}",
                b + 1,
                plan.batches.len(),
                batch.len(),
                started.elapsed()
            );
        }
        if !failed.is_empty() {
            for line in &failed {
                if person {
                    eprintln!("  {line}");
                }
            }
            stopped = Some(format!(
                "batch {} failed, so the rollout stopped; run it again to resume once the cause is fixed:\n  {}",
                b + 1,
                failed.join("\n  ")
            ));
            break;
        }
    }
    let outcome = json!({
        "set": set,
        "revision": settings.sidecar_sets.iter().find(|s| s.name == *set).and_then(|s| s.revision().ok()),
        "injected": covered, "current": current, "toRoll": total, "done": done,
        "batches": plan.batches.len(), "left": plan.left.len(), "dryRun": args.dry_run,
        "stopped": stopped, "seconds": started.elapsed().as_secs_f64(),
        "pods": reports,
    });
    match args.output {
        RolloutOutput::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        RolloutOutput::Text => {
            if let Some(why) = &stopped {
                eprintln!("{why}");
            } else if !args.dry_run {
                println!(
                    "sidecar set {set:?}: {done} pods rolled in {:.1?}",
                    started.elapsed()
                );
            }
        }
    }
    Ok(if stopped.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn report(key: &PodKey, batch: usize, step: &RolloutStep, result: &str) -> PodReport {
    PodReport {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        batch: Some(batch + 1),
        plan: step.to_string(),
        result: result.to_string(),
    }
}

enum Started {
    Yes,
    NotYet,
    Failing(String),
}

/// Whether the kubelet reports each changed container running its new image: started, and
/// ready where it has a readiness or startup probe; a crash loop fails.
fn runs_new_images(pod: &Value, images: &[ImageChange]) -> Started {
    for change in images {
        let statuses = match change.list.as_str() {
            "initContainers" => "/status/initContainerStatuses",
            _ => "/status/containerStatuses",
        };
        let status = pod
            .pointer(statuses)
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|c| c["name"] == change.container.as_str()));
        let Some(status) = status else {
            return Started::NotYet;
        };
        let image = status["image"].as_str().unwrap_or_default();
        // Until the kubelet reports the new image, what it says is about the old one (the
        // crash loop this rollout fixes, say).
        if image != change.to && !image.ends_with(&format!("/{}", change.to)) {
            return Started::NotYet;
        }
        if let Some(reason) = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            && matches!(
                reason,
                "CrashLoopBackOff" | "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            )
        {
            return Started::Failing(format!("{} with {}: {reason}", change.container, change.to));
        }
        let spec = pod
            .pointer(&format!("/spec/{}/{}", change.list, change.index))
            .cloned()
            .unwrap_or_default();
        let probed = spec.get("readinessProbe").is_some() || spec.get("startupProbe").is_some();
        if status["started"] != true || (probed && status["ready"] != true) {
            return Started::NotYet;
        }
    }
    Started::Yes
}

fn pods() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Pod".into(),
        plural: "pods".into(),
    }
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no cluster: give --kubeconfig, set KUBECONFIG, or run in a pod")?,
    };
    // A 429 to an eviction is a disruption budget's answer, not a server that is busy:
    // kube-rs would retry it 15 times, with a backoff up to 1000 s.
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// The injector's settings: from `--settings-path` (the settings or its
/// ClusterAdmissionPolicy), or from the cluster's ClusterAdmissionPolicy that has the set.
async fn settings(client: &kube::Client, args: &RolloutArgs) -> anyhow::Result<Settings> {
    let value = match &args.settings_path {
        Some(path) => {
            let text = read_file(path)?;
            super::export::read(&text)
                .with_context(|| path.display().to_string())?
                .0
        }
        None => {
            let resource = ApiResource {
                group: "policies.kubewarden.io".into(),
                version: "v1".into(),
                api_version: "policies.kubewarden.io/v1".into(),
                kind: "ClusterAdmissionPolicy".into(),
                plural: "clusteradmissionpolicies".into(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let policies = api
                .list(&ListParams::default())
                .await
                .context("listing ClusterAdmissionPolicies")?;
            let mut having: BTreeMap<String, Value> = BTreeMap::new();
            for p in policies.items {
                let settings = p.data["spec"]["settings"].clone();
                let has = settings["sidecarSets"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["name"] == args.set.as_str()));
                if has {
                    having.insert(p.metadata.name.unwrap_or_default(), settings);
                }
            }
            match having.len() {
                1 => having.into_values().next().unwrap_or_default(),
                0 => bail!(
                    "no ClusterAdmissionPolicy has sidecar set {:?}; give --settings-path",
                    args.set
                ),
                _ => bail!(
                    "ClusterAdmissionPolicies {} all have sidecar set {:?}; give --settings-path",
                    having.keys().cloned().collect::<Vec<_>>().join(", "),
                    args.set
                ),
            }
        }
    };
    let settings: Settings =
        serde_json::from_value(value).map_err(|e| anyhow::anyhow!("settings: {e}"))?;
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
    if !settings.sidecar_sets.iter().any(|s| s.name == args.set) {
        bail!("the settings have no sidecar set {:?}", args.set);
    }
    Ok(settings)
}
