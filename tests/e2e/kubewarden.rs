//! The policies registered as Kubewarden registers them: from each `ClusterAdmissionPolicy`,
//! a policy-server entry (`clusterwide-<name>`, in policies.yml) and one webhook
//! configuration named after the policy, built as kubewarden-controller builds it
//! (internal/controller/policy_subreconciler_webhook.go): a Mutating one for a mutating
//! policy, a Validating one otherwise; path `/validate/<id>`; the policy's rules,
//! failurePolicy, matchPolicy, objectSelector, matchConditions and timeoutSeconds;
//! sideEffects `None` unless the policy says; a namespace selector that leaves out the
//! controller's own namespace, followed by the policy's own match expressions; no
//! reinvocationPolicy (so `Never`). The one difference: the webhook is reached by URL
//! (`sidecarctl serve` on loopback), not through a Service, since no kube-proxy runs here.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::path::Path;

/// The namespace Kubewarden runs in; its webhooks leave it out, so the tests use it as the
/// namespace that no policy sees.
pub const KUBEWARDEN_NAMESPACE: &str = "kubewarden";

/// A ClusterAdmissionPolicy as the API server would default it (the CRD's defaults:
/// mode protect, timeoutSeconds 10, backgroundAudit true).
#[derive(Clone, Debug)]
pub struct ClusterAdmissionPolicy {
    pub name: String,
    pub spec: Value,
}

impl ClusterAdmissionPolicy {
    pub fn from_manifest(manifest: &Value) -> ClusterAdmissionPolicy {
        assert_eq!(manifest["kind"], "ClusterAdmissionPolicy", "{manifest}");
        let mut spec = manifest["spec"].clone();
        let map = spec.as_object_mut().unwrap();
        map.entry("mode").or_insert(json!("protect"));
        map.entry("timeoutSeconds").or_insert(json!(10));
        map.entry("backgroundAudit").or_insert(json!(true));
        ClusterAdmissionPolicy {
            name: manifest["metadata"]["name"].as_str().unwrap().to_string(),
            spec,
        }
    }

    /// `clusterwide-<name>`: the policy's id in policy-server and its webhook's name.
    pub fn unique_name(&self) -> String {
        format!("clusterwide-{}", self.name)
    }

    pub fn mutating(&self) -> bool {
        self.spec["mutating"].as_bool().unwrap_or(false)
    }

    /// The policy's entry in policy-server's policies.yml, with its module read from
    /// `module` (the published `registry://` reference is not reachable from here).
    pub fn policies_yml_entry(&self, module: &Path) -> Value {
        // A file:// URL: both sidecarctl serve and policy-server read it.
        let mut entry = json!({
            "module": format!("file://{}", module.display()),
            "policyMode": self.spec["mode"],
            "allowedToMutate": self.mutating(),
            "settings": self.spec.get("settings").cloned().unwrap_or(json!({})),
        });
        for key in ["timeoutEvalSeconds", "message"] {
            if let Some(v) = self.spec.get(key) {
                entry[key] = v.clone();
            }
        }
        entry
    }

    /// The webhook configuration kubewarden-controller makes for this policy, served at
    /// `base` (`https://127.0.0.1:port`) with `ca` as its caBundle.
    pub fn webhook_configuration(&self, base: &str, ca: &str) -> Value {
        let id = self.unique_name();
        let mut namespace_selector = json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": [KUBEWARDEN_NAMESPACE]}]});
        // The controller appends the policy's match expressions (not its match labels).
        if let Some(own) = self.spec["namespaceSelector"]["matchExpressions"].as_array() {
            namespace_selector["matchExpressions"]
                .as_array_mut()
                .unwrap()
                .extend(own.iter().cloned());
        }
        let mut webhook = Map::new();
        webhook.insert("name".into(), json!(format!("{id}.kubewarden.admission")));
        webhook.insert(
            "clientConfig".into(),
            json!({"url": format!("{base}/validate/{id}"),
                   "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)}),
        );
        webhook.insert("rules".into(), self.spec["rules"].clone());
        webhook.insert("namespaceSelector".into(), namespace_selector);
        webhook.insert(
            "sideEffects".into(),
            self.spec
                .get("sideEffects")
                .cloned()
                .unwrap_or(json!("None")),
        );
        webhook.insert("admissionReviewVersions".into(), json!(["v1"]));
        for key in [
            "failurePolicy",
            "matchPolicy",
            "objectSelector",
            "timeoutSeconds",
            "matchConditions",
        ] {
            if let Some(v) = self.spec.get(key).filter(|v| !v.is_null()) {
                webhook.insert(key.into(), v.clone());
            }
        }
        let kind = if self.mutating() {
            "MutatingWebhookConfiguration"
        } else {
            "ValidatingWebhookConfiguration"
        };
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {
                "name": id,
                "labels": {"app.kubernetes.io/part-of": "kubewarden",
                           "kubewarden/policy-scope": "cluster"},
                "annotations": {"kubewarden/policy-name": self.name,
                                "kubewarden/policy-namespace": ""},
            },
            "webhooks": [Value::Object(webhook)],
        })
    }
}
