#![cfg_attr(not(any(feature = "postcard", feature = "msgpack")), allow(dead_code))]
//! A bound on how deeply a payload from Redis may nest, for the codecs
//! that have none of their own.
//!
//! serde_json refuses more than 128 levels; postcard recurses once per
//! level with no limit, so a few bytes planted in Redis (`[1, 1, 1, …]`
//! for a `struct Node { kids: Vec<Node> }`) overflow the stack and abort
//! the process. [`deserialize`] wraps any deserializer so that every
//! nested sequence, map, enum, option and newtype spends one level of a
//! budget, and past it the value is an error (a miss), like serde_json's.
//! Every call is forwarded as it is otherwise: the wrapped deserializer
//! and visitors see exactly what they would.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Levels of nesting: sequences, maps, enums, options and newtypes each
/// spend one (serde_json counts only its 128 arrays and maps, so a chain
/// of `Option<Box<T>>` is twice as deep here: twice its budget).
pub(crate) const MAX_DEPTH: u32 = 256;

/// `T` from `deserializer`, refusing more than `depth` levels of nesting.
pub(crate) fn deserialize<'de, T, D>(deserializer: D, depth: u32) -> Result<T, D::Error>
where
    T: de::Deserialize<'de>,
    D: Deserializer<'de>,
{
    T::deserialize(Limited {
        inner: deserializer,
        depth,
    })
}

/// One level down from `depth`, or the error past the last.
fn deeper<E: de::Error>(depth: u32) -> Result<u32, E> {
    depth
        .checked_sub(1)
        .ok_or_else(|| E::custom("nested too deeply (more than 256 levels)"))
}

struct Limited<D> {
    inner: D,
    depth: u32,
}

struct Visit<V> {
    inner: V,
    depth: u32,
}

struct Seed<S> {
    inner: S,
    depth: u32,
}

/// A sequence, map, enum or variant being read, one level down.
struct Access<A> {
    inner: A,
    depth: u32,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                let visitor = Visit { inner: visitor, depth: self.depth };
                self.inner.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(), deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
                self.inner.$method(value)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_some(Limited {
            inner: deserializer,
            depth,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_newtype_struct(Limited {
            inner: deserializer,
            depth,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_seq(Access { inner: seq, depth })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_map(Access { inner: map, depth })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_enum(Access { inner: data, depth })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited {
            inner: deserializer,
            depth: self.depth,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let depth = self.depth;
        self.inner.next_element_seed(Seed { inner: seed, depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let depth = self.depth;
        self.inner.next_key_seed(Seed { inner: seed, depth })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let depth = self.depth;
        self.inner.next_value_seed(Seed { inner: seed, depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, depth })?;
        Ok((
            value,
            Access {
                inner: variant,
                depth,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let depth = self.depth;
        self.inner.newtype_variant_seed(Seed { inner: seed, depth })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        self.inner.tuple_variant(
            len,
            Visit {
                inner: visitor,
                depth,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        self.inner.struct_variant(
            fields,
            Visit {
                inner: visitor,
                depth,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Node {
        kids: Vec<Node>,
    }

    fn nested(depth: usize) -> Node {
        (0..depth).fold(Node { kids: vec![] }, |inner, _| Node { kids: vec![inner] })
    }

    #[test]
    fn values_within_the_limit_read_as_without_it() {
        let node = nested(40);
        let json = serde_json::to_string(&node).unwrap();
        let mut de = serde_json::Deserializer::from_str(&json);
        let read: Node = super::deserialize(&mut de, super::MAX_DEPTH).unwrap();
        assert_eq!(read, node);
    }

    #[test]
    fn deeper_values_are_an_error_not_a_stack_overflow() {
        // In JSON form, so serde_json's own limit is off the table: 100
        // levels of nodes are 200 of seqs and structs.
        let json = serde_json::to_string(&nested(100)).unwrap();
        let mut de = serde_json::Deserializer::from_str(&json);
        let read: Result<Node, _> = super::deserialize(&mut de, 50);
        assert!(read.unwrap_err().to_string().contains("nested too deeply"));
    }
}
