//! The null policy: parses the request with the SDK and accepts it. Every benchmark
//! compares a policy to this floor; tests use it to check the host's plain answers.

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    match ValidationRequest::<Settings>::new(payload) {
        Ok(_) => accept_request(),
        Err(e) => reject_request(
            Some(format!("cannot parse the request: {e}")),
            Some(400),
            None,
            None,
        ),
    }
}
