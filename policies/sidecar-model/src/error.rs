use crate::quantity::QuantityError;

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

/// What serde_json says went wrong, without its `at line 1 column 335`: a position in
/// JSON text the engine wrote (policy-server and sidecarctl write it differently), not
/// in anything the user wrote. The field path says where instead.
pub fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) if e.line() > 0 => message.to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_messages_leave_out_the_position() {
        let e = serde_json::from_str::<Vec<u8>>("[1, \"x\"]").unwrap_err();
        assert_eq!(
            super::json_message(&e),
            "invalid type: string \"x\", expected u8"
        );
        let e = serde_json::from_value::<Vec<u8>>(serde_json::json!("x")).unwrap_err();
        assert_eq!(
            super::json_message(&e),
            "invalid type: string \"x\", expected a sequence"
        );
    }
}
