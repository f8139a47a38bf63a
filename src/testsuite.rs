//! Declarative test suites: YAML files that name a policy, settings, requests and what the
//! answer must be.
//!
//! ```yaml
//! policy: ../../build/wasm/some-policy.wasm    # relative to this file
//! settings: {}                                  # default for every case
//! cases:
//!   - name: a conforming pod is accepted untouched
//!     request: fixtures/pod.yaml                # a file, or an inline object/request/review
//!     expect: {allowed: true, patched: false}
//!   - name: typos in settings are refused
//!     settings: {requireStartupProbee: true}
//!     expect: {settingsValid: false, messageContains: unknown field}
//! ```

use anyhow::{Context, bail};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admission::{self, AdmissionResponse};
use crate::evaluation::{Evaluator, SettingsError};
use crate::runtime::{Policy, Runtime};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Suite {
    policy: String,
    #[serde(default)]
    settings: Option<Value>,
    /// Settings from a JSON or YAML file, relative to the suite; `settings` wins.
    #[serde(default)]
    settings_path: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    /// Overrides the suite's policy.
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
    /// A path (relative to the suite) or an inline document.
    #[serde(default)]
    request: Option<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    settings_valid: Option<bool>,
    #[serde(default)]
    allowed: Option<bool>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message_contains: Option<String>,
    #[serde(default)]
    message_matches: Option<String>,
    /// Every listed text must appear in some warning.
    #[serde(default)]
    warnings_contain: Vec<String>,
    /// The exact number of warnings.
    #[serde(default)]
    warning_count: Option<usize>,
    #[serde(default)]
    audit_annotations: HashMap<String, String>,
    #[serde(default)]
    patched: Option<bool>,
    /// Checked on the patched object (the request's object when there is no patch).
    #[serde(default)]
    jsonpath: Vec<PathCheck>,
    /// The patched object, evaluated again, is accepted with no patch (admission webhooks
    /// may be reinvoked on their own output).
    #[serde(default)]
    idempotent: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PathCheck {
    path: String,
    /// `equals: null` is a check for null, not a missing check.
    #[serde(default, deserialize_with = "present")]
    equals: Option<Value>,
    #[serde(default)]
    exists: Option<bool>,
    #[serde(default)]
    count: Option<usize>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Expect {
    /// A case whose expectations cannot fail passes whatever the policy does: refused,
    /// like a jsonpath entry that checks nothing or a path that does not parse.
    fn checks(&self) -> anyhow::Result<()> {
        let checks_something = self.settings_valid.is_some()
            || self.allowed.is_some()
            || self.code.is_some()
            || self.message_contains.is_some()
            || self.message_matches.is_some()
            || !self.warnings_contain.is_empty()
            || self.warning_count.is_some()
            || !self.audit_annotations.is_empty()
            || self.patched.is_some()
            || !self.jsonpath.is_empty()
            || self.idempotent;
        if !checks_something {
            bail!(
                "expect checks nothing, so the case would pass whatever the policy does: say what must hold (allowed, patched, messageContains, jsonpath, ...)"
            );
        }
        for check in &self.jsonpath {
            if check.equals.is_none() && check.exists.is_none() && check.count.is_none() {
                bail!(
                    "jsonpath {:?} checks nothing: give it equals, exists or count",
                    check.path
                );
            }
            JsonPath::parse(&check.path)
                .map_err(|e| anyhow::anyhow!("jsonpath {:?} is not RFC 9535: {e}", check.path))?;
        }
        if let Some(pattern) = &self.message_matches {
            Regex::new(pattern)
                .with_context(|| format!("messageMatches {pattern:?} is not a regex"))?;
        }
        Ok(())
    }
}

pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
}

/// Suite files under `paths` (files as given, directories searched for `*.yaml`/`*.yml`).
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).with_context(|| format!("cannot read {}", path.display()))?;
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{}: no such file or directory", path.display());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".suite.yaml") || n.ends_with(".suite.yml"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs every suite; prints one line per case and returns the counts. Errors are for
/// suites that cannot be read at all.
pub fn run(
    runtime: &Runtime,
    access: &crate::oci::Access,
    files: &[PathBuf],
    out: &mut impl std::io::Write,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        passed: 0,
        failed: 0,
    };
    let mut policies: HashMap<(PathBuf, u64), Policy> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        // An editor's byte-order mark is not part of the YAML.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let suite: Suite = serde_yaml_ng::from_str(text)
            .with_context(|| format!("{}: not a test suite", file.display()))?;
        if suite.cases.is_empty() {
            bail!(
                "{}: the suite has no cases, so it would pass whatever the policy does",
                file.display()
            );
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let suite_settings = match (&suite.settings, &suite.settings_path) {
            (Some(inline), _) => Some(inline.clone()),
            (None, Some(path)) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(admission::parse_document(
                    &text,
                    &path.display().to_string(),
                )?)
            }
            (None, None) => None,
        };
        let timeout = Duration::from_millis(
            suite
                .timeout_ms
                .unwrap_or(crate::runtime::DEFAULT_TIMEOUT.as_millis() as u64),
        );
        // What the cases need is bad input when it is missing, not a failed case: every
        // module loads and every request file reads before the first case runs.
        let mut case_policies = Vec::new();
        for case in &suite.cases {
            let at = || format!("{}: case {:?}", file.display(), case.name);
            let reference = case.policy.as_deref().unwrap_or(&suite.policy);
            let module = match crate::oci::ModuleRef::parse(reference).with_context(at)? {
                crate::oci::ModuleRef::File(path) => crate::oci::ModuleRef::File(base.join(path)),
                remote => remote,
            };
            let key = (
                PathBuf::from(format!("{module:?}")),
                timeout.as_millis() as u64,
            );
            if !policies.contains_key(&key) {
                let p =
                    crate::oci::load_policy(runtime, &module, access, timeout).with_context(at)?;
                policies.insert(key.clone(), p);
            }
            case_policies.push(policies[&key].clone());
            if let Some(Value::String(path)) = &case.request {
                read_request(base, path).with_context(at)?;
            }
        }
        for (case, policy) in suite.cases.iter().zip(case_policies) {
            let label = format!("{}::{}", file.display(), case.name);
            let settings = case
                .settings
                .clone()
                .or_else(|| suite_settings.clone())
                .unwrap_or_else(|| Value::Object(Default::default()));
            let result = run_case(base, case, policy, settings);
            match result {
                Ok(()) => {
                    outcome.passed += 1;
                    let _ = writeln!(out, "PASS {label}");
                }
                Err(e) => {
                    outcome.failed += 1;
                    let _ = writeln!(out, "FAIL {label}: {e:#}");
                }
            }
        }
    }
    Ok(outcome)
}

/// A case's request file, relative to its suite.
fn read_request(base: &Path, path: &str) -> anyhow::Result<Value> {
    let path = base.join(path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    admission::parse_document(&text, &path.display().to_string())
}

fn run_case(base: &Path, case: &Case, policy: Policy, settings: Value) -> anyhow::Result<()> {
    let expect = &case.expect;
    expect.checks()?;
    let evaluator = match (Evaluator::new(policy, settings), expect.settings_valid) {
        (Ok(_), Some(false)) => bail!("settings valid: expected false, got true"),
        (Ok(evaluator), _) => evaluator,
        (Err(SettingsError::Invalid { message, .. }), Some(false)) => {
            return check_message(expect, &message);
        }
        (Err(e), _) => return Err(e.into()),
    };
    let Some(request) = &case.request else {
        if expect.settings_valid.is_some() {
            return Ok(());
        }
        bail!("the case has no request");
    };
    let document = match request {
        Value::String(path) => read_request(base, path)?,
        inline => inline.clone(),
    };
    let request = admission::to_request(document)?;
    let response = evaluator.evaluate(&request).response;
    check_response(expect, &request, &response)?;
    if expect.idempotent {
        let mut again = request.clone();
        let object = request.get("object").cloned().unwrap_or(Value::Null);
        again["object"] = response.patched(&object)?;
        let second = evaluator.evaluate(&again).response;
        if !second.allowed || second.patch.is_some() {
            bail!(
                "not idempotent: run on its own output it answered allowed={} with {}",
                second.allowed,
                match second.decoded_patch() {
                    Ok(Some(p)) =>
                        format!("patch {}", serde_json::to_string(&p).unwrap_or_default()),
                    _ => format!("message {:?}", second.status.and_then(|s| s.message)),
                }
            );
        }
    }
    Ok(())
}

fn check_message(expect: &Expect, message: &str) -> anyhow::Result<()> {
    if let Some(part) = &expect.message_contains
        && !message.contains(part.as_str())
    {
        bail!("message {message:?} does not contain {part:?}");
    }
    if let Some(pattern) = &expect.message_matches {
        let re = Regex::new(pattern)
            .with_context(|| format!("messageMatches {pattern:?} is not a regex"))?;
        if !re.is_match(message) {
            bail!("message {message:?} does not match /{pattern}/");
        }
    }
    Ok(())
}

fn check_response(
    expect: &Expect,
    request: &Value,
    response: &AdmissionResponse,
) -> anyhow::Result<()> {
    let status = response.status.clone().unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    if let Some(allowed) = expect.allowed
        && response.allowed != allowed
    {
        bail!(
            "allowed: expected {allowed}, got {} (message: {message:?})",
            response.allowed
        );
    }
    if let Some(code) = expect.code
        && status.code != Some(code)
    {
        bail!("code: expected {code}, got {:?}", status.code);
    }
    check_message(expect, &message)?;
    let warnings = response.warnings.clone().unwrap_or_default();
    for part in &expect.warnings_contain {
        if !warnings.iter().any(|w| w.contains(part.as_str())) {
            bail!("no warning contains {part:?}; warnings: {warnings:?}");
        }
    }
    if let Some(n) = expect.warning_count
        && warnings.len() != n
    {
        bail!(
            "expected {n} warnings, got {}: {warnings:?}",
            warnings.len()
        );
    }
    let annotations = response.audit_annotations.clone().unwrap_or_default();
    for (key, value) in &expect.audit_annotations {
        match annotations.get(key) {
            Some(v) if v == value => {}
            other => bail!("audit annotation {key}: expected {value:?}, got {other:?}"),
        }
    }
    if let Some(patched) = expect.patched
        && response.patch.is_some() != patched
    {
        bail!(
            "patched: expected {patched}, got {}{}",
            response.patch.is_some(),
            match response.decoded_patch() {
                Ok(Some(p)) => format!(" ({})", serde_json::to_string(&p).unwrap_or_default()),
                _ => String::new(),
            }
        );
    }
    if !expect.jsonpath.is_empty() {
        let object = request.get("object").cloned().unwrap_or(Value::Null);
        let result = response.patched(&object)?;
        for check in &expect.jsonpath {
            let path = JsonPath::parse(&check.path)
                .map_err(|e| anyhow::anyhow!("jsonpath {:?}: {e}", check.path))?;
            let found = path.query(&result).all();
            if let Some(exists) = check.exists
                && found.is_empty() == exists
            {
                bail!(
                    "{}: expected {}",
                    check.path,
                    if exists { "a match" } else { "no match" }
                );
            }
            if let Some(n) = check.count
                && found.len() != n
            {
                bail!("{}: expected {n} matches, got {}", check.path, found.len());
            }
            if let Some(want) = &check.equals {
                if found.is_empty() {
                    bail!("{}: no match, expected {want}", check.path);
                }
                if let Some(bad) = found.iter().copied().find(|v| *v != want) {
                    bail!("{}: expected {want}, got {bad}", check.path);
                }
            }
        }
    }
    Ok(())
}
