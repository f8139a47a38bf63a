//! The AdmissionRequest the API server would send for an object, built in one place for
//! `sidecarctl` (`run`, `review`, `test`) and for the playground page (through its
//! wasm-bindgen module), so the page evaluates the very request the command line does.
//! Builds for wasm32 and native alike; it knows admission, nothing of sidecars.

use serde_json::{Value, json};
use sha2::Digest;

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    /// An update that leaves the object as it was: `oldObject` is the object itself.
    Update,
}

impl Operation {
    /// `CREATE` or `UPDATE`; anything else is not an operation this builder makes.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            _ => None,
        }
    }
}

/// The request for `object`: kind and resource from its `apiVersion` and `kind`, its name
/// and namespace (`default` when it has none), and a uid derived from the object, so the
/// same input gives the same answer.
pub fn request_for(object: Value, operation: Operation) -> Value {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let namespace = object
        .pointer("/metadata/namespace")
        .cloned()
        .unwrap_or_else(|| Value::String("default".into()));
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(&kind)});
    // Writing a Value cannot fail: its keys are strings.
    let h = hex::encode(sha2::Sha256::digest(object.to_string()));
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let (operation, old_object, options) = match operation {
        Operation::Create => ("CREATE", Value::Null, "CreateOptions"),
        Operation::Update => ("UPDATE", object.clone(), "UpdateOptions"),
    };
    json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "sidecarctl", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old_object,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
    })
}

/// The resource name the API server serves a kind under (`Pod` → `pods`, `NetworkPolicy`
/// → `networkpolicies`, `Ingress` → `ingresses`).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with('x') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        for (kind, resource) in [
            ("Pod", "pods"),
            ("Deployment", "deployments"),
            ("ReplicaSet", "replicasets"),
            ("Policy", "policies"),
            ("Gateway", "gateways"),
            ("Ingress", "ingresses"),
        ] {
            assert_eq!(plural(kind), resource);
        }
    }

    #[test]
    fn an_update_carries_the_object_as_it_was() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}});
        let create = request_for(pod.clone(), Operation::Create);
        let update = request_for(pod.clone(), Operation::Update);
        assert_eq!(create["oldObject"], Value::Null);
        assert_eq!(update["oldObject"], pod);
        assert_eq!(update["options"]["kind"], "UpdateOptions");
        assert_eq!(create["uid"], update["uid"]);
        assert_eq!(
            create["resource"],
            json!({"group": "", "version": "v1", "resource": "pods"})
        );
        assert_eq!(create["namespace"], "shop");
    }
}
