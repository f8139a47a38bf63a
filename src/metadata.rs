//! Kubewarden policy metadata: `metadata.yml`, checked, and embedded in (or read from) the
//! module's `io.kubewarden.metadata` custom section, in the JSON form Kubewarden reads.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use wasmparser::{Parser, Payload};

pub const SECTION: &str = "io.kubewarden.metadata";
pub const USAGE: &str = "io.kubewarden.policy.usage";
pub const REQUIRED_ANNOTATIONS: [&str; 7] = [
    "io.kubewarden.policy.title",
    "io.kubewarden.policy.version",
    "io.kubewarden.policy.description",
    "io.kubewarden.policy.author",
    "io.kubewarden.policy.url",
    "io.kubewarden.policy.source",
    "io.kubewarden.policy.license",
];
const EXECUTION_MODES: [&str; 4] = ["kubewarden-wapc", "opa", "gatekeeper", "wasi"];
const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "*"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_policy_type() -> String {
    "kubernetes".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub mutating: bool,
    #[serde(default = "default_true")]
    pub background_audit: bool,
    #[serde(default)]
    pub context_aware_resources: Vec<Value>,
    pub execution_mode: String,
    #[serde(default = "default_policy_type")]
    pub policy_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

impl Metadata {
    pub fn from_yaml(text: &str, source: &str) -> anyhow::Result<Self> {
        let metadata: Metadata = serde_yaml_ng::from_str(text)
            .with_context(|| format!("{source}: not policy metadata"))?;
        metadata.validate().with_context(|| source.to_string())?;
        Ok(metadata)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rules.is_empty() {
            bail!("rules must not be empty: a policy with no rules is never called");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            for (field, list) in [
                ("apiGroups", &rule.api_groups),
                ("apiVersions", &rule.api_versions),
                ("resources", &rule.resources),
                ("operations", &rule.operations),
            ] {
                if list.is_empty() {
                    bail!("rules[{i}].{field} must not be empty");
                }
                if list.len() > 1 && list.iter().any(|x| x == "*") {
                    bail!("rules[{i}].{field}: no other value may stand beside '*'");
                }
            }
            if rule.resources.iter().any(String::is_empty) {
                bail!("rules[{i}].resources: empty resource");
            }
            if let Some(op) = rule
                .operations
                .iter()
                .find(|o| !OPERATIONS.contains(&o.as_str()))
            {
                bail!(
                    "rules[{i}].operations: unknown operation {op:?} (CREATE, UPDATE, DELETE, CONNECT, *)"
                );
            }
        }
        // Kubewarden's policy types: `kubernetes` (admission requests) and `raw`.
        if !["kubernetes", "raw"].contains(&self.policy_type.as_str()) {
            bail!(
                "unknown policyType {:?} (expected kubernetes or raw)",
                self.policy_type
            );
        }
        if !EXECUTION_MODES.contains(&self.execution_mode.as_str()) {
            bail!(
                "unknown executionMode {:?} (expected one of {})",
                self.execution_mode,
                EXECUTION_MODES.join(", ")
            );
        }
        for key in REQUIRED_ANNOTATIONS {
            if self
                .annotations
                .get(key)
                .is_none_or(|v| v.trim().is_empty())
            {
                bail!("annotation {key} is required");
            }
        }
        let version = &self.annotations["io.kubewarden.policy.version"];
        semver::Version::parse(version.trim_start_matches('v')).map_err(|e| {
            anyhow::anyhow!(
                "io.kubewarden.policy.version {version:?} is not a semantic version: {e}"
            )
        })?;
        Ok(())
    }

    pub fn title(&self) -> &str {
        self.annotations
            .get("io.kubewarden.policy.title")
            .map(String::as_str)
            .unwrap_or("policy")
    }

    pub fn version(&self) -> &str {
        self.annotations
            .get("io.kubewarden.policy.version")
            .map(String::as_str)
            .unwrap_or("0.0.0")
    }

    /// The annotations that fit on one line (OCI manifest annotations).
    pub fn single_line_annotations(&self) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .filter(|(_, v)| !v.contains('\n'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The metadata embedded in `module`, if any.
pub fn read(module: &[u8]) -> anyhow::Result<Option<Metadata>> {
    // Said as the runtime says it, not as wasmparser's byte dump.
    if !module.starts_with(b"\0asm") {
        anyhow::bail!("not a WebAssembly module: it does not start with the wasm magic number");
    }
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::CustomSection(section) = payload.context("not a WebAssembly module")?
            && section.name() == SECTION
        {
            let metadata = serde_json::from_slice(section.data())
                .context("the metadata section is not valid metadata JSON")?;
            return Ok(Some(metadata));
        }
    }
    Ok(None)
}

/// `module` with `metadata` as its only `io.kubewarden.metadata` section (appended; any
/// earlier one is dropped, so annotating twice gives the same bytes).
pub fn embed(module: &[u8], metadata: &Metadata) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(metadata)?;
    let mut out = Vec::with_capacity(module.len() + json.len() + 64);
    let mut copied_to = 0usize;
    let mut drops: Vec<std::ops::Range<usize>> = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.context("not a WebAssembly module")?;
        if let Payload::CustomSection(section) = &payload
            && section.name() == SECTION
        {
            // The range covers the section's contents; the id byte and size come before.
            let range = section.range();
            let header_start = section_start(module, range.start);
            drops.push(header_start..range.end);
        }
    }
    for drop in drops {
        out.extend_from_slice(&module[copied_to..drop.start]);
        copied_to = drop.end;
    }
    out.extend_from_slice(&module[copied_to..]);
    let section = wasm_encoder::CustomSection {
        name: SECTION.into(),
        data: json.into(),
    };
    // A custom section: id 0, then the section's encoding (its size, name and data).
    out.push(wasm_encoder::Section::id(&section));
    wasm_encoder::Encode::encode(&section, &mut out);
    Ok(out)
}

/// Where the section whose contents start at `contents` begins: its id byte (0) and the
/// LEB128 size before the contents. (wasmparser gives the contents' range only.)
fn section_start(module: &[u8], contents: usize) -> usize {
    // The size is 1 to 5 bytes; the byte before it is the id 0. Walk back over the
    // continuation bytes of the LEB128.
    let mut i = contents - 1;
    while i > 0 && module[i - 1] & 0x80 != 0 {
        i -= 1;
    }
    i - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
rules:
  - {apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}
mutating: true
executionMode: kubewarden-wapc
annotations:
  io.kubewarden.policy.title: t
  io.kubewarden.policy.version: 0.1.0
  io.kubewarden.policy.description: d
  io.kubewarden.policy.author: a
  io.kubewarden.policy.url: https://example.com
  io.kubewarden.policy.source: https://example.com
  io.kubewarden.policy.license: Apache-2.0
"#;

    #[test]
    fn metadata_is_checked() {
        let m = Metadata::from_yaml(GOOD, "m.yml").unwrap();
        assert!(m.background_audit);
        for (from, to, part) in [
            (
                "resources: [pods]",
                "resources: []",
                "resources must not be empty",
            ),
            ("kubewarden-wapc", "wapc", "unknown executionMode"),
            ("version: 0.1.0", "version: one", "not a semantic version"),
            (
                "operations: [CREATE]",
                "operations: [CREATE, \"*\"]",
                "beside '*'",
            ),
            (
                "  io.kubewarden.policy.license: Apache-2.0\n",
                "",
                "io.kubewarden.policy.license is required",
            ),
            ("mutating: true", "mutatin: true", "unknown field"),
        ] {
            let err = Metadata::from_yaml(&GOOD.replace(from, to), "m.yml").unwrap_err();
            assert!(format!("{err:#}").contains(part), "{part}: {err:#}");
        }
        assert!(
            Metadata::from_yaml("rules: []\nexecutionMode: kubewarden-wapc\n", "m.yml").is_err()
        );
    }

    #[test]
    fn embedding_replaces_and_reads_back() {
        // The smallest module, then one with a type section after which the section goes.
        let module = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0".to_vec();
        wasmparser::validate(&module).unwrap();
        assert!(read(&module).unwrap().is_none());
        let mut m = Metadata::from_yaml(GOOD, "m.yml").unwrap();
        m.protocol_version = Some("v1".into());
        let once = embed(&module, &m).unwrap();
        assert_eq!(read(&once).unwrap(), Some(m.clone()));
        assert_eq!(
            embed(&once, &m).unwrap(),
            once,
            "annotating twice changes nothing"
        );
        m.annotations.insert(USAGE.into(), "x".repeat(300));
        let bigger = embed(&once, &m).unwrap();
        assert_eq!(read(&bigger).unwrap(), Some(m));
        wasmparser::validate(&bigger).unwrap();
    }
}
