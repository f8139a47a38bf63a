//! JSON text: a document edited where it changes and kept as written elsewhere, parts
//! parsed on first use, and canonical JSON for hashing. Nothing here knows Kubernetes.

pub mod canonical;
mod deferred;
mod document;

pub use deferred::Deferred;
#[cfg(test)]
pub(crate) use document::edit_value;
pub use document::{Node, Object};

/// JSON that does not read as the object it should be; the text says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed object: {0}")]
pub struct Malformed(pub String);

/// `key` as one segment of a JSON pointer (RFC 6901): `~` and `/` escaped.
pub fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// What serde_json says went wrong, without its `at line 1 column 335`: a position in
/// JSON text the engine wrote (policy-server and sidecarctl write it differently), not
/// in anything the user wrote. The field path says where instead.
pub fn message(e: &serde_json::Error) -> String {
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
            super::message(&e),
            "invalid type: string \"x\", expected u8"
        );
        let e = serde_json::from_value::<Vec<u8>>(serde_json::json!("x")).unwrap_err();
        assert_eq!(
            super::message(&e),
            "invalid type: string \"x\", expected a sequence"
        );
    }
}
