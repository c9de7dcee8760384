//! One step of a simple path over a borrowed [`RawValue`]: a member found by name, an element
//! by index, every member or element. serde visitors skip what they do not need without
//! building it, so a record is never more than a slice of the response.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{raw_kind, Kind, PathError, Segment};

pub(super) fn step<'a>(node: &'a RawValue, segment: &Segment, out: &mut Vec<&'a RawValue>) -> Result<(), PathError> {
    match (segment, raw_kind(node)) {
        (Segment::Name(name), Kind::Object) => {
            let mut de = serde_json::Deserializer::from_str(node.get());
            if let Some(found) = serde::Deserializer::deserialize_map(&mut de, FindKey(name))? {
                out.push(found);
            }
        }
        (Segment::Index(index), Kind::Array) => {
            let items: Vec<&'a RawValue> = serde_json::from_str(node.get())?;
            let at = if *index < 0 { items.len() as i64 + index } else { *index };
            if let Some(item) = usize::try_from(at).ok().and_then(|at| items.get(at)) {
                out.push(item);
            }
        }
        (Segment::Wildcard, Kind::Array) => {
            let items: Vec<&'a RawValue> = serde_json::from_str(node.get())?;
            out.extend(items);
        }
        (Segment::Wildcard, Kind::Object) => {
            let mut de = serde_json::Deserializer::from_str(node.get());
            let members = serde::Deserializer::deserialize_map(&mut de, Members)?;
            out.extend(members.into_iter().map(|(_, v)| v));
        }
        // RFC 9535: a segment that does not apply selects nothing.
        _ => {}
    }
    Ok(())
}

/// Finds one member of an object, skipping the rest without building anything.
struct FindKey<'k>(&'k str);

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyEquals(self.0))? {
            let value: &'de RawValue = map.next_value()?;
            if matches && found.is_none() {
                found = Some(value);
            }
        }
        Ok(found)
    }
}

/// Every member of an object: its (unescaped) key and its raw value.
pub(super) struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            members.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(members)
    }
}

/// An object key, borrowed unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_string()))
    }
}

/// Compares an object key (unescaped by the parser) with a name, without allocating.
struct KeyEquals<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyEquals<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyEquals<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}
