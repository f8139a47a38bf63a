//! Admission: what goes into a policy and what comes back, in the shapes Kubernetes and
//! Kubewarden's policy-server use; split as policy-evaluator splits them: the request, the
//! response, and the policy modes that stand between the two.

mod mode;
mod request;
mod response;

pub use mode::{Constraints, PolicyMode};
pub use request::{
    parse_document, plural, review, to_request, uid_of, validate_payload, wrap_object,
};
pub use response::{
    AdmissionResponse, DELETE_MUTATION_MESSAGE, PolicyAnswer, SettingsAnswer, Status, StatusCause,
    StatusDetails, review_response,
};
