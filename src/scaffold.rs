//! Scaffolding from a policy's metadata: the `policies.kubewarden.io/v1` resource that
//! deploys it, and its Artifact Hub package.

use anyhow::{Context, bail};
use serde::Serialize;
use serde_yaml_ng::Value as Yaml;

use crate::metadata::{Metadata, Rule};

// Written from typed structs, not `serde_json::Value` maps: serde_json sorts an object's
// keys, and these files are read by people, in the order Kubernetes and Artifact Hub
// document them. Settings stay YAML values, which keep the order they were written in.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyResource<'a> {
    api_version: &'static str,
    kind: &'a str,
    metadata: ResourceMetadata,
    spec: PolicySpec<'a>,
}

#[derive(Serialize)]
struct ResourceMetadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicySpec<'a> {
    module: &'a str,
    settings: Yaml,
    rules: &'a [Rule],
    mutating: bool,
    background_audit: bool,
}

/// A `ClusterAdmissionPolicy` or `AdmissionPolicy` for `module` (as the cluster should
/// fetch it), with `settings`.
pub fn manifest(
    kind: &str,
    module: &str,
    metadata: &Metadata,
    settings: Yaml,
    name: Option<&str>,
) -> anyhow::Result<String> {
    if kind != "ClusterAdmissionPolicy" && kind != "AdmissionPolicy" {
        bail!("--type must be ClusterAdmissionPolicy or AdmissionPolicy, not {kind}");
    }
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| metadata.title().trim_end_matches("-policy").to_string());
    let resource = PolicyResource {
        api_version: "policies.kubewarden.io/v1",
        kind,
        metadata: ResourceMetadata {
            name,
            namespace: (kind == "AdmissionPolicy").then_some("default"),
        },
        spec: PolicySpec {
            module,
            settings,
            rules: &metadata.rules,
            mutating: metadata.mutating,
            background_audit: metadata.background_audit,
        },
    };
    Ok(serde_yaml_ng::to_string(&resource)?)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    version: String,
    name: String,
    display_name: String,
    created_at: String,
    description: String,
    license: String,
    #[serde(rename = "homeURL")]
    home_url: String,
    containers_images: [Image; 1],
    keywords: Vec<String>,
    links: [Link; 2],
    install: String,
    maintainers: [Name; 1],
    provider: Name,
    recommendations: [Link; 1],
    annotations: PackageAnnotations,
}

#[derive(Serialize)]
struct Image {
    name: &'static str,
    image: String,
}

#[derive(Serialize)]
struct Name {
    name: String,
}

#[derive(Serialize)]
struct Link {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'static str>,
    url: String,
}

#[derive(Serialize)]
struct PackageAnnotations {
    #[serde(rename = "kubewarden/mutation")]
    mutation: String,
    #[serde(
        rename = "kubewarden/resources",
        skip_serializing_if = "Option::is_none"
    )]
    resources: Option<String>,
    #[serde(rename = "kubewarden/rules")]
    rules: String,
    #[serde(
        rename = "kubewarden/questions-ui",
        skip_serializing_if = "Option::is_none"
    )]
    questions_ui: Option<String>,
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
    let package = Package {
        version,
        name: metadata.title().to_string(),
        display_name: a
            .get("io.artifacthub.displayName")
            .cloned()
            .unwrap_or_else(|| metadata.title().to_string()),
        created_at: created_at.to_string(),
        description: get("io.kubewarden.policy.description"),
        license: get("io.kubewarden.policy.license"),
        home_url: get("io.kubewarden.policy.url"),
        containers_images: [Image {
            name: "policy",
            image: image.clone(),
        }],
        keywords,
        links: [
            Link {
                name: Some("policy"),
                url: format!("https://{image}"),
            },
            Link {
                name: Some("source"),
                url: get("io.kubewarden.policy.source"),
            },
        ],
        install: format!(
            "The policy can be obtained with sidecarctl (or kwctl):\n```console\nsidecarctl pull registry://{image} --output-path policy.wasm\n```\nand deployed with the ClusterAdmissionPolicy from `sidecarctl scaffold manifest`.\n"
        ),
        maintainers: [Name {
            name: get("io.kubewarden.policy.author"),
        }],
        provider: Name {
            name: "kubewarden".into(),
        },
        recommendations: [Link {
            name: None,
            url: "https://artifacthub.io/packages/helm/kubewarden/kubewarden-controller".into(),
        }],
        annotations: PackageAnnotations {
            mutation: metadata.mutating.to_string(),
            resources: a.get("io.artifacthub.resources").cloned(),
            rules: serde_yaml_ng::to_string(&metadata.rules)?,
            questions_ui: questions.map(str::to_string),
        },
    };
    Ok(serde_yaml_ng::to_string(&package)?)
}

/// Now, as Artifact Hub wants it (RFC 3339, UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
