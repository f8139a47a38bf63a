//! Canonical JSON: compact, object keys sorted at every depth, scalars as serde_json
//! writes them. What a SidecarSet's revision hashes.
//!
//! Written by hand as a `serde::Serializer`: going through `serde_json::to_value` first
//! built and dropped a tree of the whole set on every injecting request (six times the
//! cost of writing it). The two RFC 8785 crates measured slower still, and they format
//! numbers as doubles: recorded revisions hash serde_json's number text.
//!
//! Everything is written once, in serialization order, into one buffer; an object whose
//! keys did not come sorted has its entries reordered in place when it closes. Most come
//! sorted (k8s-openapi's fields are alphabetical, and so are serde_json's maps).

use serde::ser::{self, Error as _, Impossible, Serialize};
use serde_json::Error;
use std::cmp::Ordering;
use std::ops::Range;

/// `value` as canonical JSON.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut writer = Writer {
        out: Vec::with_capacity(1024),
        entries: Vec::new(),
        moved: Vec::new(),
    };
    value.serialize(Canonical { w: &mut writer })?;
    Ok(writer.out)
}

struct Writer {
    out: Vec<u8>,
    /// The entries of the objects open now, innermost last.
    entries: Vec<Entry>,
    /// Room to reorder an object's entries in.
    moved: Vec<u8>,
}

/// One `"key":value` of an object, as ranges of `out`.
#[derive(Clone)]
struct Entry {
    key: Range<usize>,
    end: usize,
    /// The key needed escapes: its text is not its string's bytes.
    escaped: bool,
}

impl Writer {
    /// The keys of two entries as written (quoted), compared as the strings they stand for.
    fn compare(&self, a: &Entry, b: &Entry) -> Ordering {
        let (ka, kb) = (&self.out[a.key.clone()], &self.out[b.key.clone()]);
        if !a.escaped && !b.escaped {
            // Without escapes the text is the string's own UTF-8, whose byte order is the
            // string order.
            return ka.cmp(kb);
        }
        let text = |k: &[u8]| serde_json::from_slice::<String>(k).unwrap_or_default();
        text(ka).cmp(&text(kb))
    }

    /// Sorts the entries from `base` on: the object's, written from `start`.
    fn sort_object(&mut self, base: usize, start: usize) {
        let entries = &self.entries[base..];
        if entries
            .windows(2)
            .all(|w| self.compare(&w[0], &w[1]) != Ordering::Greater)
        {
            return;
        }
        let mut order: Vec<Entry> = entries.to_vec();
        order.sort_by(|a, b| self.compare(a, b));
        self.moved.clear();
        for (i, e) in order.iter().enumerate() {
            if i > 0 {
                self.moved.push(b',');
            }
            self.moved.extend_from_slice(&self.out[e.key.start..e.end]);
        }
        self.out.truncate(start);
        self.out.extend_from_slice(&self.moved);
    }
}

/// Writes one value.
struct Canonical<'w> {
    w: &'w mut Writer,
}

impl Canonical<'_> {
    /// Scalars exactly as serde_json writes them.
    fn scalar<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        serde_json::to_writer(&mut self.w.out, value)
    }

    /// `{"variant":`, the opening of serde_json's externally tagged enums.
    fn open_tag(&mut self, variant: &str) -> Result<(), Error> {
        self.w.out.push(b'{');
        serde_json::to_writer(&mut self.w.out, variant)?;
        self.w.out.push(b':');
        Ok(())
    }
}

/// An array being written.
struct Seq<'w> {
    w: &'w mut Writer,
    first: bool,
    /// Closes a tagged variant's object after the array.
    tagged: bool,
}

impl<'w> Seq<'w> {
    fn open(w: &'w mut Writer, tagged: bool) -> Self {
        w.out.push(b'[');
        Seq {
            w,
            first: true,
            tagged,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.w.out.push(b',');
        }
        self.first = false;
        value.serialize(Canonical { w: &mut *self.w })
    }

    fn close(self) -> Result<(), Error> {
        self.w.out.push(b']');
        if self.tagged {
            self.w.out.push(b'}');
        }
        Ok(())
    }
}

/// An object being written.
struct Object<'w> {
    w: &'w mut Writer,
    /// Where its entries start, in `w.entries` and in `w.out`.
    base: usize,
    start: usize,
    tagged: bool,
}

impl<'w> Object<'w> {
    fn open(w: &'w mut Writer, tagged: bool) -> Self {
        w.out.push(b'{');
        Object {
            base: w.entries.len(),
            start: w.out.len(),
            w,
            tagged,
        }
    }

    /// Writes `"key":` with `write_key`, then the value.
    fn entry<T: Serialize + ?Sized>(
        &mut self,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<bool, Error>,
        value: &T,
    ) -> Result<(), Error> {
        self.key(write_key)?;
        self.value(value)
    }

    /// `write_key` writes the key and returns whether it needed escapes.
    fn key(
        &mut self,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        if self.w.entries.len() > self.base {
            self.w.out.push(b',');
        }
        let at = self.w.out.len();
        let escaped = write_key(&mut self.w.out)?;
        let key = at..self.w.out.len();
        self.w.out.push(b':');
        self.w.entries.push(Entry {
            key,
            end: 0,
            escaped,
        });
        Ok(())
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let index = self.w.entries.len() - 1;
        value.serialize(Canonical { w: &mut *self.w })?;
        // Nested objects have closed and taken their entries back off the stack.
        self.w.entries[index].end = self.w.out.len();
        Ok(())
    }

    fn close(self) -> Result<(), Error> {
        self.w.sort_object(self.base, self.start);
        self.w.entries.truncate(self.base);
        self.w.out.push(b'}');
        if self.tagged {
            self.w.out.push(b'}');
        }
        Ok(())
    }
}

/// Scalars exactly as serde_json writes them.
macro_rules! scalars {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<(), Error> {
            self.scalar(&v)
        }
    )*};
}

impl<'w> ser::Serializer for Canonical<'w> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'w>;
    type SerializeTuple = Seq<'w>;
    type SerializeTupleStruct = Seq<'w>;
    type SerializeTupleVariant = Seq<'w>;
    type SerializeMap = Object<'w>;
    type SerializeStruct = Object<'w>;
    type SerializeStructVariant = Object<'w>;

    scalars!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char
    );

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(&mut self.w.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.scalar(v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.scalar(&())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.scalar(&())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.scalar(&())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.scalar(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_tag(variant)?;
        value.serialize(Canonical { w: &mut *self.w })?;
        self.w.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'w>, Error> {
        Ok(Seq::open(self.w, false))
    }
    fn serialize_tuple(self, _: usize) -> Result<Seq<'w>, Error> {
        Ok(Seq::open(self.w, false))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Seq<'w>, Error> {
        Ok(Seq::open(self.w, false))
    }
    fn serialize_tuple_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Seq<'w>, Error> {
        self.open_tag(variant)?;
        Ok(Seq::open(self.w, true))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Object<'w>, Error> {
        Ok(Object::open(self.w, false))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Object<'w>, Error> {
        Ok(Object::open(self.w, false))
    }
    fn serialize_struct_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Object<'w>, Error> {
        self.open_tag(variant)?;
        Ok(Object::open(self.w, true))
    }
}

macro_rules! seq_impl {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )*};
}
seq_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key(|out| key.serialize(KeyText { out }))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if self.w.entries.len() == self.base {
            return Err(Error::custom("a map value without a key"));
        }
        self.value(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

macro_rules! struct_impl {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Object<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.entry(|out| Ok(write_str(out, key)), value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )*};
}
struct_impl!(SerializeStruct, SerializeStructVariant);

/// Writes `v` as a JSON string, as serde_json does; returns whether it needed escapes.
/// Most strings need none, and are copied whole rather than through serde_json's
/// character-by-character escaper.
fn write_str(out: &mut Vec<u8>, v: &str) -> bool {
    if !v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
        return false;
    }
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, v);
    true
}

/// Writes a map key as serde_json would: strings, and integers and chars as strings
/// (`to_value` allows the same).
struct KeyText<'o> {
    out: &'o mut Vec<u8>,
}

fn not_a_key() -> Error {
    Error::custom("a map key must be a string")
}

macro_rules! key_as_text {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<bool, Error> {
            Ok(write_str(self.out, &v.to_string()))
        }
    )*};
}

impl ser::Serializer for KeyText<'_> {
    type Ok = bool;
    type Error = Error;
    type SerializeSeq = Impossible<bool, Error>;
    type SerializeTuple = Impossible<bool, Error>;
    type SerializeTupleStruct = Impossible<bool, Error>;
    type SerializeTupleVariant = Impossible<bool, Error>;
    type SerializeMap = Impossible<bool, Error>;
    type SerializeStruct = Impossible<bool, Error>;
    type SerializeStructVariant = Impossible<bool, Error>;

    key_as_text!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_char: char
    );

    fn serialize_str(self, v: &str) -> Result<bool, Error> {
        Ok(write_str(self.out, v))
    }
    fn serialize_bool(self, _: bool) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_f32(self, _: f32) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_f64(self, _: f64) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_none(self) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_unit(self) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<bool, Error> {
        Ok(write_str(self.out, variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, Error> {
        Err(not_a_key())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_key())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_key())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_key())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    /// The definition, written the slow way: a tree of values, keys sorted by recursion.
    fn reference(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, String> =
                    map.iter().map(|(k, v)| (k, reference(v))).collect();
                let body: Vec<String> = sorted
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                    .collect();
                format!("{{{}}}", body.join(","))
            }
            Value::Array(items) => {
                let body: Vec<String> = items.iter().map(reference).collect();
                format!("[{}]", body.join(","))
            }
            scalar => serde_json::to_string(scalar).unwrap(),
        }
    }

    fn text<T: Serialize>(value: &T) -> String {
        String::from_utf8(to_vec(value).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_at_every_depth() {
        let value = json!({"b": [{"z": 1, "a": "\"q\""}, null], "a": {"d": true, "c": 1.5}});
        assert_eq!(
            text(&value),
            r#"{"a":{"c":1.5,"d":true},"b":[{"a":"\"q\"","z":1},null]}"#
        );
    }

    #[test]
    fn typed_values_match_their_json_tree() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        enum Shape {
            Unit,
            Newtype(u8),
            Tuple(i32, String),
            Struct { z: bool, a: Option<u8> },
        }
        #[derive(Serialize)]
        struct Typed {
            zeta: Vec<Shape>,
            alpha: BTreeMap<u32, char>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            #[serde(flatten)]
            rest: BTreeMap<String, Value>,
            mid: (i64, f64, u128),
        }
        let typed = Typed {
            zeta: vec![
                Shape::Unit,
                Shape::Newtype(7),
                Shape::Tuple(-1, "é\u{1F600}\u{1}\t\"\\".into()),
                Shape::Struct { z: true, a: None },
            ],
            alpha: [(10, 'x'), (2, '\n')].into(),
            skipped: None,
            rest: [(
                "beta".to_string(),
                json!({"y": [1, {"b": 2, "a": 1}], "x": null}),
            )]
            .into(),
            mid: (i64::MIN, 0.1, u64::MAX as u128),
        };
        assert_eq!(
            text(&typed),
            reference(&serde_json::to_value(&typed).unwrap())
        );
    }

    #[test]
    fn escaped_keys_sort_as_the_strings_they_stand_for() {
        // '"' (0x22) sorts before '#' (0x23), though its escape starts with '\\' (0x5c).
        let value = json!({"#": 1, "\"": 2, "\u{1}": 3, "a\\": 4, "a": 5});
        assert_eq!(text(&value), reference(&value));
    }

    #[test]
    fn keys_that_are_not_text_are_errors() {
        let map: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(to_vec(&map).is_err());
    }
}
