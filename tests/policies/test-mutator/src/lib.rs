//! The test mutator: adds one label to any object, so the host's mutation path is tested
//! on real wasm. Annotations on the object ask it to misbehave, for the host's error paths:
//! `test.sidecars.dev/reject: <message>` rejects, `test.sidecars.dev/spin: "true"` loops
//! until the host's deadline stops it, `test.sidecars.dev/trap: "true"` traps.

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    protocol_version_guest, reject_request, request::ValidationRequest,
    response::ValidationResponse, settings::Validatable, validate_settings,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct Settings {
    /// `key=value`
    label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            label: "sidecars.dev/test-mutator=applied".into(),
        }
    }
}

impl Settings {
    fn label(&self) -> Option<(&str, &str)> {
        self.label.split_once('=').filter(|(k, _)| !k.is_empty())
    }
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        match self.label() {
            Some(_) => Ok(()),
            None => Err(format!("label {:?} must be key=value", self.label)),
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn validate(payload: &[u8]) -> CallResult {
    let request = match ValidationRequest::<Settings>::new(payload) {
        Ok(r) => r,
        Err(e) => {
            return reject_request(
                Some(format!("cannot parse the request: {e}")),
                Some(400),
                None,
                None,
            );
        }
    };
    let object = &request.request.object;
    if let Some(message) = annotation(object, "test.sidecars.dev/reject") {
        return reject_request(
            Some(message.to_string()),
            Some(403),
            None,
            Some(vec!["rejected on request".into()]),
        );
    }
    if annotation(object, "test.sidecars.dev/spin") == Some("true") {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if annotation(object, "test.sidecars.dev/trap") == Some("true") {
        std::process::abort();
    }
    let Some((key, value)) = request.settings.label() else {
        return reject_request(Some("invalid label setting".into()), Some(500), None, None);
    };
    if object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        == Some(value)
    {
        return Ok(serde_json::to_vec(&ValidationResponse {
            accepted: true,
            message: None,
            code: None,
            mutated_object: None,
            audit_annotations: None,
            warnings: None,
        })?);
    }
    // A DELETE has no object; mutating one anyway lets tests see the host refuse it.
    let mut mutated = if object.is_null() {
        serde_json::json!({"metadata": {}})
    } else {
        object.clone()
    };
    let Some(metadata) = mutated.get_mut("metadata").and_then(Value::as_object_mut) else {
        return reject_request(
            Some("the object has no metadata".into()),
            Some(400),
            None,
            None,
        );
    };
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(labels) = labels.as_object_mut() else {
        return reject_request(
            Some("metadata.labels is not a map".into()),
            Some(400),
            None,
            None,
        );
    };
    labels.insert(key.into(), Value::String(value.into()));
    Ok(serde_json::to_vec(&ValidationResponse {
        accepted: true,
        message: None,
        code: None,
        mutated_object: Some(mutated),
        audit_annotations: Some(HashMap::from([(
            "sidecars.dev/test-mutator".to_string(),
            key.to_string(),
        )])),
        warnings: Some(vec![format!("test-mutator: added label {key}")]),
    })?)
}
