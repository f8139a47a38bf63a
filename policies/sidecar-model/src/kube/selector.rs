//! Picking containers by name, image or type, for rules that live in policy settings.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::kube::glob::{self, image_repository};
use crate::kube::lifecycle_type::LifecycleType;
use crate::kube::pod::ContainerInfo;

/// Matches containers whose name, image (repository, without tag or digest) and lifecycle
/// type all fit the given fields. Patterns are globs (`*`, `?`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleType>,
}

impl ContainerSelector {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_none() && self.image.is_none() && self.lifecycle.is_none() {
            return Err("a selector needs a name, an image or a type".into());
        }
        glob::validate_patterns(self.name.as_deref(), self.image.as_deref())
    }

    pub fn matches(&self, c: &ContainerInfo) -> bool {
        matches_fields(
            self.name.as_deref(),
            self.image.as_deref(),
            self.lifecycle,
            c,
        )
    }
}

/// [`ContainerSelector::matches`] for fields held elsewhere (a resource default's own
/// `name` and `image`), without building a selector for each container.
pub fn matches_fields(
    name: Option<&str>,
    image: Option<&str>,
    lifecycle: Option<LifecycleType>,
    c: &ContainerInfo,
) -> bool {
    let name_ok = name.is_none_or(|p| glob::matches(p, &c.name));
    let image_ok = image.is_none_or(|p| {
        c.image
            .as_deref()
            .is_some_and(|i| glob::matches(p, image_repository(i)))
    });
    let type_ok = lifecycle.is_none_or(|t| t == c.lifecycle_type);
    name_ok && image_ok && type_ok
}

impl fmt::Display for ContainerSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name {n}"));
        }
        if let Some(i) = &self.image {
            parts.push(format!("image {i}"));
        }
        if let Some(t) = &self.lifecycle {
            parts.push(format!("type {t}"));
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::lifecycle_type::{ContainerList, TypeReason};

    fn info(name: &str, image: &str, lifecycle: LifecycleType) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            image: Some(image.into()),
            list: ContainerList::Containers,
            index: 0,
            lifecycle_type: lifecycle,
            reason: TypeReason::Default,
            mesh: None,
        }
    }

    #[test]
    fn all_given_fields_must_match() {
        let proxy = info(
            "istio-proxy",
            "docker.io/istio/proxyv2:1.24",
            LifecycleType::Sidecar,
        );
        let s = |json: &str| serde_json::from_str::<ContainerSelector>(json).unwrap();
        assert!(s(r#"{"image": "*/proxyv2"}"#).matches(&proxy));
        assert!(s(r#"{"name": "istio-*", "type": "Sidecar"}"#).matches(&proxy));
        assert!(!s(r#"{"name": "istio-*", "type": "Init"}"#).matches(&proxy));
        assert!(!s(r#"{"image": "*/envoy"}"#).matches(&proxy));
    }

    #[test]
    fn bad_selectors_are_refused() {
        for (json, part) in [
            (r#"{}"#, "needs a name"),
            (r#"{"name": ""}"#, "empty"),
            (r#"{"name": "a b"}"#, "white space"),
            (r#"{"image": "istio/proxyv2:1.24"}"#, "tag or digest"),
        ] {
            let err = serde_json::from_str::<ContainerSelector>(json)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.contains(part), "{json}: {err}");
        }
        assert!(serde_json::from_str::<ContainerSelector>(r#"{"nmae": "x"}"#).is_err());
        assert!(serde_json::from_str::<ContainerSelector>(r#"{"type": "Sidekick"}"#).is_err());
    }
}
