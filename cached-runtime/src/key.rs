//! Cache keys: how arguments become the text of a key.
//!
//! A key is `{namespace}:{prefix}:{rendered}`. The rendered part comes from
//! the function's arguments through [`KeyPart`], written into a [`KeyWriter`]
//! that escapes every value, so that:
//!
//! - **no value can forge another key**: a value never contains `:`, `{`,
//!   `}`, `*`, whitespace or any other character with a meaning in a key; it
//!   is written with `A-Z a-z 0-9 - _ .` and `%XX` escapes only;
//! - **keys are injective**: composite values (`Option`, tuples, sequences)
//!   are framed with characters that escaped text never contains (`~ ! ( ) [
//!   ] ,`), and a key template must separate its placeholders with one of the
//!   separators `: / | @ = ;`, which no value contains either, so
//!   `("1:2", "3")` and `("1", "2:3")` render differently;
//! - **keys are stable** across builds, processes and machines: no
//!   `std::hash`, no `Debug` output, only the documented encodings below.
//!
//! | type | encoding |
//! |---|---|
//! | integers | decimal (`-12`) |
//! | `bool` | `true` / `false` |
//! | `str`, `String`, `char`, `Cow<str>` | escaped text (`a b` → `a%20b`) |
//! | `Option<T>` | `~` for `None`, the value for `Some` |
//! | tuples | `(a,b)` |
//! | `Vec`, slices, arrays, sets, `VecDeque` | `[a,b,c]`; an element that renders to nothing (an empty string) is `)`: `[""]` is `[)]`, `[]` is `[]` |
//! | `BTreeMap` | `[(k,v),(k,v)]` |
//! | `&T`, `Box<T>`, `Rc<T>`, `Arc<T>` | as `T` |
//!
//! Rendered keys longer than [`MAX_KEY_LEN`] bytes keep a readable head and
//! end in `#` and the SHA-1 of the whole rendered key.
//!
//! A key is rendered on the stack (up to 256 bytes, then on
//! the heap): an L1 hit looks it up there, and only a miss makes a `String`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::{self, Write as _};
use std::rc::Rc;
use std::sync::Arc;

use arrayvec::ArrayString;

/// Rendered keys (prefix and arguments) longer than this are shortened to a
/// readable head plus a hash of the whole.
pub const MAX_KEY_LEN: usize = 250;

/// How many bytes of a shortened key stay readable.
const HASHED_HEAD_LEN: usize = 64;

/// Keys up to this many bytes are rendered without a heap allocation: every
/// key that is not shortened fits.
const INLINE_KEY_LEN: usize = 256;

/// A value that can be part of a cache key.
///
/// Implemented for integers, `bool`, `char`, strings, `Option`, tuples (up to
/// 8), sequences, `BTreeSet`/`BTreeMap`, IP addresses and smart pointers; for
/// `uuid::Uuid` with the `uuid` feature. Floats and `HashMap` are left out on
/// purpose: `0.1 + 0.2`, `NaN` and a hash map's iteration order would make
/// keys that do not compare like the values do.
///
/// Implement it for your own types by delegating to parts that have it; the
/// writer escapes everything, so an implementation cannot break another key:
///
/// ```
/// use tiercache_runtime::{KeyPart, KeyWriter};
///
/// struct OrderRef { shop: u32, number: String }
///
/// impl KeyPart for OrderRef {
///     fn write_key(&self, out: &mut KeyWriter) {
///         (self.shop, &self.number).write_key(out);
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key",
    label = "this argument is part of the key, but `{Self}` does not implement `KeyPart`",
    note = "leave it out of the key with `skip(<argument>)`, or list the key's arguments with `key = \"...\"`, or implement `tiercache::KeyPart` for `{Self}`"
)]
pub trait KeyPart {
    /// Writes this value's encoding. Must be deterministic: equal values
    /// write equal text on every build and machine.
    fn write_key(&self, out: &mut KeyWriter);

    /// Whether this type's encoding can be `~` (only `Option` can); lets a
    /// nested `Option<Option<T>>` stay injective.
    #[doc(hidden)]
    const MAY_BE_NONE: bool = false;
}

/// A value named in a tag template: any [`KeyPart`]. Its own trait only so
/// that a type without `KeyPart` gets a message about tags.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a tag",
    label = "this value is named in a tag, but `{Self}` does not implement `KeyPart`",
    note = "name another argument or field in the tag (`\"org:{{org_id}}\"`), or implement `tiercache::KeyPart` for `{Self}`"
)]
pub trait TagPart {
    /// Writes the value as a key part.
    fn write_tag(&self, out: &mut KeyWriter);
}

impl<T: KeyPart + ?Sized> TagPart for T {
    fn write_tag(&self, out: &mut KeyWriter) {
        self.write_key(out);
    }
}

/// Where a key is rendered. Every value written through it is escaped; see
/// the [module docs](self) for the encoding.
#[derive(Debug, Clone)]
pub struct KeyWriter {
    buf: Buf,
    /// Whether an argument of a default key was written: the next one is
    /// `:`-separated from it. Counted as written, not by index, so that an
    /// argument compiled out by `#[cfg]` leaves no empty part.
    args: bool,
}

/// The text of a key: on the stack until it outgrows it. The size is the
/// point: boxing the inline variant would allocate on every call.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Buf {
    Inline(ArrayString<INLINE_KEY_LEN>),
    Spilled(String),
}

impl KeyWriter {
    /// Starts the key of one call site: `prefix:`.
    #[doc(hidden)]
    #[inline]
    pub fn new(prefix: &str) -> Self {
        let mut writer = Self::bare();
        writer.push_str(prefix);
        writer.push_str(":");
        writer
    }

    /// Starts a tag or a full `prefix:key` template: no prefix of its own.
    #[doc(hidden)]
    #[inline]
    pub fn bare() -> Self {
        Self {
            buf: Buf::Inline(ArrayString::new()),
            args: false,
        }
    }

    #[inline]
    fn push_str(&mut self, s: &str) {
        match &mut self.buf {
            Buf::Inline(inline) => {
                if inline.try_push_str(s).is_err() {
                    self.spill(s);
                }
            }
            Buf::Spilled(heap) => heap.push_str(s),
        }
    }

    #[cold]
    fn spill(&mut self, s: &str) {
        let mut heap = String::with_capacity(2 * INLINE_KEY_LEN + s.len());
        heap.push_str(self.as_str());
        heap.push_str(s);
        self.buf = Buf::Spilled(heap);
    }

    /// An ASCII byte, as text.
    #[inline]
    fn push_ascii(&mut self, b: u8) {
        let c = char::from(b);
        match &mut self.buf {
            Buf::Inline(inline) => {
                if inline.try_push(c).is_err() {
                    self.spill(c.encode_utf8(&mut [0; 4]));
                }
            }
            Buf::Spilled(heap) => heap.push(c),
        }
    }

    /// The text written so far, unshortened.
    fn as_str(&self) -> &str {
        match &self.buf {
            Buf::Inline(inline) => inline,
            Buf::Spilled(heap) => heap,
        }
    }

    /// Writes text, escaped.
    pub fn write_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        if bytes.iter().all(|&b| is_unreserved(b)) {
            self.push_str(s);
            return;
        }
        for &b in bytes {
            if is_unreserved(b) {
                self.push_ascii(b);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                self.push_ascii(b'%');
                self.push_ascii(HEX[usize::from(b >> 4)]);
                self.push_ascii(HEX[usize::from(b & 0xF)]);
            }
        }
    }

    /// Writes the `Display` output of a value, escaped.
    pub fn write_display(&mut self, value: &dyn fmt::Display) {
        struct Escaping<'a>(&'a mut KeyWriter);
        impl fmt::Write for Escaping<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.write_str(s);
                Ok(())
            }
        }
        // Writing into a buffer cannot fail.
        let _ = write!(Escaping(self), "{value}");
    }

    /// Writes a template's literal text. Only generated code calls this, with
    /// text the macro has checked contains no character a value could hold.
    #[doc(hidden)]
    #[inline]
    pub fn literal(&mut self, text: &'static str) {
        self.push_str(text);
    }

    /// Writes the argument at `index` of a default (all-arguments) key,
    /// `:`-separated from the one before.
    #[doc(hidden)]
    #[inline]
    pub fn arg<T: KeyPart + ?Sized>(&mut self, index: usize, value: &T) {
        if index > 0 {
            self.push_str(":");
        }
        value.write_key(self);
    }

    /// [`arg`](Self::arg) for a function with an argument under `#[cfg]`:
    /// `:`-separated from the argument written before, if any, so that one
    /// compiled out leaves no empty part.
    #[doc(hidden)]
    #[inline]
    pub fn arg_present<T: KeyPart + ?Sized>(&mut self, value: &T) {
        if self.args {
            self.push_str(":");
        }
        self.args = true;
        value.write_key(self);
    }

    fn structure(&mut self, c: u8) {
        self.push_ascii(c);
    }

    fn sequence<'a, T: KeyPart + 'a>(&mut self, items: impl IntoIterator<Item = &'a T>) {
        self.structure(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.structure(b',');
            }
            self.element(item);
        }
        self.structure(b']');
    }

    /// An element of a sequence: one that writes nothing (an empty string)
    /// is written `)`, which no element starts with, so that `[""]` and
    /// `[]` differ.
    fn element<T: KeyPart + ?Sized>(&mut self, item: &T) {
        let before = self.as_str().len();
        item.write_key(self);
        if self.as_str().len() == before {
            self.structure(b')');
        }
    }

    /// The bytes of the rendered key as [`finish`](Self::finish) returns
    /// it, without allocating unless it is overlong: what an L1 lookup needs.
    #[inline]
    pub(crate) fn as_key(&self) -> Cow<'_, [u8]> {
        let text = self.as_str();
        if text.len() <= MAX_KEY_LEN {
            Cow::Borrowed(text.as_bytes())
        } else {
            Cow::Owned(shorten(text.to_owned()).into_bytes())
        }
    }

    /// The rendered key (`prefix:…`), shortened with a hash when overlong.
    #[doc(hidden)]
    pub fn finish(self) -> String {
        let text = match self.buf {
            Buf::Inline(inline) => inline.as_str().to_owned(),
            Buf::Spilled(heap) => heap,
        };
        shorten(text)
    }
}

/// A key of several parts, written as a key template writes it, for
/// [`Cache::entry`](crate::Cache::entry) and [`Cache::entries`](crate::Cache::entries).
///
/// Two parts are `:`-separated unless the text between them holds a
/// separator (`: / | @ = ;`), as a template must: `key = "{tenant}:{id}"`
/// (and the default key of a function of `tenant` and `id`) is
/// `Key::new().part(&tenant).part(&id)`; other template text is
/// [`text`](Key::text). Two keys are equal when they render the same.
///
/// Not a [`KeyPart`]: its separators inside another key's part (a tuple, a
/// default key of several `Key` arguments) could make two keys render
/// alike.
///
/// ```
/// use tiercache_runtime::key::Key;
///
/// // key = "{tenant}:{id}", or the default key of (tenant, id):
/// assert_eq!(Key::new().part("acme").part(&7u64).as_str(), "acme:7");
/// // key = "v2/{id}|{lang}":
/// let key = Key::new().text("v2/").part(&7u64).text("|").part("en");
/// assert_eq!(key.as_str(), "v2/7|en");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Key {
    text: String,
    /// Where the last part ended, if any: a part after it needs a
    /// separator in between.
    last_part: Option<usize>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl Key {
    /// An empty key.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A `{placeholder}`: the value, escaped; `:`-separated from the part
    /// before it unless the text in between holds a separator.
    #[must_use]
    pub fn part<T: KeyPart + ?Sized>(mut self, value: &T) -> Self {
        let mut writer = KeyWriter::bare();
        if let Some(end) = self.last_part
            && !self.text[end..].contains(TEMPLATE_SEPARATORS)
        {
            writer.push_str(":");
        }
        value.write_key(&mut writer);
        self.text.push_str(writer.as_str());
        self.last_part = Some(self.text.len());
        self
    }

    /// A template's text between placeholders: ASCII letters, digits, `-`,
    /// `_`, `.` and the separators `: / | @ = ;` as written (any other
    /// character is escaped, as in a value, so no text can forge a part).
    #[must_use]
    pub fn text(mut self, text: &str) -> Self {
        let mut writer = KeyWriter::bare();
        for c in text.chars() {
            match u8::try_from(c) {
                Ok(b) if is_unreserved(b) || TEMPLATE_SEPARATORS.contains(&c) => {
                    writer.push_ascii(b);
                }
                _ => writer.write_str(c.encode_utf8(&mut [0; 4])),
            }
        }
        self.text.push_str(writer.as_str());
        self
    }

    /// The key as rendered (before the prefix, unshortened).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What names an entry after its prefix: any [`KeyPart`] (a one-part key,
/// as `key = "{id}"` renders it), or a [`Key`] of several parts.
pub trait EntryKey {
    /// Writes the key.
    fn write_entry_key(&self, out: &mut KeyWriter);
}

impl<T: KeyPart + ?Sized> EntryKey for T {
    fn write_entry_key(&self, out: &mut KeyWriter) {
        self.write_key(out);
    }
}

impl EntryKey for Key {
    fn write_entry_key(&self, out: &mut KeyWriter) {
        out.push_str(&self.text);
    }
}

/// Renders one value as a `{placeholder}` of a key or tag template renders
/// it: to name a key or a tag for [`Cache::invalidate_key`] or
/// [`Cache::invalidate_tags`] exactly as the macros do.
///
/// [`Cache::invalidate_key`]: crate::Cache::invalidate_key
/// [`Cache::invalidate_tags`]: crate::Cache::invalidate_tags
///
/// ```
/// use tiercache_runtime::key::render;
///
/// assert_eq!(render(&42u64), "42");
/// assert_eq!(render("a b"), "a%20b");
/// assert_eq!(format!("team:{}", render("R&D")), "team:R%26D");
/// ```
pub fn render<T: KeyPart + ?Sized>(value: &T) -> String {
    let mut writer = KeyWriter::bare();
    value.write_key(&mut writer);
    writer.as_str().to_owned()
}

/// The characters a value is written with unescaped.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The separators a key template may put between placeholders: no escaped
/// value contains them, which is what makes templates injective.
pub const TEMPLATE_SEPARATORS: &[char] = &[':', '/', '|', '@', '=', ';'];

fn shorten(key: String) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    // Rendered parts are ASCII (everything else is escaped), but a prefix
    // refused as invalid or a literal may not be: cut at a char boundary.
    let digest = sha1_smol::Sha1::from(key.as_bytes()).digest().to_string();
    let mut head = HASHED_HEAD_LEN;
    while !key.is_char_boundary(head) {
        head -= 1;
    }
    let mut short = String::with_capacity(head + 1 + digest.len());
    short.push_str(&key[..head]);
    short.push('#');
    short.push_str(&digest);
    short
}

/// Whether `name` can be a namespace or prefix: non-empty, and only `A-Z
/// a-z 0-9 - _ . /`, so that `namespace:prefix:key` splits one way only.
/// A `const fn`, so that a `const` prefix is checked at compile time.
#[doc(hidden)]
#[must_use]
pub const fn is_valid_prefix(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')) {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks a namespace or prefix with [`is_valid_prefix`].
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), crate::Error> {
    if is_valid_prefix(name) {
        Ok(())
    } else {
        Err(crate::Error::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

macro_rules! display_key_part {
    ($($ty:ty),* $(,)?) => {$(
        impl KeyPart for $ty {
            fn write_key(&self, out: &mut KeyWriter) {
                out.write_display(self);
            }
        }
    )*};
}

/// Integers: decimal, through `itoa` (on the hit path, `core::fmt` was a
/// tenth of an L1 hit).
macro_rules! integer_key_part {
    ($($ty:ty),* $(,)?) => {$(
        impl KeyPart for $ty {
            #[inline]
            fn write_key(&self, out: &mut KeyWriter) {
                // Digits and `-` need no escaping.
                out.push_str(itoa::Buffer::new().format(*self));
            }
        }
    )*};
}

integer_key_part!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl KeyPart for bool {
    fn write_key(&self, out: &mut KeyWriter) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

display_key_part!(
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::net::IpAddr,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
);

impl KeyPart for char {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_str(self.encode_utf8(&mut [0; 4]));
    }
}

impl KeyPart for str {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_str(self);
    }
}

impl KeyPart for String {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_str(self);
    }
}

impl KeyPart for Cow<'_, str> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_str(self);
    }
}

impl KeyPart for () {
    fn write_key(&self, out: &mut KeyWriter) {
        out.structure(b'(');
        out.structure(b')');
    }
}

macro_rules! forward_key_part {
    ($($ty:ty),* $(,)?) => {$(
        impl<T: KeyPart + ?Sized> KeyPart for $ty {
            const MAY_BE_NONE: bool = T::MAY_BE_NONE;
            fn write_key(&self, out: &mut KeyWriter) {
                (**self).write_key(out);
            }
        }
    )*};
}

forward_key_part!(&T, &mut T, Box<T>, Rc<T>, Arc<T>);

impl<T: KeyPart> KeyPart for Option<T> {
    const MAY_BE_NONE: bool = true;

    fn write_key(&self, out: &mut KeyWriter) {
        match self {
            None => out.structure(b'~'),
            Some(value) => {
                if T::MAY_BE_NONE {
                    out.structure(b'!');
                }
                value.write_key(out);
            }
        }
    }
}

impl<T: KeyPart> KeyPart for [T] {
    fn write_key(&self, out: &mut KeyWriter) {
        out.sequence(self);
    }
}

impl<T: KeyPart, const N: usize> KeyPart for [T; N] {
    fn write_key(&self, out: &mut KeyWriter) {
        out.sequence(self);
    }
}

impl<T: KeyPart> KeyPart for Vec<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.sequence(self);
    }
}

impl<T: KeyPart> KeyPart for VecDeque<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.sequence(self);
    }
}

impl<T: KeyPart> KeyPart for BTreeSet<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.sequence(self);
    }
}

impl<K: KeyPart, V: KeyPart> KeyPart for BTreeMap<K, V> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.sequence(&self.iter().collect::<Vec<_>>());
    }
}

macro_rules! tuple_key_part {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: KeyPart),+> KeyPart for ($($name,)+) {
            fn write_key(&self, out: &mut KeyWriter) {
                out.structure(b'(');
                $(
                    if $idx > 0 {
                        out.structure(b',');
                    }
                    self.$idx.write_key(out);
                )+
                out.structure(b')');
            }
        }
    };
}

tuple_key_part!(A 0);
tuple_key_part!(A 0, B 1);
tuple_key_part!(A 0, B 1, C 2);
tuple_key_part!(A 0, B 1, C 2, D 3);
tuple_key_part!(A 0, B 1, C 2, D 3, E 4);
tuple_key_part!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_key_part!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_key_part!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

#[cfg(feature = "uuid")]
impl KeyPart for uuid::Uuid {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_display(&self.hyphenated());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render<T: KeyPart + ?Sized>(value: &T) -> String {
        let mut w = KeyWriter::new("p");
        value.write_key(&mut w);
        w.finish()
    }

    fn template2<A: KeyPart, B: KeyPart>(a: A, b: B) -> String {
        let mut w = KeyWriter::new("p");
        a.write_key(&mut w);
        w.literal(":");
        b.write_key(&mut w);
        w.finish()
    }

    #[test]
    fn encodings_are_documented_and_stable() {
        assert_eq!(render(&42u64), "p:42");
        assert_eq!(render(&-7i32), "p:-7");
        assert_eq!(render(&true), "p:true");
        assert_eq!(render("plain-text_1.0"), "p:plain-text_1.0");
        assert_eq!(render("a b:c"), "p:a%20b%3Ac");
        assert_eq!(render("é"), "p:%C3%A9");
        assert_eq!(render(&'*'), "p:%2A");
        assert_eq!(render(&Some(3u8)), "p:3");
        assert_eq!(render(&None::<u8>), "p:~");
        assert_eq!(render(&vec![1, 2]), "p:[1,2]");
        assert_eq!(render(&(1, "x")), "p:(1,x)");
        assert_eq!(render(&()), "p:()");
        let map: BTreeMap<_, _> = [("b", 2), ("a", 1)].into_iter().collect();
        assert_eq!(render(&map), "p:[(a,1),(b,2)]");
    }

    #[test]
    fn separators_inside_values_cannot_forge_keys() {
        assert_ne!(template2("1:2", "3"), template2("1", "2:3"));
        for hostile in [
            "1:admin", "*", "{tag}", "a\nb", "%3A", "~", "[1,2]", "(x)", "a#b",
        ] {
            let rendered = render(hostile);
            let value = &rendered["p:".len()..];
            assert!(
                value.bytes().all(|b| is_unreserved(b) || b == b'%'),
                "{hostile:?} rendered as {value:?}"
            );
        }
        assert_ne!(render("%3A"), render(":"));
    }

    #[test]
    fn composites_are_injective() {
        assert_ne!(render(&vec!["a,b"]), render(&vec!["a", "b"]));
        assert_ne!(render(&Some(None::<u8>)), render(&None::<Option<u8>>));
        assert_ne!(render(&Some(Some(1u8))), render(&Some(None::<u8>)));
        assert_ne!(render(&Some("~")), render(&None::<&str>));
        assert_ne!(
            render(&(vec![1], vec![2, 3])),
            render(&(vec![1, 2], vec![3]))
        );
        assert_ne!(render(&Vec::<u8>::new()), render(&vec![()]));
        // Found by the property test: an empty string renders to nothing.
        assert_ne!(render(&Vec::<String>::new()), render(&vec![String::new()]));
        assert_ne!(render(&vec![vec![""]]), render(&vec![Vec::<&str>::new()]));
        assert_ne!(render(&vec!["", ""]), render(&vec![""]));
    }

    #[test]
    fn overlong_keys_keep_a_head_and_hash_the_rest() {
        let long = "x".repeat(1000);
        let key = render(long.as_str());
        assert!(key.len() < MAX_KEY_LEN);
        assert!(key.starts_with("p:xxxx"));
        assert_eq!(key, render(long.as_str()), "deterministic");
        let other = render(format!("{long}y").as_str());
        assert_ne!(key, other);
        // The hashed form cannot be produced by a value: `#` is always escaped.
        assert!(render("#").contains("%23"));
    }

    #[test]
    fn a_lookup_uses_the_key_a_miss_stores() {
        for len in [
            0,
            10,
            MAX_KEY_LEN - 2,
            MAX_KEY_LEN - 1,
            INLINE_KEY_LEN,
            1000,
        ] {
            let mut w = KeyWriter::new("p");
            "x".repeat(len).as_str().write_key(&mut w);
            (1u8, "a b").write_key(&mut w);
            let lookup = w.as_key().into_owned();
            assert_eq!(lookup, w.finish().into_bytes(), "{len}");
        }
    }

    #[cfg(feature = "uuid")]
    #[test]
    fn uuids_are_hyphenated() {
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(render(&id), "p:01234567-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("namespace", "shop-eu/v2").is_ok());
        for bad in ["", "a:b", "a b", "{x}", "*"] {
            assert!(check_name("namespace", bad).is_err(), "{bad:?}");
        }
    }
}
