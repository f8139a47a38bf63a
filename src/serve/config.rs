//! policies.yml, in policy-server's format, so one file configures both engines.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::admission::{Constraints, PolicyMode};
use crate::oci::ModuleRef;

/// wasm32's address space: no instance can grow past 4 GiB.
pub const MAX_MEMORY_MIB: u64 = 4096;

/// One policy of policies.yml. policy-server ignores fields it does not know; we refuse
/// them, so that a typo (`allowedToMutat`) does not silently change a verdict.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyEntry {
    pub module: String,
    #[serde(default)]
    pub policy_mode: PolicyMode,
    /// policy-server treats a missing value as false.
    #[serde(default)]
    pub allowed_to_mutate: Option<bool>,
    #[serde(default)]
    pub settings: Option<Value>,
    #[serde(default)]
    pub context_aware_resources: Vec<Value>,
    /// Kubernetes allows 1–30 s for a webhook; the controller writes the policy's value.
    #[serde(default)]
    pub timeout_eval_seconds: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    /// sidecarctl's own: what one instance of this policy may grow its memory to, in
    /// MiB, instead of `--max-memory-mib`. policy-server ignores the field.
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
}

/// A checked policy: where its module is, and how its answers are constrained.
#[derive(Debug, Clone)]
pub struct ServedPolicy {
    pub id: String,
    pub module: ModuleRef,
    pub settings: Value,
    pub timeout: Option<Duration>,
    /// Bytes, when the policy has its own limit.
    pub max_memory: Option<usize>,
    pub constraints: Constraints,
}

pub fn read(path: &Path) -> anyhow::Result<Vec<ServedPolicy>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).with_context(|| path.display().to_string())
}

/// Relative module paths are read from the config file's directory.
pub fn parse(text: &str, base: &Path) -> anyhow::Result<Vec<ServedPolicy>> {
    let entries: BTreeMap<String, Value> = serde_yaml_ng::from_str(text)
        .context("not a policies.yml: expected a map of policy id to policy")?;
    if entries.is_empty() {
        bail!("no policies");
    }
    entries
        .into_iter()
        .map(|(id, raw)| entry(&id, raw, base).with_context(|| format!("policy {id:?}")))
        .collect()
}

fn entry(id: &str, raw: Value, base: &Path) -> anyhow::Result<ServedPolicy> {
    // The id is a path segment of /validate/{id}, as in policy-server.
    if id.is_empty() || id.contains('/') {
        bail!("a policy id must be non-empty and contain no '/'");
    }
    if raw.get("expression").is_some() || raw.get("policies").is_some() {
        bail!("policy groups are not supported by sidecarctl serve; list the policies one by one");
    }
    let entry: PolicyEntry = serde_json::from_value(raw)?;
    if !entry.context_aware_resources.is_empty() {
        bail!(
            "contextAwareResources: sidecarctl serve has no cluster to read them from; the sidecar policies need none"
        );
    }
    let settings = entry.settings.unwrap_or(Value::Null);
    let settings = match settings {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => settings,
        _ => bail!("settings must be a map"),
    };
    let timeout = match entry.timeout_eval_seconds {
        None => None,
        Some(s @ 1..=30) => Some(Duration::from_secs(s)),
        Some(s) => bail!("timeoutEvalSeconds is {s}; Kubernetes allows 1 to 30"),
    };
    let max_memory = match entry.max_memory_mib {
        None => None,
        Some(mib @ 1..=MAX_MEMORY_MIB) => Some((mib as usize) << 20),
        Some(mib) => {
            bail!("maxMemoryMib is {mib}; a wasm32 instance can have 1 to {MAX_MEMORY_MIB}")
        }
    };
    Ok(ServedPolicy {
        id: id.to_string(),
        module: module_ref(&entry.module, base)?,
        settings,
        timeout,
        max_memory,
        constraints: Constraints {
            mode: entry.policy_mode,
            allowed_to_mutate: entry.allowed_to_mutate.unwrap_or(false),
            message: entry.message,
        },
    })
}

/// `registry://` and `file://` as given; a bare reference is a file when it looks like
/// one (`./…`, `../…`, `/…`, `….wasm`) or exists beside the config, otherwise an image,
/// as policy-server reads it.
fn module_ref(text: &str, base: &Path) -> anyhow::Result<ModuleRef> {
    let bare = !text.contains("://");
    match ModuleRef::parse(text)? {
        ModuleRef::File(path) => {
            let local = if path.is_relative() {
                base.join(&path)
            } else {
                path
            };
            let looks_like_file =
                text.starts_with(['.', '/']) || text.ends_with(".wasm") || local.is_file();
            if bare && !looks_like_file {
                Ok(ModuleRef::Registry(text.to_string()))
            } else {
                Ok(ModuleRef::File(local))
            }
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_server_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let policies = parse(
            r#"
ordering:
  module: p.wasm
  allowedToMutate: true
  settings: {mode: mutate}
lifecycle:
  module: registry://ghcr.io/sidecars-dev/lifecycle:v1
  policyMode: monitor
  timeoutEvalSeconds: 5
  message: ask the platform team
  maxMemoryMib: 64
plain:
  module: ghcr.io/sidecars-dev/resources:v1
"#,
            dir.path(),
        )
        .unwrap();
        let by_id: BTreeMap<_, _> = policies.iter().map(|p| (p.id.as_str(), p)).collect();
        let ordering = by_id["ordering"];
        assert_eq!(ordering.module, ModuleRef::File(dir.path().join("p.wasm")));
        assert!(ordering.constraints.allowed_to_mutate);
        assert_eq!(ordering.constraints.mode, PolicyMode::Protect);
        assert_eq!(ordering.settings["mode"], "mutate");
        let lifecycle = by_id["lifecycle"];
        assert_eq!(lifecycle.constraints.mode, PolicyMode::Monitor);
        assert!(!lifecycle.constraints.allowed_to_mutate);
        assert_eq!(lifecycle.timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            lifecycle.constraints.message.as_deref(),
            Some("ask the platform team")
        );
        assert_eq!(lifecycle.settings, serde_json::json!({}));
        assert_eq!(lifecycle.max_memory, Some(64 << 20));
        assert_eq!(ordering.max_memory, None);
        assert_eq!(
            by_id["plain"].module,
            ModuleRef::Registry("ghcr.io/sidecars-dev/resources:v1".into())
        );
    }

    #[test]
    fn mistakes_are_named() {
        let base = Path::new(".");
        for (text, expected) in [
            (
                "p:\n  module: x\n  allowedToMutat: true\n",
                "unknown field `allowedToMutat`",
            ),
            (
                "p:\n  module: x\n  policyMode: enforce\n",
                "unknown variant `enforce`",
            ),
            (
                "p:\n  module: x\n  timeoutEvalSeconds: 60\n",
                "Kubernetes allows 1 to 30",
            ),
            (
                "p:\n  module: x\n  maxMemoryMib: 0\n",
                "maxMemoryMib is 0; a wasm32 instance can have 1 to 4096",
            ),
            (
                "p:\n  module: x\n  maxMemoryMib: 5000\n",
                "maxMemoryMib is 5000",
            ),
            (
                "p:\n  module: x\n  maxMemoryMiB: 64\n",
                "unknown field `maxMemoryMiB`",
            ),
            (
                "p:\n  module: x\n  settings: [1]\n",
                "settings must be a map",
            ),
            (
                "p:\n  policies: {}\n  expression: 'true'\n  message: m\n",
                "policy groups",
            ),
            ("a/b:\n  module: x\n", "contain no '/'"),
            ("p:\n  settings: {}\n", "missing field `module`"),
            ("[]", "not a policies.yml"),
            ("{}", "no policies"),
        ] {
            let error = format!("{:#}", parse(text, base).unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
