use crate::json::Malformed;
use crate::kube::quantity::QuantityError;

/// Why the model could not read an object. Policies reject with the message; nothing traps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("malformed object: {0}")]
    Malformed(String),
    #[error("{at}: {source}")]
    Quantity {
        at: String,
        #[source]
        source: QuantityError,
    },
}

impl From<Malformed> for ModelError {
    fn from(e: Malformed) -> Self {
        ModelError::Malformed(e.0)
    }
}
