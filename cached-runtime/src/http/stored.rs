//! A response as the cache keeps it: made once, when it is stored (its
//! ETag, its `Cache-Control`, its `Vary`), served from L1 as an `Arc`
//! without copying the body, and written to Redis in a compact form that
//! reads back only if every part is valid HTTP.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, DATE, ETAG, LAST_MODIFIED,
    VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::headers::{self, http_date, normalized};

/// Headers that describe one connection, not the response (RFC 9110
/// §7.6.1), and those the cache writes itself on every answer.
const NOT_STORED: [HeaderName; 10] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TE,
    http::header::TRAILER,
    DATE,
    AGE,
    CONTENT_LENGTH,
];

/// The headers a `304 Not Modified` carries of the stored response (RFC
/// 9110 §15.4.5), beside `Date`, `Age` and `Cache-Status`.
const ON_304: [HeaderName; 6] = [
    CACHE_CONTROL,
    http::header::CONTENT_LOCATION,
    ETAG,
    http::header::EXPIRES,
    LAST_MODIFIED,
    VARY,
];

/// The most header values a stored response has: a `HeaderMap` holds at
/// most 32,768 and panics past it, and an answer adds a few (`Age`,
/// `Date`, `Cache-Status`, `Content-Length`). A handler's response with
/// more is not stored; an entry in Redis with more is a miss.
pub(crate) const MAX_HEADERS: usize = 1024;

/// A stored response.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    /// As the handler sent them, without [`NOT_STORED`], with the cache's
    /// `ETag`, `Last-Modified`, `Cache-Control` and `Vary`.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The `ETag` value, quotes included: the preconditions compare it.
    pub(crate) etag: String,
    /// `Last-Modified`, Unix seconds.
    pub(crate) last_modified: u64,
    /// When it was stored, Unix ms: its `Age` counts from here.
    pub(crate) stored_at_ms: u64,
    /// How long it is fresh from then.
    pub(crate) fresh_ms: u64,
    /// The headers of the response's own `Vary` that the cache key does not
    /// hold, with the values the request that made it had: a request
    /// with other values is not answered with it (RFC 9111 §4.1).
    pub(crate) varies: Vec<(HeaderName, Option<String>)>,
}

/// What the layer's policy adds to a response it stores.
pub(crate) struct Making<'a> {
    pub(crate) fresh: Duration,
    /// `stale-while-revalidate` and `stale-if-error`, in seconds.
    pub(crate) stale: Option<Duration>,
    pub(crate) fail_safe: Option<Duration>,
    /// The request headers the key holds (the layer's `vary`).
    pub(crate) keyed: &'a [HeaderName],
    /// The request the response answers (for its own `Vary`).
    pub(crate) request: &'a HeaderMap,
    pub(crate) now_ms: u64,
}

impl Stored {
    pub(crate) fn make(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        how: &Making<'_>,
    ) -> Self {
        for name in &NOT_STORED {
            headers.remove(name);
        }
        let etag = match headers.get(ETAG).and_then(|value| value.to_str().ok()) {
            Some(etag) => etag.to_owned(),
            None => {
                let etag = etag_of(&headers, &body);
                if let Ok(value) = HeaderValue::from_str(&etag) {
                    headers.insert(ETAG, value);
                }
                etag
            }
        };
        let last_modified = match headers::date(&headers, &LAST_MODIFIED) {
            Some(secs) => secs,
            None => {
                let secs = how.now_ms / 1000;
                headers.insert(LAST_MODIFIED, http_date(secs));
                secs
            }
        };
        let cache_control = cache_control(&headers, how);
        headers.insert(CACHE_CONTROL, cache_control);
        let (vary, varies) = vary(&headers, how);
        headers.remove(VARY);
        if let Some(vary) = vary {
            headers.insert(VARY, vary);
        }
        Self {
            status,
            headers,
            body,
            etag,
            last_modified,
            stored_at_ms: how.now_ms,
            fresh_ms: u64::try_from(how.fresh.as_millis()).unwrap_or(u64::MAX),
            varies,
        }
    }

    /// How long it has been stored, in whole seconds (`Age`).
    pub(crate) fn age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Whether it is past its fresh period.
    pub(crate) fn is_stale(&self, now_ms: u64) -> bool {
        now_ms >= self.stored_at_ms.saturating_add(self.fresh_ms)
    }

    /// Seconds of freshness left (`Cache-Status: …; ttl=`), negative when
    /// stale.
    pub(crate) fn ttl(&self, now_ms: u64) -> i64 {
        let end = self.stored_at_ms.saturating_add(self.fresh_ms);
        let secs = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        if now_ms <= end {
            secs(end - now_ms)
        } else {
            // Stale by any amount is negative, however little.
            -secs((now_ms - end).saturating_add(999))
        }
    }

    /// Whether it may answer a request with these headers: those of its
    /// own `Vary` that the key does not hold are as they were.
    pub(crate) fn fits(&self, request: &HeaderMap) -> bool {
        self.varies
            .iter()
            .all(|(name, value)| normalized(request, name) == *value)
    }

    /// The headers of a `304` answer.
    pub(crate) fn not_modified_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(ON_304.len() + 4);
        for name in &ON_304 {
            for value in self.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }
}

/// A strong ETag, the same on every replica: a hash of what makes the
/// representation (its type, its encoding, its bytes).
pub(crate) fn etag_of(headers: &HeaderMap, body: &[u8]) -> String {
    let mut hash = sha1_smol::Sha1::new();
    for name in [CONTENT_TYPE, CONTENT_ENCODING] {
        if let Some(value) = headers.get(name) {
            hash.update(value.as_bytes());
        }
        hash.update(&[0]);
    }
    hash.update(body);
    let digest = hash.digest().bytes();
    let mut etag = String::with_capacity(34);
    etag.push('"');
    for byte in &digest[..16] {
        etag.push(char::from(HEX[usize::from(byte >> 4)]));
        etag.push(char::from(HEX[usize::from(byte & 15)]));
    }
    etag.push('"');
    etag
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The `Cache-Control` of a stored response: its lifetime as `max-age`
/// (a client takes the `Age` off: RFC 9111 §4.2.3), the layer's
/// `stale-while-revalidate` and `stale-if-error`, and the handler's other
/// directives (`public`, `must-revalidate`, …).
fn cache_control(headers: &HeaderMap, how: &Making<'_>) -> HeaderValue {
    let mut value = format!("max-age={}", how.fresh.as_secs());
    if let Some(stale) = how.stale {
        value.push_str(&format!(", stale-while-revalidate={}", stale.as_secs()));
    }
    if let Some(fail_safe) = how.fail_safe {
        value.push_str(&format!(", stale-if-error={}", fail_safe.as_secs()));
    }
    for item in headers::list(headers, &CACHE_CONTROL) {
        let name = item.split('=').next().unwrap_or(item).trim();
        let ours = [
            "max-age",
            "s-maxage",
            "stale-while-revalidate",
            "stale-if-error",
        ];
        if !ours.iter().any(|ours| name.eq_ignore_ascii_case(ours)) {
            value.push_str(", ");
            value.push_str(item);
        }
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
}

/// The `Vary` of a stored response (the key's headers and its own), and
/// its own beyond the key's with the request's values.
fn vary(
    headers: &HeaderMap,
    how: &Making<'_>,
) -> (Option<HeaderValue>, Vec<(HeaderName, Option<String>)>) {
    let mut names: Vec<HeaderName> = how.keyed.to_vec();
    let mut varies = Vec::new();
    for item in headers::list(headers, &VARY) {
        let Ok(name) = HeaderName::from_bytes(item.as_bytes()) else {
            continue;
        };
        if !names.contains(&name) {
            varies.push((name.clone(), normalized(how.request, &name)));
            names.push(name);
        }
    }
    if names.is_empty() {
        return (None, varies);
    }
    let joined: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
    (HeaderValue::from_str(&joined.join(", ")).ok(), varies)
}

// What Redis holds: the fields above as short-named plain data. The body
// and the header values are strings when they are UTF-8 (JSON keeps them
// readable) and bytes otherwise.

#[derive(Serialize)]
struct WireRef<'a> {
    s: u16,
    h: Vec<(&'a str, Blob<'a>)>,
    b: Blob<'a>,
    e: &'a str,
    m: u64,
    t: u64,
    f: u64,
    v: Vec<(&'a str, Option<&'a str>)>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    s: u16,
    #[serde(borrow)]
    h: Vec<(Cow<'a, str>, Blob<'a>)>,
    b: Blob<'a>,
    e: String,
    m: u64,
    t: u64,
    f: u64,
    v: Vec<(Cow<'a, str>, Option<String>)>,
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            s: self.status.as_u16(),
            h: self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), Blob(Cow::Borrowed(value.as_bytes()))))
                .collect(),
            b: Blob(Cow::Borrowed(&self.body)),
            e: &self.etag,
            m: self.last_modified,
            t: self.stored_at_ms,
            f: self.fresh_ms,
            v: self
                .varies
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_deref()))
                .collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let invalid = |what: &str| de::Error::custom(format_args!("invalid {what}"));
        // Only what `make` could have stored: a final status, no header of
        // one connection.
        let status = StatusCode::from_u16(wire.s)
            .ok()
            .filter(|status| !status.is_informational())
            .ok_or_else(|| invalid("status"))?;
        // Bounded: a planted entry with a million headers is a miss, not a
        // panic (`HeaderMap` holds at most 32,768).
        if wire.h.len() > MAX_HEADERS {
            return Err(invalid("headers"));
        }
        let mut headers =
            HeaderMap::try_with_capacity(wire.h.len().min(64)).map_err(|_| invalid("headers"))?;
        for (name, value) in wire.h {
            let name = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|name| !NOT_STORED.contains(name))
                .ok_or_else(|| invalid("header"))?;
            let value = HeaderValue::from_bytes(&value.0).map_err(|_| invalid("header"))?;
            headers
                .try_append(name, value)
                .map_err(|_| invalid("headers"))?;
        }
        let mut varies = Vec::with_capacity(wire.v.len());
        for (name, value) in wire.v {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("vary"))?;
            varies.push((name, value));
        }
        Ok(Self {
            status,
            headers,
            body: Bytes::from(wire.b.0.into_owned()),
            etag: wire.e,
            last_modified: wire.m,
            stored_at_ms: wire.t,
            fresh_ms: wire.f,
            varies,
        })
    }
}

/// Bytes, written as a string when they are UTF-8; otherwise as bytes, or
/// in a text format (JSON) as `{"b64": "…"}` (a JSON array of numbers would
/// be four times the size).
struct Blob<'a>(Cow<'a, [u8]>);

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) if serializer.is_human_readable() => {
                serializer.collect_map([("b64", BASE64.encode(&self.0))])
            }
            Err(_) => serializer.serialize_bytes(&self.0),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytesish;
        impl<'de> Visitor<'de> for Bytesish {
            type Value = Blob<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or bytes")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Blob(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Blob(Cow::Owned(v.as_bytes().to_vec())))
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Blob(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Blob(Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(Blob(Cow::Owned(v)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                use base64::Engine;
                let entry = map.next_entry::<Cow<'_, str>, Cow<'_, str>>()?;
                let more = map.next_key::<de::IgnoredAny>()?;
                let (Some((key, text)), None) = (entry, more) else {
                    return Err(de::Error::custom("a blob is one `b64` entry"));
                };
                if key != "b64" {
                    return Err(de::Error::custom("a blob is one `b64` entry"));
                }
                let bytes = BASE64.decode(text.as_bytes()).map_err(de::Error::custom)?;
                Ok(Blob(Cow::Owned(bytes)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Blob(Cow::Owned(bytes)))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(Bytesish)
        } else {
            deserializer.deserialize_bytes(Bytesish)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
        headers.insert("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        let request = HeaderMap::new();
        let how = Making {
            fresh: Duration::from_secs(60),
            stale: None,
            fail_safe: Some(Duration::from_secs(5)),
            keyed: &[],
            request: &request,
            now_ms: 1_700_000_000_000,
        };
        Stored::make(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"\x89PNG\0\xff"),
            &how,
        )
    }

    fn same(a: &Stored, b: &Stored) {
        assert_eq!(a.status, b.status);
        assert_eq!(a.headers, b.headers);
        assert_eq!(a.body, b.body);
        assert_eq!(a.etag, b.etag);
        assert_eq!(
            (a.last_modified, a.stored_at_ms, a.fresh_ms),
            (b.last_modified, b.stored_at_ms, b.fresh_ms)
        );
    }

    #[test]
    fn a_binary_body_and_header_read_back_in_every_codec() {
        let page = page();
        assert_eq!(page.headers[CACHE_CONTROL], "max-age=60, stale-if-error=5");
        let json = serde_json::to_vec(&page).unwrap();
        assert!(
            json.len() < 400,
            "binary in base64, not an array of numbers"
        );
        same(&page, &serde_json::from_slice(&json).unwrap());
        #[cfg(feature = "postcard")]
        same(
            &page,
            &postcard::from_bytes(&postcard::to_allocvec(&page).unwrap()).unwrap(),
        );
        #[cfg(feature = "msgpack")]
        same(
            &page,
            &rmp_serde::from_slice(&rmp_serde::to_vec(&page).unwrap()).unwrap(),
        );
    }

    #[test]
    fn invalid_http_in_redis_does_not_read_back() {
        let json = serde_json::to_string(&page()).unwrap();
        let cases = [
            ("\"s\":200", "\"s\":1000"),
            ("\"s\":200", "\"s\":101"),
            ("\"x-raw\"", "\"x raw\""),
            ("\"x-raw\"", "\"transfer-encoding\""),
        ];
        for (from, to) in cases {
            let tampered = json.replace(from, to);
            assert!(serde_json::from_str::<Stored>(&tampered).is_err(), "{to}");
        }
        let mut many = page();
        for n in 0..=MAX_HEADERS {
            many.headers.append("x-n", HeaderValue::from(n));
        }
        let many = serde_json::to_string(&many).unwrap();
        assert!(
            serde_json::from_str::<Stored>(&many).is_err(),
            "too many headers"
        );
        let newline = json.replace("\"a\"", "\"a\\nb\"");
        assert!(serde_json::from_str::<Stored>(&newline).is_err());
    }

    #[test]
    fn the_etag_is_strong_and_depends_on_type_encoding_and_body() {
        let mut headers = HeaderMap::new();
        let plain = etag_of(&headers, b"x");
        assert_eq!(plain.len(), 34);
        assert_ne!(plain, etag_of(&headers, b"y"));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_ne!(plain, etag_of(&headers, b"x"));
    }
}
