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
//!   then `linkerd-proxy` with `restartPolicy: Always` and a startupProbe on `/ready` at
//!   the proxy's admin port (4191 unless `config.linkerd.io/admin-port` moved it) in place
//!   of the `postStart: linkerd-await` hook. It renders no `preStop` wait-before-exit sleep
//!   in native mode (the kubelet stops a native sidecar after the app anyway, and the sleep
//!   would hold every termination for the whole grace period), and keeps its own identity
//!   pod legacy: that proxy gets its certificate from the identity container beside it, so
//!   as a native sidecar gated on `/ready` it would never start and nor would identity.

use crate::kube::Container;
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

    /// The mesh's own pods whose proxy it keeps legacy even in native mode, by a label of
    /// the pod: what keeps it so, for messages.
    pub fn keeps_legacy(self, labels: &BTreeMap<String, String>) -> Option<&'static str> {
        match self {
            Mesh::Istio => None,
            Mesh::Linkerd => (labels
                .get("linkerd.io/control-plane-component")
                .is_some_and(|v| v == "identity"))
            .then_some("linkerd.io/control-plane-component: identity"),
        }
    }

    /// The port of the proxy's readiness endpoint, as the legacy proxy `proxy` itself says
    /// it (its admin address, then its `linkerd-await --port`), else as the pod's
    /// annotations configure it, else the mesh's default.
    pub fn ready_port(self, proxy: &Container, annotations: &BTreeMap<String, String>) -> u16 {
        match self {
            Mesh::Istio => ISTIO_READY_PORT,
            Mesh::Linkerd => linkerd_admin_address(proxy)
                .or_else(|| linkerd_await_port(proxy))
                .or_else(|| {
                    annotations
                        .get("config.linkerd.io/admin-port")
                        .and_then(|p| p.trim().parse().ok())
                })
                .unwrap_or(LINKERD_ADMIN_PORT),
        }
    }

    /// The startupProbe the mesh gives its native proxy, on its readiness port.
    pub fn startup_probe(self, port: u16) -> Value {
        match self {
            Mesh::Istio => json!({
                "httpGet": {"path": "/healthz/ready", "port": port},
                "periodSeconds": 1, "timeoutSeconds": 3, "failureThreshold": 600
            }),
            Mesh::Linkerd => json!({
                "httpGet": {"path": "/ready", "port": port},
                "initialDelaySeconds": 0, "periodSeconds": 1, "failureThreshold": 120
            }),
        }
    }

    /// A legacy-mode `preStop` the mesh never renders in native mode: Linkerd's
    /// wait-before-exit `sleep`.
    pub fn is_legacy_exit_hook(self, hook: &LifecycleHandler) -> bool {
        let (program, _) = exec_command(hook);
        match self {
            Mesh::Istio => false,
            Mesh::Linkerd => program == "sleep" || hook.sleep.is_some(),
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
        let (program, command) = exec_command(hook);
        match self {
            Mesh::Istio => program == "pilot-agent" && command.get(1).is_some_and(|a| a == "wait"),
            Mesh::Linkerd => program == "linkerd-await",
        }
    }
}

/// An exec hook's program without its directory, and its whole command (empty for other
/// hooks).
fn exec_command(hook: &LifecycleHandler) -> (&str, &[String]) {
    let command = hook
        .exec
        .as_ref()
        .and_then(|e| e.command.as_deref())
        .unwrap_or_default();
    let program = command
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or_default();
    (program, command)
}

const ISTIO_READY_PORT: u16 = 15021;
const LINKERD_ADMIN_PORT: u16 = 4191;

/// `LINKERD2_PROXY_ADMIN_LISTEN_ADDR`: `0.0.0.0:4191`, `[::]:4191`.
fn linkerd_admin_address(proxy: &Container) -> Option<u16> {
    let address = proxy
        .env()
        .iter()
        .find(|e| e.name == "LINKERD2_PROXY_ADMIN_LISTEN_ADDR")?
        .value
        .as_deref()?;
    address.rsplit_once(':')?.1.trim().parse().ok()
}

/// `linkerd-await --port=4191` or `--port 4191` in the legacy `postStart` hook.
fn linkerd_await_port(proxy: &Container) -> Option<u16> {
    let command = proxy
        .lifecycle
        .as_deref()?
        .post_start
        .as_ref()?
        .exec
        .as_ref()?
        .command
        .as_deref()?;
    command
        .iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.strip_prefix("--port") {
            Some(rest) if rest.starts_with('=') => rest[1..].parse().ok(),
            Some("") => command.get(i + 1)?.parse().ok(),
            _ => None,
        })
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
