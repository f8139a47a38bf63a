//! Canary images: which pods get a set's canary image, decided once per pod and stable
//! over a ReplicaSet's pods.

use crate::kube::PodModel;
use sha2::{Digest, Sha256};

/// A share in [0, 100) for `key`: stable, and spread evenly over keys.
pub fn bucket(key: &str) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 100
}

/// The identity a canary share is decided by: the namespace and the pod's name or, for a
/// pod a workload creates (it has only `generateName` at admission, the same for every pod
/// of a ReplicaSet), the uid of the request that creates it, so the share holds over the
/// pods of one ReplicaSet. A reinvocation never decides again: the pod then has the set's
/// containers, and a set that is present is left alone.
pub(super) fn canary_key(
    model: &PodModel,
    namespace: &str,
    request_uid: &str,
    set: &str,
    container: &str,
) -> String {
    match model.workload.name.as_deref() {
        Some(name) if !model.workload.name_is_generated => {
            format!("{namespace}/{name}/{set}/{container}")
        }
        _ => format!("{namespace}/request {request_uid}/{set}/{container}"),
    }
}
