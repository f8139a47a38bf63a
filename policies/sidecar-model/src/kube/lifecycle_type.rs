//! Lifecycle types, and how a container gets one (ARCHITECTURE.md, "The sidecar vocabulary").
//! "Lifecycle type" is ours (Init, Sidecar, PostSidecar, Standard); Kubernetes' own
//! `lifecycle` field holds a container's hooks (postStart, preStop), which the model calls
//! hooks.

use crate::kube::glob::{self, Glob, image_repository};
use crate::kube::mesh::Mesh;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a container is for, which decides where it must sit in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LifecycleType {
    /// Runs to completion before anything after it.
    Init,
    /// Runs for the pod's whole life: started before the containers that need it, stopped
    /// after them. A native sidecar.
    Sidecar,
    /// Starts after the app containers.
    PostSidecar,
    /// The application.
    Standard,
}

impl LifecycleType {
    pub const NAMES: &'static str = "Init, Sidecar (or PreSidecar), PostSidecar, Standard";

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleType::Init => "Init",
            LifecycleType::Sidecar => "Sidecar",
            LifecycleType::PostSidecar => "PostSidecar",
            LifecycleType::Standard => "Standard",
        }
    }
}

impl fmt::Display for LifecycleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepts the names of ARCHITECTURE.md's vocabulary case-insensitively; `PreSidecar` is `Sidecar`.
impl FromStr for LifecycleType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "init" => Ok(LifecycleType::Init),
            "sidecar" | "presidecar" => Ok(LifecycleType::Sidecar),
            "postsidecar" => Ok(LifecycleType::PostSidecar),
            "standard" => Ok(LifecycleType::Standard),
            _ => Err(format!(
                "unknown lifecycle type {s:?} (expected one of {})",
                Self::NAMES
            )),
        }
    }
}

impl<'de> Deserialize<'de> for LifecycleType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which list of the pod spec a container sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ContainerList {
    #[serde(rename = "initContainers")]
    InitContainers,
    #[serde(rename = "containers")]
    Containers,
}

impl ContainerList {
    pub fn field(self) -> &'static str {
        match self {
            ContainerList::InitContainers => "initContainers",
            ContainerList::Containers => "containers",
        }
    }
}

/// Why a container has its type, strongest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum TypeReason {
    /// An init container with `restartPolicy: Always`.
    NativeSidecar,
    /// An init container without `restartPolicy: Always`.
    InitContainer,
    /// The pod annotation `lifecycle.sidecars.dev/<name>`.
    Annotation { key: String },
    /// A known-sidecar rule matched the container's name or image.
    KnownSidecar { rule: String },
    /// A known-sidecar rule matched, but every app container matched one: the helper is
    /// the application (an Istio gateway is a proxy and nothing else).
    KnownSidecarAlone { rule: String },
    /// A known-sidecar rule matched a container the pod's own name label names (`app`,
    /// `app.kubernetes.io/name`): the helper is the pod's own data plane (Envoy in an
    /// all-in-one ingress pod), the application.
    KnownSidecarNamedByPod { rule: String, label: String },
    /// Nothing said otherwise.
    Default,
}

impl fmt::Display for TypeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeReason::NativeSidecar => f.write_str("init container with restartPolicy: Always"),
            TypeReason::InitContainer => f.write_str("init container"),
            TypeReason::Annotation { key } => write!(f, "annotation {key}"),
            TypeReason::KnownSidecar { rule } => write!(f, "known sidecar ({rule})"),
            TypeReason::KnownSidecarAlone { rule } => {
                write!(
                    f,
                    "known sidecar ({rule}), but no other app container: the application"
                )
            }
            TypeReason::KnownSidecarNamedByPod { rule, label } => write!(
                f,
                "known sidecar ({rule}), but the pod's label {label} names it: the application"
            ),
            TypeReason::Default => f.write_str("app container"),
        }
    }
}

/// A rule that recognises a well-known sidecar by container name and/or image.
/// Patterns are globs (`*`, `?`); an image pattern is matched against the image without
/// its tag or digest (`docker.io/istio/proxyv2`). All given patterns must match.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnownSidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The type the rule gives; `Sidecar` when omitted.
    #[serde(rename = "type", default = "default_sidecar_type")]
    pub lifecycle: LifecycleType,
    /// Names (globs) of the init containers that belong before this sidecar, as a mesh's
    /// traffic-redirection step belongs before its proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_steps: Vec<String>,
}

fn default_sidecar_type() -> LifecycleType {
    LifecycleType::Sidecar
}

impl KnownSidecar {
    pub fn new(name: Option<&str>, image: Option<&str>) -> Self {
        KnownSidecar {
            name: name.map(str::to_string),
            image: image.map(str::to_string),
            lifecycle: LifecycleType::Sidecar,
            init_steps: Vec::new(),
        }
    }

    /// The same checks as any selector's (a pattern to match, no blanks, no tags).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_none() && self.image.is_none() {
            return Err("a known sidecar needs a name or an image pattern".into());
        }
        glob::validate_patterns(self.name.as_deref(), self.image.as_deref())?;
        for (i, step) in self.init_steps.iter().enumerate() {
            glob::validate_patterns(Some(step), None)
                .map_err(|e| format!("initSteps[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// How the rule reads in messages: `image */istio/proxyv2`.
    pub fn describe(&self) -> String {
        self.rule().describe()
    }

    /// The rule as classification sees it.
    pub fn rule(&self) -> KnownRule<'_> {
        KnownRule {
            name: self.name.as_deref(),
            image: self.image.as_deref(),
            lifecycle: self.lifecycle,
            init_steps: InitSteps::Settings(&self.init_steps),
            mesh: None,
        }
    }
}

/// Init-container name patterns of a known sidecar: a mesh's own, or a settings rule's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSteps<'a> {
    Mesh(&'static [&'static str]),
    Settings(&'a [String]),
}

impl InitSteps<'_> {
    /// Whether the init container `name` belongs before the sidecar.
    pub fn include(&self, name: &str) -> bool {
        match self {
            InitSteps::Mesh(patterns) => patterns.iter().any(|p| glob::matches(p, name)),
            InitSteps::Settings(patterns) => patterns.iter().any(|p| glob::matches(p, name)),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            InitSteps::Mesh(p) => p.is_empty(),
            InitSteps::Settings(p) => p.is_empty(),
        }
    }
}

/// The known-sidecar list policies classify with: the defaults, extended or replaced by
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnownSidecarSettings {
    /// Rules added to (or, with `replaceDefaults`, used instead of) the default list.
    #[serde(default)]
    pub rules: Vec<KnownSidecar>,
    #[serde(default)]
    pub replace_defaults: bool,
}

impl KnownSidecarSettings {
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| format!("knownSidecars.rules[{i}]: {e}"))?;
        }
        Ok(())
    }

    pub fn resolve(&self) -> KnownSidecars {
        KnownSidecars {
            defaults: !self.replace_defaults,
            custom: self.rules.clone(),
        }
    }
}

/// A known-sidecar rule as classification sees it: a default's patterns are static, a
/// settings rule's borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRule<'a> {
    pub name: Option<&'a str>,
    pub image: Option<&'a str>,
    pub lifecycle: LifecycleType,
    pub init_steps: InitSteps<'a>,
    /// The mesh whose proxy the rule recognises: conversion gives it the mesh's layout.
    pub mesh: Option<Mesh>,
}

impl KnownRule<'_> {
    /// All given patterns match; an image pattern matches the image's repository.
    fn matches(&self, name: &str, repository: Option<&str>) -> bool {
        rule_matches(
            self.name.map(Glob::new),
            self.image.map(Glob::new),
            name,
            repository,
        )
    }

    /// How the rule reads in messages: `image */istio/proxyv2`.
    pub fn describe(&self) -> String {
        match (self.name, self.image) {
            (Some(n), Some(i)) => format!("name {n}, image {i}"),
            (Some(n), None) => format!("name {n}"),
            (None, Some(i)) => format!("image {i}"),
            (None, None) => "empty rule".into(),
        }
    }
}

const fn by_image(pattern: &'static str) -> KnownRule<'static> {
    KnownRule {
        name: None,
        image: Some(pattern),
        lifecycle: LifecycleType::Sidecar,
        init_steps: InitSteps::Mesh(&[]),
        mesh: None,
    }
}

const fn by_name(pattern: &'static str) -> KnownRule<'static> {
    KnownRule {
        name: Some(pattern),
        image: None,
        lifecycle: LifecycleType::Sidecar,
        init_steps: InitSteps::Mesh(&[]),
        mesh: None,
    }
}

impl KnownRule<'static> {
    /// The proxy of `mesh`, whose init steps run before it.
    const fn of(self, mesh: Mesh) -> Self {
        KnownRule {
            init_steps: InitSteps::Mesh(mesh.init_steps()),
            mesh: Some(mesh),
            ..self
        }
    }
}

/// Helpers that run beside an application for its whole life, recognised by image
/// (registry and tag free) or by the container name their injectors use. A static table:
/// a fresh policy instance builds nothing to classify a pod.
const DEFAULT_RULES: &[KnownRule<'static>] = &[
    // Istio's proxy image also runs istio-init, but that sits in initContainers where
    // position decides.
    by_image("*/proxyv2").of(Mesh::Istio),
    by_name("istio-proxy").of(Mesh::Istio),
    by_image("*/linkerd/proxy").of(Mesh::Linkerd),
    by_image("*linkerd*-proxy").of(Mesh::Linkerd),
    by_name("linkerd-proxy").of(Mesh::Linkerd),
    by_image("*/envoyproxy/envoy*"),
    by_name("envoy"),
    by_name("envoy-sidecar"),
    by_image("*/fluent-bit"),
    by_image("fluent/fluent-bit"),
    by_name("fluent-bit"),
    by_image("*/vector"),
    by_image("timberio/vector"),
    by_image("*opentelemetry-collector*"),
    by_name("otc-container"),
    by_name("otel-collector"),
    by_image("*/cloud-sql-proxy"),
    by_image("*/cloudsql-proxy"),
    by_name("cloud-sql-proxy"),
    by_image("*/vault"),
    by_name("vault-agent"),
    by_image("*/daprd"),
    by_image("*/dapr"),
    by_name("daprd"),
];

/// DEFAULT_RULES' patterns (name, image), analysed at compile time.
const DEFAULT_GLOBS: [(Option<Glob<'static>>, Option<Glob<'static>>); DEFAULT_RULES.len()] = {
    const fn glob(pattern: Option<&'static str>) -> Option<Glob<'static>> {
        match pattern {
            Some(p) => Some(Glob::new(p)),
            None => None,
        }
    }
    let mut globs = [(None, None); DEFAULT_RULES.len()];
    let mut i = 0;
    while i < DEFAULT_RULES.len() {
        globs[i] = (glob(DEFAULT_RULES[i].name), glob(DEFAULT_RULES[i].image));
        i += 1;
    }
    globs
};

/// A rule with at least one pattern, every one of which matches.
fn rule_matches(
    name_glob: Option<Glob>,
    image_glob: Option<Glob>,
    name: &str,
    repository: Option<&str>,
) -> bool {
    (name_glob.is_some() || image_glob.is_some())
        && name_glob.is_none_or(|g| g.matches(name))
        && image_glob.is_none_or(|g| repository.is_some_and(|r| g.matches(r)))
}

/// The rules policies classify with: the defaults (unless replaced), then the settings'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSidecars {
    defaults: bool,
    custom: Vec<KnownSidecar>,
}

impl Default for KnownSidecars {
    fn default() -> Self {
        KnownSidecars {
            defaults: true,
            custom: Vec::new(),
        }
    }
}

impl KnownSidecars {
    pub fn none() -> Self {
        Self::from_rules(Vec::new())
    }

    /// Exactly these rules, without the defaults.
    pub fn from_rules(rules: Vec<KnownSidecar>) -> Self {
        KnownSidecars {
            defaults: false,
            custom: rules,
        }
    }

    /// Every rule, in the order they are tried.
    pub fn rules(&self) -> impl Iterator<Item = KnownRule<'_>> {
        let defaults = if self.defaults { DEFAULT_RULES } else { &[] };
        defaults
            .iter()
            .copied()
            .chain(self.custom.iter().map(KnownSidecar::rule))
    }

    /// The first rule that recognises a container.
    pub fn find(&self, name: &str, image: Option<&str>) -> Option<KnownRule<'_>> {
        let repository = image.map(image_repository);
        if self.defaults
            && let Some(i) = DEFAULT_GLOBS
                .iter()
                .position(|(n, i)| rule_matches(*n, *i, name, repository))
        {
            return Some(DEFAULT_RULES[i]);
        }
        self.custom
            .iter()
            .map(KnownSidecar::rule)
            .find(|r| r.matches(name, repository))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_parse_with_the_alias() {
        assert_eq!("Sidecar".parse(), Ok(LifecycleType::Sidecar));
        assert_eq!("PreSidecar".parse(), Ok(LifecycleType::Sidecar));
        assert_eq!("postsidecar".parse(), Ok(LifecycleType::PostSidecar));
        assert_eq!(" Init ".parse(), Ok(LifecycleType::Init));
        assert_eq!("Standard".parse(), Ok(LifecycleType::Standard));
        let err = "Sidekick".parse::<LifecycleType>().unwrap_err();
        assert!(err.contains("\"Sidekick\""), "{err}");
    }

    #[test]
    fn the_precompiled_defaults_find_what_the_rules_find() {
        let known = KnownSidecars::default();
        let names = ["istio-proxy", "app", "envoy", "vault-agent", "daprd", "x"];
        let images = [
            None,
            Some("docker.io/istio/proxyv2:1.24"),
            Some("cr.l5d.io/linkerd/proxy:stable"),
            Some("ghcr.io/x/linkerd2-proxy"),
            Some("envoyproxy/envoy:v1.31"),
            Some("docker.io/envoyproxy/envoy-distroless:v1"),
            Some("otel/opentelemetry-collector-contrib:0.110"),
            Some("hashicorp/vault"),
            Some("registry:5000/shop/app:2"),
        ];
        for name in names {
            for image in images {
                let by_rules = known
                    .rules()
                    .find(|r| r.matches(name, image.map(image_repository)));
                assert_eq!(known.find(name, image), by_rules, "{name} {image:?}");
            }
        }
    }

    #[test]
    fn default_rules_know_the_usual_sidecars() {
        let known = KnownSidecars::default();
        for (name, image) in [
            ("proxy", "registry.istio.io/testing/proxyv2:latest"),
            ("istio-proxy", "custom"),
            ("x", "cr.l5d.io/linkerd/proxy:edge-24.1.1"),
            ("x", "docker.io/envoyproxy/envoy:v1.30"),
            ("logs", "cr.fluentbit.io/fluent/fluent-bit:3.0"),
            ("x", "otel/opentelemetry-collector-contrib:0.98.0"),
            ("x", "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.11"),
            ("x", "hashicorp/vault:1.16"),
            ("x", "docker.io/daprio/daprd:1.13"),
        ] {
            assert!(known.find(name, Some(image)).is_some(), "{name} {image}");
        }
        for (name, image) in [("app", "nginx:1.27"), ("web", "busybox")] {
            assert!(known.find(name, Some(image)).is_none(), "{name} {image}");
        }
    }

    #[test]
    fn settings_extend_or_replace_the_defaults() {
        let extra = KnownSidecar::new(Some("my-agent"), None);
        let extended = KnownSidecarSettings {
            rules: vec![extra.clone()],
            replace_defaults: false,
        }
        .resolve();
        assert!(extended.find("my-agent", None).is_some());
        assert!(extended.find("istio-proxy", None).is_some());
        let replaced = KnownSidecarSettings {
            rules: vec![extra],
            replace_defaults: true,
        }
        .resolve();
        assert!(replaced.find("my-agent", None).is_some());
        assert!(replaced.find("istio-proxy", None).is_none());
    }

    #[test]
    fn settings_reject_typos_and_empty_rules() {
        let typo = serde_json::from_str::<KnownSidecarSettings>(r#"{"rule": []}"#);
        assert!(typo.is_err());
        let empty: KnownSidecarSettings =
            serde_json::from_str(r#"{"rules": [{"type": "PostSidecar"}]}"#).unwrap();
        assert!(empty.validate().unwrap_err().contains("rules[0]"));
        let bad_type = serde_json::from_str::<KnownSidecarSettings>(
            r#"{"rules": [{"name": "x", "type": "Sidekick"}]}"#,
        );
        assert!(bad_type.unwrap_err().to_string().contains("Sidekick"));
    }
}
