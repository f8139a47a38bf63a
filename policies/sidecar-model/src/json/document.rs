//! A JSON document edited where it changes and kept as its original text everywhere
//! else.
//!
//! A mutating policy returns the whole object. Parsing it into a `serde_json::Value` to
//! move one container and writing the whole tree back cost more than twice what the
//! null policy pays to read the request (in the fresh instance policy-server gives each
//! request). Here only the objects and lists on the path to an edit are opened, one
//! level at a time; every other part is copied out as the text it came as. serde_json
//! has no such partially parsed value (its `RawValue` is the leaf this builds on), so it
//! is written here.

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::{Malformed, message};

/// A JSON value: untouched text, an opened object or list, or a value a policy wrote
/// (as a `Value`, or as text it wrote itself).
#[derive(Debug, Clone)]
pub enum Node<'a> {
    Text(&'a RawValue),
    Object(Object<'a>),
    Array(Vec<Node<'a>>),
    Value(Value),
    Written(Box<RawValue>),
}

/// An opened JSON object: its members in their original order. Keys are borrowed from
/// the text unless they hold escapes (an object opened on the way to an edit allocated
/// a string per key).
#[derive(Debug, Clone, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

impl<'a> Node<'a> {
    /// The document whose text is `text` (which must be JSON).
    pub fn parse(text: &'a str) -> Result<Self, Malformed> {
        serde_json::from_str(text)
            .map(Node::Text)
            .map_err(|e| Malformed(format!("not JSON: {}", message(&e))))
    }

    pub fn is_null(&self) -> bool {
        match self {
            Node::Text(raw) => raw.get().trim() == "null",
            Node::Written(raw) => raw.get().trim() == "null",
            Node::Value(v) => v.is_null(),
            _ => false,
        }
    }

    /// Opens one level: an object's members or a list's items become nodes of their own
    /// (still text). Scalars stay as they are.
    fn open(&mut self) -> Result<(), Malformed> {
        let opened = match self {
            Node::Text(raw) => {
                let text = raw.get();
                match text.trim_start().as_bytes().first() {
                    Some(b'{') => open_path(text, &[], &[]).map_err(|e| Malformed(message(&e)))?,
                    Some(b'[') => Node::Array(
                        serde_json::from_str::<Vec<&RawValue>>(text)
                            .map_err(|e| Malformed(message(&e)))?
                            .into_iter()
                            .map(Node::Text)
                            .collect(),
                    ),
                    _ => return Ok(()),
                }
            }
            Node::Value(Value::Object(map)) => Node::Object(Object(
                std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Node::Value(v)))
                    .collect(),
            )),
            Node::Value(Value::Array(items)) => {
                Node::Array(std::mem::take(items).into_iter().map(Node::Value).collect())
            }
            // Text of our own cannot be borrowed from while it is replaced: it opens as a
            // value (nothing edits what it has just written, so this is rare).
            Node::Written(raw) => {
                let mut value = Node::Value(
                    serde_json::from_str(raw.get()).map_err(|e| Malformed(message(&e)))?,
                );
                value.open()?;
                value
            }
            _ => return Ok(()),
        };
        *self = opened;
        Ok(())
    }

    /// The string this node holds; `None` for anything else.
    pub fn as_string(&self) -> Option<String> {
        match self {
            Node::Text(raw) => serde_json::from_str(raw.get()).ok(),
            Node::Written(raw) => serde_json::from_str(raw.get()).ok(),
            Node::Value(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// This node as an object to edit; `None` when it is not an object.
    pub fn as_object_mut(&mut self) -> Result<Option<&mut Object<'a>>, Malformed> {
        self.open()?;
        Ok(match self {
            Node::Object(o) => Some(o),
            _ => None,
        })
    }

    /// This node as a list to edit; `None` when it is not a list.
    pub fn as_array_mut(&mut self) -> Result<Option<&mut Vec<Node<'a>>>, Malformed> {
        self.open()?;
        Ok(match self {
            Node::Array(items) => Some(items),
            _ => None,
        })
    }

    /// The node at a JSON pointer made of object keys (`/spec/template/spec`), opening
    /// the objects on the way. Text is opened along the whole path in one pass, so the
    /// pod spec is not scanned once per level above it.
    pub fn pointer_mut(&mut self, pointer: &str) -> Result<Option<&mut Node<'a>>, Malformed> {
        self.open_along(pointer, &[])
    }

    /// The object at `pointer`, opened, with its members named in `lists` opened as lists
    /// in the same pass (a pod spec and its container lists: the lists are most of a
    /// pod's text). `None` when there is no object there.
    pub fn object_at(
        &mut self,
        pointer: &str,
        lists: &[&str],
    ) -> Result<Option<&mut Object<'a>>, Malformed> {
        match self.open_along(pointer, lists)? {
            Some(node) => node.as_object_mut(),
            None => Ok(None),
        }
    }

    fn open_along(
        &mut self,
        pointer: &str,
        lists: &[&str],
    ) -> Result<Option<&mut Node<'a>>, Malformed> {
        let keys: Vec<&str> = pointer.split('/').skip(1).collect();
        if let Node::Text(raw) = *self {
            // Something on the path that is not an object: opened level by level below,
            // which finds where the path stops.
            if let Ok(opened) = open_path(raw.get(), &keys, lists) {
                *self = opened;
            }
        }
        let mut node = self;
        for key in keys {
            let Some(object) = node.as_object_mut()? else {
                return Ok(None);
            };
            let Some(child) = object.get_mut(key) else {
                return Ok(None);
            };
            node = child;
        }
        Ok(Some(node))
    }

    /// This part of the document as a `Value`, for small parts edited with the `Value`
    /// API (a pod's volume list); it stays a `Value` in the document.
    pub fn value_mut(&mut self) -> Result<&mut Value, Malformed> {
        if !matches!(self, Node::Value(_)) {
            let value = serde_json::to_value(&*self)
                .map_err(|e| Malformed(format!("not JSON: {}", message(&e))))?;
            *self = Node::Value(value);
        }
        match self {
            Node::Value(v) => Ok(v),
            _ => unreachable!("set to a value above"),
        }
    }
}

impl<'a> From<&'a RawValue> for Node<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Node::Text(raw)
    }
}

impl<'a> Object<'a> {
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The member `key`, added with `make()` when missing or `null`.
    pub fn entry_or(&mut self, key: &str, make: impl FnOnce() -> Node<'a>) -> &mut Node<'a> {
        let at = match self.0.iter().position(|(k, _)| k == key) {
            Some(at) => {
                if self.0[at].1.is_null() {
                    self.0[at].1 = make();
                }
                at
            }
            None => {
                self.0.push((Cow::Owned(key.to_string()), make()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    /// Sets `key` to `value`, in place when it is there, last when it is new.
    pub fn insert(&mut self, key: &str, value: Node<'a>) {
        *self.entry_or(key, || Node::Value(Value::Null)) = value;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        self.0.len() != before
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Text(raw) => raw.serialize(serializer),
            Node::Written(raw) => raw.serialize(serializer),
            Node::Value(v) => v.serialize(serializer),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(Object(members)) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

/// The object `text` opened, with the objects along `keys` opened too, and the lists
/// named `lists` in the last one; everything else left as text. An error when something
/// on the path is not an object or a named list is not a list. (serde_json's own maps
/// would sort the members, or need a feature that changes every map in the policy.)
fn open_path<'a>(
    text: &'a str,
    keys: &[&str],
    lists: &[&str],
) -> Result<Node<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let node = (&mut de).deserialize_map(OpenPath { keys, lists })?;
    de.end()?;
    Ok(node)
}

struct OpenPath<'p> {
    keys: &'p [&'p str],
    lists: &'p [&'p str],
}

impl<'de, 'p> DeserializeSeed<'de> for OpenPath<'p> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        if self.keys.is_empty() && self.lists.is_empty() {
            return <&RawValue>::deserialize(d).map(Node::Text);
        }
        d.deserialize_map(self)
    }
}

impl<'de, 'p> Visitor<'de> for OpenPath<'p> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let node = match self.keys.split_first() {
                Some((first, rest)) if key == *first => map.next_value_seed(OpenPath {
                    keys: rest,
                    lists: self.lists,
                })?,
                None if self.lists.contains(&key.as_ref()) => {
                    match map.next_value::<Option<Vec<&'de RawValue>>>()? {
                        Some(items) => Node::Array(items.into_iter().map(Node::Text).collect()),
                        None => Node::Value(Value::Null),
                    }
                }
                _ => Node::Text(map.next_value()?),
            };
            members.push((key, node));
        }
        Ok(Node::Object(Object(members)))
    }
}

/// Runs `edit` on the document of `object` and puts the result back in `object`: the
/// model's tests write their objects as `Value`s.
/// An object key, borrowed from the text when it can be.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
pub(crate) fn edit_value<R>(object: &mut Value, edit: impl FnOnce(&mut Node) -> R) -> R {
    let text = object.to_string();
    let mut doc = Node::parse(&text).expect("a JSON object");
    let result = edit(&mut doc);
    *object = serde_json::to_value(&doc).expect("a document that writes");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untouched_parts_keep_their_text() {
        let text = r#"{"b": 1.50, "a": {"z": "\u0041", "y": [1, 2]}, "c": [ {"n": 1} ]}"#;
        let mut doc = Node::parse(text).unwrap();
        assert_eq!(serde_json::to_string(&doc).unwrap(), text);
        let c = doc.pointer_mut("/c").unwrap().unwrap();
        c.as_array_mut().unwrap().unwrap()[0]
            .as_object_mut()
            .unwrap()
            .unwrap()
            .insert("m", Node::Value(json!(2)));
        // Only the edited object is rewritten; `1.50` and the escape stay as written.
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"b":1.50,"a":{"z": "\u0041", "y": [1, 2]},"c":[{"n":1,"m":2}]}"#
        );
    }

    #[test]
    fn escaped_keys_are_read_and_written_as_the_keys_they_are() {
        let text = r#"{"a\"b": 1, "\u0063": {"d": 2}}"#;
        let mut doc = Node::parse(text).unwrap();
        let c = doc.pointer_mut("/c").unwrap().unwrap();
        c.as_object_mut()
            .unwrap()
            .unwrap()
            .insert("e", Node::Value(json!(3)));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"a\"b":1,"c":{"d":2,"e":3}}"#
        );
    }

    #[test]
    fn written_text_is_kept_and_opens_when_edited() {
        let mut doc = Node::parse(r#"{"items": []}"#).unwrap();
        let items = doc.pointer_mut("/items").unwrap().unwrap();
        let written = RawValue::from_string(r#"{"b": 1, "a": [2]}"#.into()).unwrap();
        items
            .as_array_mut()
            .unwrap()
            .unwrap()
            .push(Node::Written(written));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"items":[{"b": 1, "a": [2]}]}"#
        );
        let item = &mut doc
            .pointer_mut("/items")
            .unwrap()
            .unwrap()
            .as_array_mut()
            .unwrap()
            .unwrap()[0];
        assert!(!item.is_null());
        item.as_object_mut()
            .unwrap()
            .unwrap()
            .insert("c", Node::Value(json!(3)));
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            json!({"items": [{"b": 1, "a": [2], "c": 3}]})
        );
    }

    #[test]
    fn a_path_is_opened_in_one_pass_and_the_rest_stays_text() {
        let text =
            r#"{"a": {"x": 1}, "spec": {"template": {"spec": {"k": [ 1 ]}, "o": { }}}, "z": [ ]}"#;
        let mut doc = Node::parse(text).unwrap();
        let spec = doc.pointer_mut("/spec/template/spec").unwrap().unwrap();
        assert!(matches!(spec, Node::Text(_)));
        spec.as_object_mut()
            .unwrap()
            .unwrap()
            .insert("new", Node::Value(json!(true)));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"a":{"x": 1},"spec":{"template":{"spec":{"k":[ 1 ],"new":true},"o":{ }}},"z":[ ]}"#
        );
    }

    #[test]
    fn lists_at_the_end_of_a_path_open_in_the_same_pass() {
        let text = r#"{"spec": {"containers": [ {"name": "a"}, {"name": "b"} ], "initContainers": null, "x": 1}}"#;
        let mut doc = Node::parse(text).unwrap();
        let spec = doc
            .object_at("/spec", &["containers", "initContainers"])
            .unwrap()
            .unwrap();
        assert!(matches!(spec.get("containers"), Some(Node::Array(items)) if items.len() == 2));
        assert!(spec.get("initContainers").unwrap().is_null());
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"spec":{"containers":[{"name": "a"},{"name": "b"}],"initContainers":null,"x":1}}"#
        );
        // A named member that is not a list: opened level by level instead.
        let mut odd = Node::parse(r#"{"spec": {"containers": 5}}"#).unwrap();
        let spec = odd.object_at("/spec", &["containers"]).unwrap().unwrap();
        assert!(
            spec.get_mut("containers")
                .unwrap()
                .as_array_mut()
                .unwrap()
                .is_none()
        );
        assert!(
            Node::parse("[1]")
                .unwrap()
                .object_at("", &["containers"])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn members_are_edited_in_place_and_added_last() {
        let mut doc = Node::parse(r#"{"a": 1, "b": null, "c": 3}"#).unwrap();
        let o = doc.as_object_mut().unwrap().unwrap();
        o.insert("a", Node::Value(json!("one")));
        o.entry_or("b", || Node::Value(json!({})));
        o.entry_or("d", || Node::Value(json!([])));
        assert!(o.remove("c") && !o.remove("c"));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"a":"one","b":{},"d":[]}"#
        );
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            json!({"a": "one", "b": {}, "d": []})
        );
    }

    #[test]
    fn pointers_values_and_non_objects() {
        let mut doc = Node::parse(r#"{"spec": {"volumes": [{"name": "v"}], "n": 5}}"#).unwrap();
        assert!(doc.pointer_mut("/spec/missing").unwrap().is_none());
        assert!(doc.pointer_mut("/spec/n/deeper").unwrap().is_none());
        let n = doc.pointer_mut("/spec/n").unwrap().unwrap();
        assert!(n.as_object_mut().unwrap().is_none() && n.as_array_mut().unwrap().is_none());
        let volumes = doc.pointer_mut("/spec/volumes").unwrap().unwrap();
        volumes
            .value_mut()
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "w"}));
        // A value written by a policy can be opened again.
        let list = volumes.as_array_mut().unwrap().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            json!({"spec": {"volumes": [{"name": "v"}, {"name": "w"}], "n": 5}})
        );
        assert!(Node::parse("{nope").is_err());
        // A path through something that is not an object stops there.
        let mut doc = Node::parse(r#"{"spec": [1], "metadata": null}"#).unwrap();
        assert!(doc.pointer_mut("/spec/template").unwrap().is_none());
        assert!(doc.pointer_mut("/metadata/name").unwrap().is_none());
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"spec":[1],"metadata":null}"#
        );
        assert!(Node::parse("null").unwrap().is_null());
    }
}
