//! SidecarSet-style injection: sets of sidecars declared once and injected into every
//! matching pod at creation, in the place and order the sidecar vocabulary gives them.

mod canary;
mod edit;
mod export;
mod labels;
mod overlap;
mod rollout;
mod set;
mod settings;
mod survey;

pub use canary::bucket;
pub use edit::{inject, inject_surveyed};
pub use export::{
    ExportOptions, ExportedSet, Refusal, SET_REVISION, WebhookOnly, export, webhook_only,
};
pub use labels::selector_matches;
pub use overlap::validate_sets;
pub use rollout::{ImageChange, RolloutStep, plan as plan_rollout};
pub use set::{Canary, SetContainer, SidecarSet, TransferEnv};
pub use settings::Settings;
pub use survey::{SetOutcome, survey};

#[cfg(test)]
mod tests;
