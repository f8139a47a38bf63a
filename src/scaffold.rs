//! Scaffolding from a policy's metadata: the `policies.kubewarden.io/v1` resource that
//! deploys it, and its Artifact Hub package.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::metadata::Metadata;

/// A `ClusterAdmissionPolicy` or `AdmissionPolicy` for `module` (as the cluster should
/// fetch it), with `settings`.
pub fn manifest(
    kind: &str,
    module: &str,
    metadata: &Metadata,
    settings: Value,
    name: Option<&str>,
) -> anyhow::Result<String> {
    if kind != "ClusterAdmissionPolicy" && kind != "AdmissionPolicy" {
        bail!("--type must be ClusterAdmissionPolicy or AdmissionPolicy, not {kind}");
    }
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| metadata.title().trim_end_matches("-policy").to_string());
    let mut meta = json!({"name": name});
    if kind == "AdmissionPolicy" {
        meta["namespace"] = json!("default");
    }
    let resource = json!({
        "apiVersion": "policies.kubewarden.io/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "module": module,
            "settings": settings,
            "rules": metadata.rules,
            "mutating": metadata.mutating,
            "backgroundAudit": metadata.background_audit,
        }
    });
    Ok(serde_yaml_ng::to_string(&resource)?)
}

/// The Artifact Hub package (`artifacthub-pkg.yml`) of a policy.
pub fn artifacthub(
    metadata: &Metadata,
    questions: Option<&str>,
    created_at: &str,
) -> anyhow::Result<String> {
    let a = &metadata.annotations;
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    let version = metadata.version().trim_start_matches('v').to_string();
    let oci = a.get("io.kubewarden.policy.ociUrl").cloned().context(
        "annotation io.kubewarden.policy.ociUrl is required for an Artifact Hub package",
    )?;
    let image = format!("{oci}:v{version}");
    let keywords: Vec<String> = get("io.artifacthub.keywords")
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "kubewarden/mutation".into(),
        json!(metadata.mutating.to_string()),
    );
    if let Some(r) = a.get("io.artifacthub.resources") {
        annotations.insert("kubewarden/resources".into(), json!(r));
    }
    annotations.insert(
        "kubewarden/rules".into(),
        json!(serde_yaml_ng::to_string(&metadata.rules)?),
    );
    if let Some(q) = questions {
        annotations.insert("kubewarden/questions-ui".into(), json!(q));
    }
    let package = json!({
        "version": version,
        "name": metadata.title(),
        "displayName": a.get("io.artifacthub.displayName").cloned().unwrap_or_else(|| metadata.title().to_string()),
        "createdAt": created_at,
        "description": get("io.kubewarden.policy.description"),
        "license": get("io.kubewarden.policy.license"),
        "homeURL": get("io.kubewarden.policy.url"),
        "containersImages": [{"name": "policy", "image": image}],
        "keywords": keywords,
        "links": [
            {"name": "policy", "url": format!("https://{image}")},
            {"name": "source", "url": get("io.kubewarden.policy.source")},
        ],
        "install": format!(
            "The policy can be obtained with sidecarctl (or kwctl):\n```console\nsidecarctl pull registry://{image} -o policy.wasm\n```\nand deployed with the ClusterAdmissionPolicy from `sidecarctl scaffold manifest`.\n"
        ),
        "maintainers": [{"name": get("io.kubewarden.policy.author")}],
        "provider": {"name": "kubewarden"},
        "recommendations": [{"url": "https://artifacthub.io/packages/helm/kubewarden/kubewarden-controller"}],
        "annotations": annotations,
    });
    Ok(serde_yaml_ng::to_string(&package)?)
}

/// Now, as Artifact Hub wants it (RFC 3339, UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
