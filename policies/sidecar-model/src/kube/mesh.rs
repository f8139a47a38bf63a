//! The service meshes whose proxies the policies convert, and the layout each mesh itself
//! produces when it injects a native sidecar, so a converted pod looks like one the mesh
//! injected natively:
//! - Istio ≥ 1.27 (`ENABLE_NATIVE_SIDECARS=auto`): `istio-init` or `istio-validation`, then
//!   `istio-proxy` with `restartPolicy: Always`, a startupProbe on `/healthz/ready:15021`
//!   and a `preStop` that asks pilot-agent to drain; the legacy `postStart: pilot-agent
//!   wait` (holdApplicationUntilProxyStarts) is not rendered, since the startupProbe holds
//!   the app. Per pod `sidecar.istio.io/nativeSidecar: "false"` keeps the legacy layout.
//! - Linkerd (`config.linkerd.io/proxy-enable-native-sidecar`; the `config.alpha.` and
//!   `config.beta.` forms are deprecated): `linkerd-init` or `linkerd-network-validator`,
//!   then `linkerd-proxy` with `restartPolicy: Always` and a startupProbe on
//!   `/ready:4191` in place of the `postStart: linkerd-await` hook.

use k8s_openapi::api::core::v1::LifecycleHandler;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mesh {
    Istio,
    Linkerd,
}

impl Mesh {
    pub fn name(self) -> &'static str {
        match self {
            Mesh::Istio => "Istio",
            Mesh::Linkerd => "Linkerd",
        }
    }

    /// The init containers the mesh runs before its proxy (traffic redirection, or the
    /// check that the CNI plugin did it).
    pub const fn init_steps(self) -> &'static [&'static str] {
        match self {
            Mesh::Istio => &["istio-init", "istio-validation"],
            Mesh::Linkerd => &["linkerd-init", "linkerd-network-validator"],
        }
    }

    /// Pod annotations that choose native or legacy mode, current key first.
    pub const fn mode_annotations(self) -> &'static [&'static str] {
        match self {
            Mesh::Istio => &["sidecar.istio.io/nativeSidecar"],
            Mesh::Linkerd => &[
                "config.linkerd.io/proxy-enable-native-sidecar",
                "config.beta.linkerd.io/proxy-enable-native-sidecar",
                "config.alpha.linkerd.io/proxy-enable-native-sidecar",
            ],
        }
    }

    /// The annotation by which the pod keeps its proxy in legacy mode, if one does.
    pub fn opt_out(self, annotations: &BTreeMap<String, String>) -> Option<&str> {
        self.mode_annotations().iter().find_map(|key| {
            annotations
                .get_key_value(*key)
                .filter(|(_, v)| v.trim().eq_ignore_ascii_case("false"))
                .map(|(k, _)| k.as_str())
        })
    }

    /// The startupProbe the mesh gives its native proxy.
    pub fn startup_probe(self) -> Value {
        match self {
            Mesh::Istio => json!({
                "httpGet": {"path": "/healthz/ready", "port": 15021},
                "periodSeconds": 1, "timeoutSeconds": 3, "failureThreshold": 600
            }),
            Mesh::Linkerd => json!({
                "httpGet": {"path": "/ready", "port": 4191},
                "initialDelaySeconds": 0, "periodSeconds": 1, "failureThreshold": 120
            }),
        }
    }

    /// The preStop hook the mesh gives its native proxy, if any.
    pub fn pre_stop(self) -> Option<Value> {
        match self {
            Mesh::Istio => Some(json!({"exec": {"command":
                ["pilot-agent", "request", "--debug-port=15020", "POST", "drain"]}})),
            Mesh::Linkerd => None,
        }
    }

    /// A legacy-mode `postStart` that holds the app until the proxy is ready: the native
    /// proxy's startupProbe does that, and the mesh does not render it.
    pub fn is_wait_hook(self, hook: &LifecycleHandler) -> bool {
        let command = hook
            .exec
            .as_ref()
            .and_then(|e| e.command.as_deref())
            .unwrap_or_default();
        let program = command
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .unwrap_or_default();
        match self {
            Mesh::Istio => program == "pilot-agent" && command.get(1).is_some_and(|a| a == "wait"),
            Mesh::Linkerd => program == "linkerd-await",
        }
    }
}

impl fmt::Display for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_outs_current_and_deprecated() {
        let pod = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            Mesh::Istio.opt_out(&pod("sidecar.istio.io/nativeSidecar", "false")),
            Some("sidecar.istio.io/nativeSidecar")
        );
        assert_eq!(
            Mesh::Istio.opt_out(&pod("sidecar.istio.io/nativeSidecar", "true")),
            None
        );
        let alpha = "config.alpha.linkerd.io/proxy-enable-native-sidecar";
        assert_eq!(Mesh::Linkerd.opt_out(&pod(alpha, "False")), Some(alpha));
        assert_eq!(
            Mesh::Linkerd.opt_out(&pod("sidecar.istio.io/nativeSidecar", "false")),
            None
        );
    }

    #[test]
    fn wait_hooks() {
        let hook = |command: &[&str]| -> LifecycleHandler {
            serde_json::from_value(json!({"exec": {"command": command}})).unwrap()
        };
        assert!(Mesh::Istio.is_wait_hook(&hook(&["pilot-agent", "wait"])));
        assert!(!Mesh::Istio.is_wait_hook(&hook(&["pilot-agent", "request"])));
        assert!(
            Mesh::Linkerd.is_wait_hook(&hook(&["/usr/lib/linkerd/linkerd-await", "--timeout=2m"]))
        );
        assert!(!Mesh::Linkerd.is_wait_hook(&hook(&["pilot-agent", "wait"])));
    }
}
