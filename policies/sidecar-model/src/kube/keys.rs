//! Every annotation key the policies read or write. One place, so that no policy spells
//! a key by hand.

/// `lifecycle.sidecars.dev/<container>: Init|Sidecar|PreSidecar|PostSidecar|Standard`
pub const LIFECYCLE_PREFIX: &str = "lifecycle.sidecars.dev/";
/// `after.sidecars.dev/<container>: a,b`: the container starts after `a` and `b` are started.
pub const AFTER_PREFIX: &str = "after.sidecars.dev/";
/// `optional.sidecars.dev/<container>: "true"`: a helper whose failure must not take the pod down.
pub const OPTIONAL_PREFIX: &str = "optional.sidecars.dev/";
/// Audit annotation: the containers in the order they start.
pub const START_ORDER: &str = "sidecars.dev/start-order";
/// Audit annotation: the containers in the order they stop.
pub const STOP_ORDER: &str = "sidecars.dev/stop-order";

/// Whether `key` is an annotation of the sidecar vocabulary, which types containers or
/// orders them (lifecycle, after, optional).
pub fn in_vocabulary(key: &str) -> bool {
    [LIFECYCLE_PREFIX, AFTER_PREFIX, OPTIONAL_PREFIX]
        .iter()
        .any(|p| key.starts_with(p))
}

/// The per-container annotation key for `prefix` and `container`.
pub fn container_key(prefix: &str, container: &str) -> String {
    format!("{prefix}{container}")
}

/// The container a per-container key names, if `key` starts with `prefix`.
pub fn container_of<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(prefix)
}

/// `inject.sidecars.dev: "false"` opts a pod out of every sidecar set;
/// `inject.sidecars.dev/<set>: "false"` out of one.
pub const INJECT: &str = "inject.sidecars.dev";
pub const INJECT_PREFIX: &str = "inject.sidecars.dev/";
/// `injected.sidecars.dev/<set>: <revision>`: the set and revision a pod was injected with.
pub const INJECTED_PREFIX: &str = "injected.sidecars.dev/";
/// Audit annotation: the sets and revisions injected into this pod, `set@revision,…`.
pub const INJECTED: &str = "sidecars.dev/injected";
/// Audit annotation: the pod's effective requests, `cpu=4100m,memory=9Gi`.
pub const EFFECTIVE_REQUESTS: &str = "sidecars.dev/effective-requests";
/// Audit annotation: the pod's effective limits; `unbounded` where a container sets none.
pub const EFFECTIVE_LIMITS: &str = "sidecars.dev/effective-limits";
/// Audit annotation: the pod's QoS class as Kubernetes will compute it.
pub const QOS_CLASS: &str = "sidecars.dev/qos-class";
