//! The lifecycle policy's room: every container has the lifecycle type its role calls
//! for and only the fields that type allows (restart rules included), and legacy sidecars
//! become native ones.

mod convert;
mod restart_rules;
mod rules;

pub use convert::{
    NormaliseError, drop_readiness_probes, normalise, normalised, readiness_probes_to_drop,
    without_readiness_probes,
};
pub use restart_rules::{RestartCause, RuleError};
pub use rules::{CheckOptions, PreStop, Problem, Rule, Violation, check, pre_stop_seconds};
