//! Settings parts parsed on first use.
//!
//! policy-server hands a policy its settings with every request, so the injector parses
//! every container spec of every SidecarSet each time, though only the sets that select
//! the pod need theirs. A `Deferred` keeps its part as the JSON text it came in (skipped over,
//! not built into values) until something asks for it. `validate_settings` asks for every
//! part, so malformed settings are still refused before any request is evaluated.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::cell::OnceCell;
use std::fmt;

pub struct Deferred<T> {
    raw: Option<Box<RawValue>>,
    parsed: OnceCell<Result<T, String>>,
}

impl<T: DeserializeOwned + Default> Deferred<T> {
    pub fn new(value: T) -> Self {
        Deferred {
            raw: None,
            parsed: OnceCell::from(Ok(value)),
        }
    }

    /// The part, parsed now if it was not yet; absent parts are empty.
    pub fn get(&self) -> Result<&T, String> {
        self.parsed
            .get_or_init(|| match &self.raw {
                None => Ok(T::default()),
                Some(raw) => serde_json::from_str(raw.get()).map_err(|e| crate::json::message(&e)),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn get_mut(&mut self) -> Result<&mut T, String> {
        self.get()?;
        match self.parsed.get_mut() {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not parsed".into()),
        }
    }
}

impl<T> Default for Deferred<T> {
    fn default() -> Self {
        Deferred {
            raw: None,
            parsed: OnceCell::new(),
        }
    }
}

impl<T: Clone> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Deferred {
            raw: self.raw.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl<T: DeserializeOwned + Default + PartialEq> PartialEq for Deferred<T> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl<T: DeserializeOwned + Default + fmt::Debug> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Written as the parsed value (what a revision hashes); the text as it came when it does
/// not parse.
impl<T: DeserializeOwned + Default + Serialize> Serialize for Deferred<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.get(), &self.raw) {
            (Ok(value), _) => value.serialize(serializer),
            (Err(_), Some(raw)) => raw.serialize(serializer),
            (Err(_), None) => serializer.serialize_none(),
        }
    }
}

impl<'de, T> Deserialize<'de> for Deferred<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Deferred {
            raw: Some(Box::<RawValue>::deserialize(deserializer)?),
            parsed: OnceCell::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, Serialize, Default, PartialEq)]
    struct Part {
        n: u32,
    }

    #[derive(Debug, Deserialize, Serialize, Default, PartialEq)]
    struct Holder {
        #[serde(default)]
        parts: Deferred<Vec<Part>>,
    }

    #[test]
    fn parses_on_first_use_and_writes_the_parsed_value() {
        let text = r#"{"parts": [{"n": 1}, {"n": 2}]}"#;
        let holder: Holder = serde_json::from_str(text).unwrap();
        assert!(holder.parts.parsed.get().is_none(), "nothing parsed yet");
        assert_eq!(holder.parts.get().unwrap().len(), 2);
        assert_eq!(
            serde_json::to_value(&holder).unwrap(),
            json!({"parts": [{"n": 1}, {"n": 2}]})
        );
        // From a Value too (tests and the host build settings that way).
        let from_value: Holder = serde_json::from_value(json!({"parts": [{"n": 3}]})).unwrap();
        assert_eq!(from_value.parts.get().unwrap()[0].n, 3);
        let empty: Holder = serde_json::from_str("{}").unwrap();
        assert!(empty.parts.get().unwrap().is_empty());
    }

    #[test]
    fn a_part_that_does_not_parse_is_an_error_when_asked_for() {
        let mut holder: Holder = serde_json::from_str(r#"{"parts": [{"n": "x"}]}"#).unwrap();
        let error = holder.parts.get().unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
        assert!(holder.parts.get_mut().is_err());
        // Written back as it came.
        assert_eq!(
            serde_json::to_value(&holder).unwrap(),
            json!({"parts": [{"n": "x"}]})
        );
    }
}
