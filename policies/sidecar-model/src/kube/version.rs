//! Which Kubernetes version a pod will run on, and what each version lets a pod say.
//! Every rule and every mutation that depends on a field newer than native sidecars asks
//! [`KubeVersion::supports`], so a policy never writes what the declared version refuses.

use serde::Serialize;
use std::fmt;

/// A Kubernetes minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

/// A pod-spec feature newer than the oldest cluster the policies serve, with the version
/// that turns it on by default (alpha gates are off unless an administrator enables them,
/// so an alpha release does not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Feature {
    /// `initContainers[]` with `restartPolicy: Always` (KEP-753: beta and on by default in
    /// 1.29, GA in 1.33).
    NativeSidecars,
    /// `spec.resources` (KEP-2837: alpha 1.32, beta and on by default in 1.34).
    PodLevelResources,
    /// `restartPolicy` on app and regular init containers and `restartPolicyRules`
    /// (KEP-5307: alpha 1.34, beta and on by default in 1.35).
    ContainerRestartRules,
    /// The `pods/resize` subresource for container resources (KEP-1287: GA in 1.35).
    InPlaceResize,
    /// The restart-rule action `RestartAllContainers` (KEP-5532: alpha 1.35, beta 1.36).
    RestartAllContainers,
    /// Resizing `spec.resources` in place (KEP-5419: alpha 1.35, beta 1.36).
    PodLevelResize,
    /// Resizing a regular init container in place (`InPlacePodVerticalScalingInitContainers`:
    /// beta and on by default in 1.36, GA in 1.37), unless its resize policy restarts it.
    InitContainerResize,
    /// Pod-level requests defaulted after the admission webhooks, from every container
    /// they injected, and pod-level limits from the containers' (`PodLevelResourcesFixDefaulting`:
    /// beta and on by default in 1.37). Before, the API server defaults them when it decodes
    /// the pod, so from the containers as they were before any webhook.
    PodLevelDefaultsAfterAdmission,
    /// The QoS class from pod-level resources only when they name a resource
    /// (`PodLevelResourcesFixKubeletQOSClass`: beta and on by default in 1.37). Before, any
    /// `spec.resources`, even `{}`, decides it (and `{}` makes the pod BestEffort).
    PodLevelQosWhenSet,
}

impl Feature {
    pub const ALL: [Feature; 9] = [
        Feature::NativeSidecars,
        Feature::PodLevelResources,
        Feature::ContainerRestartRules,
        Feature::InPlaceResize,
        Feature::RestartAllContainers,
        Feature::PodLevelResize,
        Feature::InitContainerResize,
        Feature::PodLevelDefaultsAfterAdmission,
        Feature::PodLevelQosWhenSet,
    ];

    /// The first version where the feature is on without a feature gate.
    pub const fn since(self) -> KubeVersion {
        let minor = match self {
            Feature::NativeSidecars => 29,
            Feature::PodLevelResources => 34,
            Feature::ContainerRestartRules | Feature::InPlaceResize => 35,
            Feature::RestartAllContainers
            | Feature::PodLevelResize
            | Feature::InitContainerResize => 36,
            Feature::PodLevelDefaultsAfterAdmission | Feature::PodLevelQosWhenSet => 37,
        };
        KubeVersion { major: 1, minor }
    }

    /// The first version whose API server knows the feature's fields: from then until
    /// [`Feature::since`] the gate is off, and the API server drops the fields from a new
    /// object without a word (seen on the 1.34 API server in `make e2e`).
    pub const fn introduced(self) -> KubeVersion {
        let minor = match self {
            Feature::NativeSidecars => 28,
            Feature::PodLevelResources => 32,
            Feature::ContainerRestartRules => 34,
            Feature::InPlaceResize => 27,
            Feature::RestartAllContainers | Feature::PodLevelResize => 35,
            // Gates with no field of their own: nothing to drop.
            Feature::InitContainerResize => 36,
            Feature::PodLevelDefaultsAfterAdmission | Feature::PodLevelQosWhenSet => 37,
        };
        KubeVersion { major: 1, minor }
    }

    /// What a user writes that needs it, for messages and the README's table.
    pub fn what(self) -> &'static str {
        match self {
            Feature::NativeSidecars => {
                "native sidecars (initContainers with restartPolicy: Always)"
            }
            Feature::PodLevelResources => "pod-level resources (spec.resources)",
            Feature::ContainerRestartRules => {
                "container restart rules (restartPolicy on app containers, restartPolicyRules)"
            }
            Feature::InPlaceResize => "in-place resize of container resources (pods/resize)",
            Feature::RestartAllContainers => "the restart-rule action RestartAllContainers",
            Feature::PodLevelResize => "in-place resize of pod-level resources",
            Feature::InitContainerResize => {
                "in-place resize of regular init containers (not with resizePolicy RestartContainer)"
            }
            Feature::PodLevelDefaultsAfterAdmission => {
                "pod-level requests and limits defaulted after admission webhooks"
            }
            Feature::PodLevelQosWhenSet => {
                "the QoS class from pod-level resources only when they name a resource"
            }
        }
    }

    pub fn kep(self) -> &'static str {
        match self {
            Feature::NativeSidecars => "KEP-753",
            Feature::PodLevelResources => "KEP-2837",
            Feature::ContainerRestartRules => "KEP-5307",
            Feature::InPlaceResize => "KEP-1287",
            Feature::RestartAllContainers => "KEP-5532",
            Feature::PodLevelResize => "KEP-5419",
            Feature::InitContainerResize => "KEP-1287",
            Feature::PodLevelDefaultsAfterAdmission | Feature::PodLevelQosWhenSet => "KEP-2837",
        }
    }
}

impl KubeVersion {
    /// What the policies assume when settings do not say: the oldest minor version the
    /// managed Kubernetes offerings still run in 2026. Newer fields are refused or not
    /// written until settings declare a newer cluster.
    pub const DEFAULT: KubeVersion = KubeVersion {
        major: 1,
        minor: 34,
    };

    /// Whether pods on this version may carry what `feature` adds.
    pub fn supports(self, feature: Feature) -> bool {
        self >= feature.since()
    }

    /// Whether this version's API server drops what `feature` adds from a new object
    /// without a word: it knows the fields, but their gate is off.
    pub fn drops_fields_of(self, feature: Feature) -> bool {
        self >= feature.introduced() && !self.supports(feature)
    }

    /// `1.33`, `v1.33`, `1.33.2`, and what clusters print: `v1.30.4-eks-a737599` (EKS),
    /// `v1.31.2+k3s1` (k3s), `v1.29.1-gke.1589018` (GKE). A pre-release or build suffix
    /// follows the patch number, as in semantic versions; only major and minor gate rules.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid Kubernetes version {text:?} (expected e.g. \"1.35\" or \"v1.35.2-eks-1\")"
            )
        };
        let trimmed = text.trim();
        let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let number = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        let mut parts = trimmed.splitn(3, '.');
        let major = parts.next().and_then(number).ok_or_else(bad)?;
        let minor = parts.next().and_then(number).ok_or_else(bad)?;
        if let Some(rest) = parts.next() {
            // `4-eks-a737599`, `2+k3s1`: the patch, then a suffix that is not empty.
            let end = rest.find(['-', '+']).unwrap_or(rest.len());
            let (patch, suffix) = rest.split_at(end);
            if number(patch).is_none() || suffix.len() == 1 {
                return Err(bad());
            }
        }
        Ok(KubeVersion { major, minor })
    }
}

impl KubeVersion {
    /// The `kubernetesVersion` setting of a policy, its error naming the setting.
    pub fn setting(text: &str) -> Result<Self, String> {
        Self::parse(text).map_err(|e| format!("kubernetesVersion: {e}"))
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        KubeVersion::DEFAULT
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The gates as a Markdown table, for the README (a test keeps the README's copy equal).
pub fn gates_table() -> String {
    let mut out = String::from("| feature | KEP | on by default from |\n| --- | --- | --- |\n");
    for f in Feature::ALL {
        out.push_str(&format!("| {} | {} | {} |\n", f.what(), f.kep(), f.since()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_clusters_print_them() {
        for (printed, minor) in [
            ("1.33", 33),
            ("v1.34.2", 34),
            ("v1.30.4-eks-a737599", 30),
            ("v1.31.2+k3s1", 31),
            ("v1.29.1-gke.1589018", 29),
            (" 1.35 ", 35),
        ] {
            assert_eq!(
                KubeVersion::parse(printed).unwrap(),
                KubeVersion { major: 1, minor },
                "{printed}"
            );
        }
        for bad in [
            "",
            "1",
            "one.two",
            "1.33.x",
            "1.2.3.4",
            "1.30-eks",
            "1.30.4-",
            "1.30.+k3s",
            "vv1.30",
            "1.-3",
        ] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_readme_has_the_gates_table() {
        let readme = include_str!("../../../../README.md");
        assert!(
            readme.contains(&gates_table()),
            "README.md's table of gates differs from:\n{}",
            gates_table()
        );
    }

    #[test]
    fn each_feature_from_its_version() {
        let v = |text| KubeVersion::parse(text).unwrap();
        assert!(!v("1.28").supports(Feature::NativeSidecars));
        assert!(v("1.29").supports(Feature::NativeSidecars));
        assert!(!v("1.33").supports(Feature::PodLevelResources));
        assert!(v("v1.34.1+k3s1").supports(Feature::PodLevelResources));
        assert!(!v("1.34").supports(Feature::ContainerRestartRules));
        assert!(v("1.34").drops_fields_of(Feature::ContainerRestartRules));
        assert!(!v("1.33").drops_fields_of(Feature::ContainerRestartRules));
        assert!(!v("1.35").drops_fields_of(Feature::ContainerRestartRules));
        assert!(v("1.35").supports(Feature::ContainerRestartRules));
        assert!(v("1.35").supports(Feature::InPlaceResize));
        assert!(!v("1.35").supports(Feature::RestartAllContainers));
        assert!(v("1.36").supports(Feature::RestartAllContainers));
        assert!(v("2.0").supports(Feature::PodLevelResize));
        assert!(KubeVersion::DEFAULT.supports(Feature::PodLevelResources));
    }
}
