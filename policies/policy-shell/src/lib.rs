//! The glue between a policy's decision and the Kubewarden SDK, the same for every policy:
//! the request read once with its object kept as text, settings validation that answers
//! instead of erroring, and answers that carry warnings and audit annotations (the SDK's
//! helpers carry neither).

pub use kubewarden_policy_sdk::protocol_version_guest;
use kubewarden_policy_sdk::settings::{SettingsValidationResponse, Validatable};
pub use kubewarden_policy_sdk::wapc_guest::CallResult;
pub use kubewarden_policy_sdk::wapc_guest::prelude::register_function;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sidecar_model::PodModel;
use sidecar_model::json::message as json_message;
use std::borrow::Cow;
use std::collections::HashMap;

/// A policy's waPC exports: `wapc_init` registering `validate` (the request parsed once,
/// handed to `$evaluate` with the settings), `validate_settings` and `protocol_version`.
/// A macro because each policy cdylib must define its own `wapc_init` symbol.
#[macro_export]
macro_rules! export_policy {
    ($settings:ty, $evaluate:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn wapc_init() {
            fn validate(payload: &[u8]) -> $crate::CallResult {
                $crate::validate_with::<$settings>(payload, $evaluate)
            }
            $crate::register_function("validate", validate);
            $crate::register_function("validate_settings", $crate::validate_settings::<$settings>);
            $crate::register_function("protocol_version", $crate::protocol_version_guest);
            $crate::calls_start_here();
        }
    };
}

#[cfg(any(test, all(target_family = "wasm", not(target_feature = "atomics"))))]
mod arena;

/// What `wapc_init` allocated stays for the instance's life; the allocator reclaims the
/// rest after each call (see `arena`). Nothing to do off wasm.
#[doc(hidden)]
pub fn calls_start_here() {
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    arena::ARENA.calls_start_here();
}

/// `validate_settings`: settings that do not even parse (a typo in a field name, a wrong
/// type) are answered `valid: false` with serde's reason, like any other invalid setting.
pub fn validate_settings<T: DeserializeOwned + Validatable>(payload: &[u8]) -> CallResult {
    let verdict = read_settings::<T>(payload);
    Ok(serde_json::to_vec(&SettingsValidationResponse {
        valid: verdict.is_ok(),
        message: verdict.err(),
    })?)
}

/// `Settings::read(json)`: settings as `validate_settings` reads them, for any policy's
/// settings type (its tests read theirs through it).
pub trait ReadSettings: DeserializeOwned + Validatable {
    fn read(json: &str) -> Result<Self, String> {
        read_settings(json)
    }
}

impl<T: DeserializeOwned + Validatable> ReadSettings for T {}

/// Settings as `validate_settings` reads them: parsed, then validated. Payloads are
/// checked as UTF-8 once, whole, then read as text: read from bytes, serde_json checks
/// every string again.
pub fn read_settings<T: DeserializeOwned + Validatable>(
    json: impl AsRef<[u8]>,
) -> Result<T, String> {
    let text = std::str::from_utf8(json.as_ref()).map_err(|e| format!("invalid settings: {e}"))?;
    let settings: T = serde_json::from_str(text).map_err(|first| {
        // Read again with the path tracked: only a failed read pays for it.
        let again: Result<T, _> =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text));
        match again {
            Err(e) if e.path().iter().next().is_some() => {
                format!(
                    "invalid settings: {}: {}",
                    e.path(),
                    json_message(e.inner())
                )
            }
            _ => format!("invalid settings: {}", json_message(&first)),
        }
    })?;
    settings.validate()?;
    Ok(settings)
}

/// The part of the validation payload the policies read. The SDK's `ValidationRequest`
/// parses every field, the object and `oldObject` into `serde_json::Value` trees; in the
/// fresh instance policy-server gives each request, building and dropping those trees
/// cost more than a policy's own work. Here the object stays the JSON text it came as,
/// borrowed from the payload, and the model reads what it needs straight from it.
#[derive(Deserialize)]
#[serde(bound(deserialize = "S: DeserializeOwned + Default"))]
struct Payload<'a, S> {
    #[serde(default)]
    settings: S,
    #[serde(borrow)]
    request: AdmissionRequest<'a>,
}

/// An AdmissionRequest as the policies see it: the operation, the namespace, and the
/// object as its JSON text. Every other field is skipped unread.
#[derive(Debug, Deserialize)]
pub struct AdmissionRequest<'a> {
    #[serde(default, borrow)]
    pub uid: Cow<'a, str>,
    #[serde(default, borrow)]
    pub operation: Cow<'a, str>,
    #[serde(default, borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    /// `resize` for `pods/resize` (in-place resize of a running pod).
    #[serde(default, borrow, rename = "subResource")]
    pub sub_resource: Cow<'a, str>,
    #[serde(default, borrow, rename = "oldObject")]
    old_object: Option<&'a RawValue>,
}

impl<'a> AdmissionRequest<'a> {
    /// An AdmissionRequest from its JSON text (the `request` of a review), as `validate`
    /// reads it: for running a policy's `evaluate` natively, in its unit tests.
    pub fn from_json(text: &'a str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| json_message(&e))
    }

    /// The object as the JSON text it came as (`null` when the request has none, as for
    /// a DELETE). A mutating policy edits this text where it changes (`sidecar_model::json::document`).
    pub fn object(&self) -> &'a RawValue {
        self.object.unwrap_or(RawValue::NULL)
    }

    pub fn object_json(&self) -> &'a str {
        self.object().get()
    }

    /// The object before the change, for an UPDATE (`null` otherwise).
    pub fn old_object_json(&self) -> &'a str {
        self.old_object.unwrap_or(RawValue::NULL).get()
    }

    /// A `pods/resize` request: a running pod's container resources changed in place.
    pub fn is_resize(&self) -> bool {
        self.operation == "UPDATE" && self.sub_resource == "resize"
    }

    /// What this request does to the pod it carries (a Pod's, or a workload's template).
    pub fn pod_change(&self, model: &PodModel) -> PodChange {
        if self.operation != "UPDATE" {
            return PodChange::New;
        }
        if self.leaves_pod_as_it_was(model) {
            PodChange::Untouched
        } else if model.workload.kind.pod_is_immutable() {
            PodChange::Immutable
        } else {
            PodChange::Changed
        }
    }

    /// The pod's spec, labels and annotations (what every rule reads) are those of
    /// `oldObject`. Without an `oldObject` the change cannot be told apart: not as it was.
    fn leaves_pod_as_it_was(&self, model: &PodModel) -> bool {
        let (Ok(new), Ok(old)) = (
            serde_json::from_str::<serde_json::Value>(self.object_json()),
            serde_json::from_str::<serde_json::Value>(self.old_object_json()),
        ) else {
            return false;
        };
        if old.is_null() {
            return false;
        }
        let kind = model.workload.kind;
        let spec = kind.pod_spec_pointer();
        let metadata = kind.pod_metadata_pointer();
        let labels = format!("{metadata}/labels");
        let annotations = format!("{metadata}/annotations");
        if new.pointer(spec) == old.pointer(spec)
            && new.pointer(&labels) == old.pointer(&labels)
            && new.pointer(&annotations) == old.pointer(&annotations)
        {
            return true;
        }
        // A running Pod whose sidecars a rollout moves to a new tag of the same image, with
        // the sets' revisions: the kubelet restarts those containers, and nothing a rule
        // reads changes (a container's type follows its image's repository, never its tag).
        kind == sidecar_model::WorkloadKind::Pod
            && new.pointer(&labels) == old.pointer(&labels)
            && same_but_injected_revisions(new.pointer(&annotations), old.pointer(&annotations))
            && same_but_image_tags(new.pointer(spec), old.pointer(spec))
    }
}

/// Two pod specs equal but for the tags or digests of their containers' images.
fn same_but_image_tags(new: Option<&serde_json::Value>, old: Option<&serde_json::Value>) -> bool {
    use sidecar_model::kube::glob::image_repository;
    let (Some(mut new), Some(mut old)) = (new.cloned(), old.cloned()) else {
        return false;
    };
    for list in ["initContainers", "containers"] {
        let (Some(a), Some(b)) = (
            new.get_mut(list).and_then(|l| l.as_array_mut()),
            old.get_mut(list).and_then(|l| l.as_array_mut()),
        ) else {
            continue;
        };
        if a.len() != b.len() {
            return false;
        }
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            let (Some(i), Some(j)) = (
                x.get("image").and_then(|v| v.as_str()),
                y.get("image").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            if image_repository(i) != image_repository(j) {
                return false;
            }
            x["image"] = serde_json::Value::Null;
            y["image"] = serde_json::Value::Null;
        }
    }
    new == old
}

/// Two annotation maps equal but for `injected.sidecars.dev/<set>` revisions.
fn same_but_injected_revisions(
    new: Option<&serde_json::Value>,
    old: Option<&serde_json::Value>,
) -> bool {
    let without = |a: Option<&serde_json::Value>| -> Vec<(String, serde_json::Value)> {
        a.and_then(|a| a.as_object())
            .into_iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with(sidecar_model::kube::keys::INJECTED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    without(new) == without(old)
}

/// What an admission request does to a pod (or a pod template), which decides what the
/// policies may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodChange {
    /// A new pod or template (a CREATE, or the audit scanner's review of what exists):
    /// judged, and fixed where a policy may.
    New,
    /// An UPDATE that changes a template the API server lets change (a Deployment's new
    /// image): judged and fixed like a new one.
    Changed,
    /// An UPDATE that changes a pod the API server keeps as created (a running Pod, a
    /// Job's template): judged, never rewritten, since the API server would refuse the
    /// rewrite and with it the user's own change.
    Immutable,
    /// An UPDATE that leaves the pod as it was (a label or finalizer on the object itself,
    /// a scale, a CronJob's schedule): nothing new to judge, and nothing to rewrite. A
    /// policy that refused it would block every metadata change of an object admitted
    /// before it, finalizer removals included.
    Untouched,
}

impl PodChange {
    /// The policies may edit the pod.
    pub fn may_rewrite(self) -> bool {
        matches!(self, PodChange::New | PodChange::Changed)
    }
}

/// A policy's `evaluate` run natively on settings and an AdmissionRequest given as JSON
/// text, each read as `validate_settings` and `validate` read them, and answered as
/// `validate` answers (an error is a rejection): a policy's logic tested without building
/// its `.wasm`. `Err` only for settings or a request that do not read.
pub fn evaluate_natively<S: DeserializeOwned + Validatable>(
    evaluate: impl Fn(&S, &AdmissionRequest) -> Result<Answer, String>,
    settings: &str,
    request: &str,
) -> Result<Answer, String> {
    let settings: S = read_settings(settings)?;
    let request = AdmissionRequest::from_json(request)?;
    Ok(evaluate(&settings, &request).unwrap_or_else(Answer::reject))
}

/// `validate`: parses the payload once, hands the request with the settings to
/// `evaluate`, and turns an error into a rejection (a policy never traps on what it is
/// given).
pub fn validate_with<S: DeserializeOwned + Default>(
    payload: &[u8],
    evaluate: impl Fn(&S, &AdmissionRequest) -> Result<Answer, String>,
) -> CallResult {
    let payload = std::str::from_utf8(payload).map_err(serde_json::Error::custom);
    let answer = match payload.and_then(serde_json::from_str::<Payload<S>>) {
        Ok(payload) => evaluate(&payload.settings, &payload.request).unwrap_or_else(Answer::reject),
        Err(e) => Answer::reject(format!(
            "cannot read the admission request: {}",
            json_message(&e)
        )),
    };
    answer.into_response()
}

/// What a rule's violations do, in every policy that has rules (declared with the rules).
pub use sidecar_model::rule::Level;

/// What a policy decided about one request.
#[derive(Debug, Default)]
pub struct Answer {
    pub rejections: Vec<String>,
    pub warnings: Vec<String>,
    pub audit: HashMap<String, String>,
    /// The whole object as the policy changed it, as JSON text.
    pub mutated: Option<Box<RawValue>>,
}

/// The SDK's `ValidationResponse`, field for field, with the mutated object written as the
/// text the policy produced (the SDK's would take a `Value` of it).
#[derive(Serialize)]
struct ValidationResponse<'r> {
    accepted: bool,
    message: Option<String>,
    code: Option<u16>,
    mutated_object: Option<&'r RawValue>,
    audit_annotations: Option<&'r HashMap<String, String>>,
    warnings: Option<&'r Vec<String>>,
}

impl Answer {
    pub fn accept() -> Self {
        Answer::default()
    }

    pub fn reject(message: impl Into<String>) -> Self {
        Answer {
            rejections: vec![message.into()],
            ..Default::default()
        }
    }

    /// Answers with `object` as the mutated object (written as JSON now).
    pub fn set_mutated(&mut self, object: &impl Serialize) -> Result<(), String> {
        let text = serde_json::value::to_raw_value(object)
            .map_err(|e| format!("cannot write the mutated object: {e}"))?;
        // An object serde_json cannot read (policy-server and sidecarctl read answers with
        // it) would come back as an answer the engine cannot read, a 500 for the request:
        // said instead. Only a mutation echoes the object.
        if let Some(why) = unreadable(text.get()) {
            return Err(format!("{why}, which admission engines cannot read back"));
        }
        self.mutated = Some(text);
        Ok(())
    }

    /// The mutated object as a tree, for tests and reports.
    pub fn mutated_object(&self) -> Option<serde_json::Value> {
        self.mutated
            .as_ref()
            .and_then(|m| serde_json::from_str(m.get()).ok())
    }

    /// Files `message` as `level` says: a rejection, a warning, or nothing.
    pub fn file(&mut self, level: Level, message: String) {
        match level {
            Level::Deny => self.rejections.push(message),
            Level::Warn => self.warnings.push(message),
            Level::Off => {}
        }
    }

    /// Rejected when there is any rejection (then no mutation is returned); the
    /// rejections joined into one message.
    pub fn into_response(mut self) -> CallResult {
        let accepted = self.rejections.is_empty();
        // Messages quote what the object holds (container names, annotations), and an
        // object that has not met the API server's validation yet may hold a megabyte
        // where a name should be: each text is bounded, so an answer stays about the
        // size of its object. Kubernetes shortens long warnings itself.
        for w in &mut self.warnings {
            bound(w, MAX_WARNING);
        }
        for v in self.audit.values_mut() {
            bound(v, MAX_MESSAGE);
        }
        let message = (!accepted).then(|| {
            let mut m = self.rejections.join("; ");
            bound(&mut m, MAX_MESSAGE);
            m
        });
        let mutated_object = self.mutated.as_deref().filter(|_| accepted);
        // Sized for the mutated object up front: growing by doubling would copy it again.
        let mut out = Vec::with_capacity(mutated_object.map_or(0, |m| m.get().len()) + 1024);
        serde_json::to_writer(
            &mut out,
            &ValidationResponse {
                accepted,
                message,
                code: None,
                mutated_object,
                audit_annotations: (!self.audit.is_empty()).then_some(&self.audit),
                warnings: (!self.warnings.is_empty()).then_some(&self.warnings),
            },
        )?;
        Ok(out)
    }
}

/// The longest warning, and the longest message or audit annotation, an answer carries.
const MAX_WARNING: usize = 16 << 10;
const MAX_MESSAGE: usize = 64 << 10;

/// Cuts `text` to at most `max` bytes (on a character boundary) and says how much more
/// there was.
fn bound(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let more = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("\u{2026} ({more} bytes more)"));
}

/// The deepest nesting serde_json reads (its recursion limit of 128, entered before a
/// level is counted), which engines read policy answers with.
const READABLE_NESTING: usize = 127;

/// Why engines could not read `json` back with serde_json, if they could not: nesting
/// too deep, or a `\u` escape of half a surrogate pair. Parts of the object the policies
/// do not read stay the text they came as, checked for syntax but not for these (the API
/// server never sends them; a hand-made request may).
fn unreadable(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let (mut depth, mut in_string, mut i) = (0usize, false, 0usize);
    let hex = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if in_string {
            match b {
                b'"' => in_string = false,
                b'\\' if bytes.get(i) == Some(&b'u') => {
                    let unit = hex(i + 1).unwrap_or(0);
                    i += 5;
                    let low = |at: usize| {
                        bytes.get(at..at + 2) == Some(b"\\u")
                            && hex(at + 2).is_some_and(|u| (0xDC00..0xE000).contains(&u))
                    };
                    match unit {
                        0xD800..0xDC00 if low(i) => i += 6,
                        0xD800..0xE000 => {
                            return Some(format!(
                                "the object holds half a surrogate pair (\\u{unit:04x})"
                            ));
                        }
                        _ => {}
                    }
                }
                b'\\' => i += 1,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth >= READABLE_NESTING {
                    return Some(format!(
                        "the object nests deeper than {} levels",
                        READABLE_NESTING - 1
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoSettings {}

    impl Validatable for NoSettings {
        fn validate(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn read(payload: &str) -> Result<(String, String, String), String> {
        let payload: Payload<NoSettings> =
            serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let r = payload.request;
        Ok((
            r.operation.to_string(),
            r.namespace.to_string(),
            r.object_json().to_string(),
        ))
    }

    #[test]
    fn a_rollouts_image_tags_leave_a_running_pod_as_it_was() {
        let pod = |image: &str, revision: &str, label: &str| {
            serde_json::json!({"kind": "Pod", "metadata": {"name": "web", "labels": {"app": label},
                "annotations": {"injected.sidecars.dev/mesh": revision, "team": "shop"}},
                "spec": {"initContainers": [{"name": "istio-proxy", "image": image, "restartPolicy": "Always"}],
                         "containers": [{"name": "app", "image": "shop:1"}]}})
        };
        let change = |new: serde_json::Value, old: serde_json::Value, kind: &str| {
            let text =
                serde_json::json!({"uid": "1", "operation": "UPDATE", "kind": {"kind": kind},
                "object": new, "oldObject": old})
                .to_string();
            let request = AdmissionRequest::from_json(&text).unwrap();
            let model = PodModel::from_json(request.object_json(), &Default::default())
                .unwrap()
                .unwrap();
            request.pod_change(&model)
        };
        let old = pod("docker.io/istio/proxyv2:1.24.1", "aaa", "web");
        let new = pod("docker.io/istio/proxyv2:1.24.2@sha256:00", "bbb", "web");
        assert_eq!(change(new, old.clone(), "Pod"), PodChange::Untouched);
        // Another repository may type the container otherwise; a label is read by rules.
        let other = pod("example.com/proxy:1", "bbb", "web");
        assert_eq!(change(other, old.clone(), "Pod"), PodChange::Immutable);
        let relabelled = pod("docker.io/istio/proxyv2:1.24.2", "bbb", "api");
        assert_eq!(change(relabelled, old, "Pod"), PodChange::Immutable);
    }

    #[test]
    fn the_object_is_kept_as_the_text_it_came_as() {
        let payload = r#"{"settings": {}, "request": {"uid": "1", "kind": {"kind": "Pod"},
            "operation": "CREATE", "namespace": "shop", "userInfo": {"username": "me"},
            "object": {"kind": "Pod", "metadata": {"name": "a\u0062c"}}, "oldObject": null}}"#;
        let (operation, namespace, object) = read(payload).unwrap();
        assert_eq!((operation.as_str(), namespace.as_str()), ("CREATE", "shop"));
        assert_eq!(
            object,
            r#"{"kind": "Pod", "metadata": {"name": "a\u0062c"}}"#
        );
    }

    #[test]
    fn a_request_without_object_or_settings_reads_as_null() {
        let (operation, namespace, object) =
            read(r#"{"request": {"operation": "DELETE"}}"#).unwrap();
        assert_eq!(
            (operation.as_str(), namespace.as_str(), object.as_str()),
            ("DELETE", "", "null")
        );
        assert!(read(r#"{"request": {"object": {"kind": "Pod"}"#).is_err());
        assert!(read(r#"{"settings": {"typo": 1}, "request": {}}"#).is_err());
    }

    #[test]
    fn answers_read_as_the_sdks_validation_response() {
        use kubewarden_policy_sdk::response::ValidationResponse as SdkResponse;
        let mutated = serde_json::value::to_raw_value(&serde_json::json!({"kind": "Pod"})).unwrap();
        let mut answer = Answer {
            mutated: Some(mutated),
            ..Answer::default()
        };
        answer.warnings.push("w".into());
        answer.audit.insert("k".into(), "v".into());
        let sdk: SdkResponse = serde_json::from_slice(&answer.into_response().unwrap()).unwrap();
        assert!(sdk.accepted && sdk.message.is_none());
        assert_eq!(sdk.mutated_object.unwrap()["kind"], "Pod");
        assert_eq!(
            (
                sdk.warnings.unwrap(),
                sdk.audit_annotations.unwrap()["k"].as_str()
            ),
            (vec!["w".to_string()], "v")
        );
        let mut rejected = Answer::reject("no");
        rejected.mutated = serde_json::value::to_raw_value(&1).ok();
        let sdk: SdkResponse = serde_json::from_slice(&rejected.into_response().unwrap()).unwrap();
        assert_eq!((sdk.accepted, sdk.message.as_deref()), (false, Some("no")));
        assert!(sdk.mutated_object.is_none() && sdk.warnings.is_none());
    }

    #[test]
    fn an_unreadable_payload_is_a_rejection_not_a_trap() {
        for payload in [
            &b"{not json"[..],
            b"{\"request\": {\"namespace\": \"\xff\"}}",
        ] {
            let answer = validate_with::<NoSettings>(payload, |_, _| Ok(Answer::accept())).unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(answer["accepted"], false);
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("cannot read the admission request"),
                "{answer}"
            );
        }
        let settings = read_settings::<NoSettings>(b"{\"a\": \"\xff\"}").unwrap_err();
        assert!(
            settings.starts_with("invalid settings: invalid utf-8"),
            "{settings}"
        );
    }

    #[test]
    fn unreadable_json_is_found() {
        let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(super::unreadable(&deep(126)), None);
        assert!(super::unreadable(&deep(127)).is_some());
        // Brackets in strings do not count; escapes are stepped over.
        let text = format!(r#"{{"a": "{}\"\\"}}"#, "[".repeat(200));
        assert_eq!(super::unreadable(&text), None);
        assert_eq!(super::unreadable(r#"{"a": "\ud83d\ude00 \u00e9"}"#), None);
        for lone in [
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
        ] {
            assert!(super::unreadable(lone).is_some(), "{lone}");
            assert!(serde_json::from_str::<String>(lone).is_err(), "{lone}");
        }
    }

    /// A mutated object that engines could not read back is refused: the answer wraps
    /// it in one more level.
    #[test]
    fn objects_too_deep_to_read_back_are_refused() {
        let deep = |levels: usize| -> serde_json::Value {
            (1..levels).fold(serde_json::json!({}), |v, _| serde_json::json!([v]))
        };
        let mut answer = Answer::accept();
        answer.set_mutated(&deep(126)).unwrap();
        let response =
            serde_json::to_vec(&serde_json::json!({"mutated_object": deep(126)})).unwrap();
        serde_json::from_slice::<serde_json::Value>(&response).unwrap();
        let err = Answer::accept().set_mutated(&deep(127)).unwrap_err();
        assert!(err.contains("deeper than 126 levels"), "{err}");
        let response =
            serde_json::to_vec(&serde_json::json!({"mutated_object": deep(127)})).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&response).is_err());
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let mut short = "é".repeat(10);
        super::bound(&mut short, 64);
        assert_eq!(short, "é".repeat(10));
        let mut long = "é".repeat(10);
        super::bound(&mut long, 5);
        assert_eq!(long, "éé\u{2026} (16 bytes more)");
        let mut answer = Answer::reject("x".repeat(1 << 20));
        answer.warnings.push("y".repeat(1 << 20));
        let response = answer.into_response().unwrap();
        assert!(response.len() < 100 << 10, "{}", response.len());
    }
}
