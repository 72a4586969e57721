//! Whether serializing a value skips a field (`#[serde(skip_serializing_if
//! = …)]`): postcard is not self-describing,
//! so a skipped field shifts what follows, and the bytes can read back as
//! another value of the same type. Such a value is written in JSON.
//!
//! [`skips_a_field`] walks the value through a serializer that writes
//! nothing and only notes `skip_field`; it fails (and so answers "no") on
//! nothing a real serializer would accept.
#![cfg_attr(not(feature = "postcard"), allow(dead_code))]

use std::fmt::Display;

use serde::Serialize;
use serde::ser::{self, Serializer};

/// Whether serializing `value` skips a struct field anywhere inside it.
pub(crate) fn skips_a_field<T: Serialize + ?Sized>(value: &T) -> bool {
    let mut walk = Walk { skipped: false };
    // An error from the value's own `Serialize` is the real codec's to
    // report.
    let _ = value.serialize(&mut walk);
    walk.skipped
}

struct Walk {
    skipped: bool,
}

#[derive(Debug)]
struct Never;

impl Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: Display>(_: T) -> Self {
        Self
    }
}

macro_rules! leaves {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Never> { Ok(()) })*
    };
}

impl Serializer for &mut Walk {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    leaves! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    }

    fn serialize_none(self) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Never> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }
}

macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Walk {
            type Ok = ();
            type Error = Never;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        }
    )*};
}

elements! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
}

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = Never;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

macro_rules! structs {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Walk {
            type Ok = ();
            type Error = Never;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Never> {
                value.serialize(&mut **self)
            }

            fn skip_field(&mut self, _: &'static str) -> Result<(), Never> {
                self.skipped = true;
                Ok(())
            }

            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        }
    )*};
}

structs!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use serde::Serialize;

    #[derive(Serialize)]
    struct Tricky {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<Vec<u8>>,
        b: Vec<Inner>,
    }

    #[derive(Serialize)]
    struct Inner {
        #[serde(skip_serializing_if = "is_zero")]
        hidden: u8,
        shown: u8,
    }

    fn is_zero(n: &u8) -> bool {
        *n == 0
    }

    #[test]
    fn a_skipped_field_is_found_at_any_depth() {
        let plain = Tricky {
            a: Some(vec![1]),
            b: vec![],
        };
        assert!(!super::skips_a_field(&plain));
        let top = Tricky { a: None, b: vec![] };
        assert!(super::skips_a_field(&top));
        let deep = Tricky {
            a: Some(vec![]),
            b: vec![Inner {
                hidden: 0,
                shown: 2,
            }],
        };
        assert!(super::skips_a_field(&deep), "in a struct in a Vec");
        assert!(!super::skips_a_field(&vec![1u8, 2]));
    }
}
