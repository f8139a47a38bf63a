//! Policy modes and the mutation guard, as policy-server applies them to a policy's
//! response: `monitor` turns a rejection into an acceptance, `allowedToMutate: false`
//! refuses a patch, a custom message replaces the policy's own.

use serde::{Deserialize, Serialize};

use super::response::{AdmissionResponse, Status, StatusCause};

/// How an engine applies a policy's verdict (policies.yml `policyMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Protect,
    Monitor,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Protect => "protect",
            PolicyMode::Monitor => "monitor",
        }
    }
}

/// What a policy's configuration in policies.yml changes about its answers.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub mode: PolicyMode,
    pub allowed_to_mutate: bool,
    /// Replaces the message of a rejection; the policy's own goes to `details.causes`.
    pub message: Option<String>,
}

impl AdmissionResponse {
    /// policy-server's last step for `/validate`: the custom message, then the mutation
    /// guard (protect) or the unconditional accept (monitor).
    pub fn constrained(mut self, policy_id: &str, constraints: &Constraints) -> Self {
        if let (false, Some(custom)) = (self.allowed, &constraints.message) {
            let mut status = self.status.take().unwrap_or_default();
            let mut details = status.details.take().unwrap_or_default();
            details.causes.push(StatusCause {
                message: Some(status.message.take().unwrap_or_default()),
            });
            status.message = Some(custom.clone());
            status.details = Some(details);
            self.status = Some(status);
        }
        match constraints.mode {
            PolicyMode::Protect if self.patch.is_some() && !constraints.allowed_to_mutate => {
                AdmissionResponse {
                    allowed: false,
                    status: Some(Status {
                        message: Some(format!(
                            "Request rejected by policy {policy_id}. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
                        )),
                        ..Default::default()
                    }),
                    patch: None,
                    patch_type: None,
                    ..self
                }
            }
            PolicyMode::Protect => self,
            PolicyMode::Monitor => AdmissionResponse {
                allowed: true,
                patch: None,
                patch_type: None,
                status: None,
                ..self
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constraints_follow_policy_server() {
        let mutated = AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            patch_type: Some("JSONPatch".into()),
            patch: Some("W10=".into()),
            warnings: Some(vec!["w".into()]),
            ..Default::default()
        };
        let rejected = AdmissionResponse::reject("u", "no".into(), 403);
        let protect = Constraints {
            mode: PolicyMode::Protect,
            allowed_to_mutate: true,
            message: None,
        };
        assert_eq!(mutated.clone().constrained("p", &protect), mutated);
        assert_eq!(rejected.clone().constrained("p", &protect), rejected);

        let no_mutation = Constraints {
            allowed_to_mutate: false,
            ..protect.clone()
        };
        let r = mutated.clone().constrained("p", &no_mutation);
        assert!(!r.allowed && r.patch.is_none() && r.patch_type.is_none());
        assert_eq!(r.warnings, mutated.warnings);
        assert_eq!(
            r.status.unwrap().message.unwrap(),
            "Request rejected by policy p. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
        );

        let monitor = Constraints {
            mode: PolicyMode::Monitor,
            ..no_mutation.clone()
        };
        for response in [mutated.clone(), rejected.clone()] {
            let r = response.constrained("p", &monitor);
            assert!(r.allowed && r.patch.is_none() && r.status.is_none());
        }

        let custom = Constraints {
            message: Some("ask the platform team".into()),
            ..protect
        };
        let r = rejected.constrained("p", &custom);
        assert_eq!(
            serde_json::to_value(r.status.unwrap()).unwrap(),
            json!({"message": "ask the platform team", "code": 403, "details": {"causes": [{"message": "no"}]}})
        );
        assert_eq!(mutated.clone().constrained("p", &custom), mutated);
    }
}
