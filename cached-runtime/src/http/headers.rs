//! Reading and writing the headers HTTP caching is about: `Cache-Control`
//! directives, entity-tag lists, HTTP dates, the preconditions of RFC 9110
//! §13.2.2.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    CACHE_CONTROL, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, PRAGMA,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The elements of a comma-separated header list, in every line of
/// `name`, trimmed, with commas inside quoted strings kept.
pub(crate) fn list<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Vec<&'h str> {
    let mut items = Vec::new();
    for value in headers.get_all(name) {
        // A value that is not visible ASCII matches nothing.
        let Ok(value) = value.to_str() else { continue };
        // Slices of ASCII: always UTF-8.
        items.extend(elements(value.as_bytes()).filter_map(|item| std::str::from_utf8(item).ok()));
    }
    items
}

/// The elements of one header line: split at commas outside quoted
/// strings, trimmed, empty ones skipped (RFC 9110 §5.6.1).
fn elements(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (mut quoted, mut escaped) = (false, false);
    line.split(move |byte| {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' => return !quoted,
            _ => {}
        }
        false
    })
    .map(<[u8]>::trim_ascii)
    .filter(|item| !item.is_empty())
}

/// `Cache-Control` directives: `(name in lower case, argument)`.
pub(crate) fn directives(headers: &HeaderMap) -> Vec<(String, Option<&str>)> {
    list(headers, &CACHE_CONTROL)
        .into_iter()
        .map(|item| match item.split_once('=') {
            Some((name, value)) => (
                name.trim().to_ascii_lowercase(),
                Some(value.trim().trim_matches('"')),
            ),
            None => (item.to_ascii_lowercase(), None),
        })
        .collect()
}

/// A delta-seconds argument (`max-age=60`); a malformed one is 0 (RFC
/// 9111 §1.2.2: a cache treats an invalid age as stale).
pub(crate) fn seconds(argument: Option<&str>) -> Duration {
    let secs = argument.and_then(|value| value.parse::<u64>().ok());
    Duration::from_secs(secs.unwrap_or(0))
}

/// What a request asks of the cache.
#[derive(Debug, Default)]
pub(crate) struct Asks {
    /// `no-store`: neither read nor write.
    pub(crate) no_store: bool,
    /// `no-cache` (or `Pragma: no-cache` without `Cache-Control`): ask
    /// the origin, then store its answer.
    pub(crate) no_cache: bool,
    /// `max-age`: the oldest response the client takes.
    pub(crate) max_age: Option<Duration>,
}

impl Asks {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut asks = Self::default();
        let directives = directives(headers);
        for (name, argument) in &directives {
            match name.as_str() {
                "no-store" => asks.no_store = true,
                "no-cache" => asks.no_cache = true,
                "max-age" => asks.max_age = Some(seconds(*argument)),
                _ => {}
            }
        }
        if directives.is_empty()
            && list(headers, &PRAGMA)
                .iter()
                .any(|item| item.eq_ignore_ascii_case("no-cache"))
        {
            asks.no_cache = true;
        }
        asks
    }
}

/// An `HTTP-date`, to the second.
pub(crate) fn date(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(value).ok()?;
    Some(unix_secs(time))
}

pub(crate) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `secs` since the epoch as an `HTTP-date` header value.
pub(crate) fn http_date(secs: u64) -> HeaderValue {
    // Every answer has a `Date`: formatted once a second per thread.
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, value)) if *at == secs => value.clone(),
        _ => {
            let value = format_date(secs);
            *last = Some((secs, value.clone()));
            value
        }
    })
}

fn format_date(secs: u64) -> HeaderValue {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    // An HTTP-date is visible ASCII: this never fails.
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// An entity tag: `(weak, opaque-tag with its quotes)`; `None` if `tag`
/// is not one.
fn entity_tag(tag: &str) -> Option<(bool, &str)> {
    let (weak, opaque) = match tag.strip_prefix("W/") {
        Some(opaque) => (true, opaque),
        None => (false, tag),
    };
    let valid = opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"');
    valid.then_some((weak, opaque))
}

/// Whether `etag` (the representation's) is in the `If-Match` /
/// `If-None-Match` list `items`: `*` matches any; `strong` comparison
/// needs both tags strong (RFC 9110 §8.8.3.2).
fn listed(items: &[&str], etag: &str, strong: bool) -> bool {
    let Some((ours_weak, ours)) = entity_tag(etag) else {
        return items.contains(&"*");
    };
    items.iter().any(|item| {
        *item == "*"
            || entity_tag(item)
                .is_some_and(|(weak, theirs)| theirs == ours && !(strong && (weak || ours_weak)))
    })
}

/// The status the preconditions of RFC 9110 §13.2.2 give a `GET` or
/// `HEAD` of the representation with `etag` and `last_modified` (Unix
/// seconds): `412`, `304`, or `None` to answer normally.
pub(crate) fn precondition(
    request: &HeaderMap,
    etag: &str,
    last_modified: Option<u64>,
) -> Option<StatusCode> {
    // 1-2: If-Match, else If-Unmodified-Since.
    if request.contains_key(IF_MATCH) {
        if !listed(&list(request, &IF_MATCH), etag, true) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let (Some(since), Some(modified)) =
        (date(request, &IF_UNMODIFIED_SINCE), last_modified)
        && modified > since
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    // 3-4: If-None-Match (weak comparison), else If-Modified-Since.
    if request.contains_key(IF_NONE_MATCH) {
        return listed(&list(request, &IF_NONE_MATCH), etag, false)
            .then_some(StatusCode::NOT_MODIFIED);
    }
    match (date(request, &IF_MODIFIED_SINCE), last_modified) {
        (Some(since), Some(modified)) if modified <= since => Some(StatusCode::NOT_MODIFIED),
        _ => None,
    }
}

/// A `Vary`-listed request header as the key holds it: every line, each
/// element trimmed, joined by `,`; in lower case only for the headers
/// whose values are (`Accept-*`, `Host`): an `Authorization` or an API key
/// keeps its case. Lossless: a byte that is not visible ASCII, and `%`,
/// are written `%XX`, so two different values never share a key. `None`
/// when the request has none.
pub(crate) fn normalized(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let fold = CASELESS.contains(&name.as_str());
    let mut text = String::new();
    for line in lines {
        for item in elements(line.as_bytes()) {
            if !text.is_empty() {
                text.push(',');
            }
            for &byte in item {
                let byte = if fold {
                    byte.to_ascii_lowercase()
                } else {
                    byte
                };
                if byte.is_ascii_graphic() && byte != b'%' || byte == b' ' {
                    text.push(char::from(byte));
                } else {
                    text.push_str(&format!("%{byte:02X}"));
                }
            }
        }
    }
    Some(text)
}

/// Request headers whose values compare without case.
const CASELESS: [&str; 7] = [
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "host",
    "x-forwarded-host",
    "x-forwarded-proto",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const TAG: &str = "\"abc\"";

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let check = |value| precondition(&headers(&[("if-none-match", value)]), TAG, Some(100));
        assert_eq!(check("\"abc\""), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(check("W/\"abc\""), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(check("\"x\", W/\"abc\""), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(check("*"), Some(StatusCode::NOT_MODIFIED));
        assert_eq!(check("\"abcd\""), None);
        assert_eq!(check("abc"), None);
        assert_eq!(check("\"a,b\", \"c\""), None);
    }

    #[test]
    fn if_none_match_goes_before_if_modified_since() {
        let request = headers(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
        ]);
        assert_eq!(precondition(&request, TAG, Some(100)), None);
        let request = headers(&[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")]);
        assert_eq!(
            precondition(&request, TAG, Some(100)),
            Some(StatusCode::NOT_MODIFIED)
        );
        let request = headers(&[("if-modified-since", "Thu, 01 Jan 1970 00:00:10 GMT")]);
        assert_eq!(precondition(&request, TAG, Some(100)), None);
        let request = headers(&[("if-modified-since", "not a date")]);
        assert_eq!(precondition(&request, TAG, Some(100)), None);
    }

    #[test]
    fn if_match_compares_strongly_and_goes_first() {
        let check =
            |pairs: &[(&'static str, &'static str)]| precondition(&headers(pairs), TAG, Some(100));
        assert_eq!(check(&[("if-match", "\"abc\"")]), None);
        assert_eq!(
            check(&[("if-match", "W/\"abc\"")]),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        assert_eq!(
            check(&[("if-match", "\"x\""), ("if-none-match", "\"abc\"")]),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        assert_eq!(
            check(&[("if-unmodified-since", "Thu, 01 Jan 1970 00:00:10 GMT")]),
            Some(StatusCode::PRECONDITION_FAILED)
        );
    }

    #[test]
    fn request_directives() {
        let asks = Asks::of(&headers(&[("cache-control", "No-Cache, max-age=\"5\"")]));
        assert!(asks.no_cache && !asks.no_store);
        assert_eq!(asks.max_age, Some(Duration::from_secs(5)));
        assert!(Asks::of(&headers(&[("pragma", "no-cache")])).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=9")]);
        assert!(!Asks::of(&both).no_cache);
        assert_eq!(seconds(Some("-1")), Duration::ZERO);
    }

    #[test]
    fn vary_values_are_normalized() {
        let name = HeaderName::from_static("accept-language");
        let a = headers(&[("accept-language", " EN-us ,  fr;q=0.5")]);
        let b = headers(&[
            ("accept-language", "en-US"),
            ("accept-language", "fr;q=0.5"),
        ]);
        assert_eq!(normalized(&a, &name), normalized(&b, &name));
        assert_eq!(normalized(&a, &name).as_deref(), Some("en-us,fr;q=0.5"));
        assert_eq!(normalized(&HeaderMap::new(), &name), None);
    }

    #[test]
    fn vary_values_that_differ_never_normalize_alike() {
        let auth = HeaderName::from_static("authorization");
        let one = headers(&[("authorization", "Bearer AbCd")]);
        let other = headers(&[("authorization", "Bearer aBcD")]);
        assert_ne!(normalized(&one, &auth), normalized(&other, &auth));
        let name = HeaderName::from_static("x-tenant");
        let raw = |bytes: &[u8]| {
            let mut map = HeaderMap::new();
            map.insert(name.clone(), HeaderValue::from_bytes(bytes).unwrap());
            normalized(&map, &name)
        };
        assert_ne!(raw(b"t\xfe"), raw(b"t\xff"));
        assert_ne!(raw(b"t%FE"), raw(b"t\xfe"));
        assert_eq!(raw(b"t\xfe").as_deref(), Some("t%FE"));
        // A comma inside a quoted string does not split its element.
        assert_ne!(raw(b"\"q , r\""), raw(b"\"q,r\""));
    }
}
