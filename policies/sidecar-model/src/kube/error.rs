use crate::json::Malformed;
use crate::kube::quantity::QuantityError;

/// Why the model could not read an object. Policies reject with the message; nothing traps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("malformed object: {0}")]
    Malformed(String),
    /// The quantity's error is said in the message, so it is not also a `source` (a
    /// chain printed whole would say it twice).
    #[error("{at}: {error}")]
    Quantity { at: String, error: QuantityError },
}

impl From<Malformed> for ModelError {
    fn from(e: Malformed) -> Self {
        ModelError::Malformed(e.0)
    }
}
