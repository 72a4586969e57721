//! Conditional answers for a handler that caches values rather than
//! responses: a strong ETag from the value's serialized form, a `304`
//! when the client has it.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::body::ResponseBody;
use super::headers::precondition;
use super::stored::etag_of;

/// `value` as a JSON `200` with a strong `ETag` (a hash of its JSON, the
/// same on every replica), or a `304 Not Modified` without a body when
/// `request`'s `If-None-Match` has that ETag (`412` for a failed
/// `If-Match`). A value that does not serialize is a `500`.
///
/// ```no_run
/// # #[derive(serde::Serialize)] struct Product;
/// # async fn product_of(id: u64) -> Product { Product }
/// use http::HeaderMap;
/// use tiercache_runtime::http::{ResponseBody, respond_json};
///
/// async fn product(headers: HeaderMap, id: u64) -> http::Response<ResponseBody> {
///     let product = product_of(id).await; // a #[cache_aside] function
///     respond_json(&headers, &product)
/// }
/// ```
pub fn respond_json<T: Serialize + ?Sized>(
    request: &HeaderMap,
    value: &T,
) -> Response<ResponseBody> {
    let Ok(json) = serde_json::to_vec(value) else {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    };
    let content_type = HeaderValue::from_static("application/json");
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, content_type);
    let etag = etag_of(&headers, &json);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    // No Last-Modified: a value has no such date, so only the ETag counts.
    let (status, body) = match precondition(request, &etag, None) {
        Some(status) => (status, ResponseBody::empty()),
        None => (StatusCode::OK, ResponseBody::full(Bytes::from(json))),
    };
    if status != StatusCode::OK {
        headers.remove(CONTENT_TYPE);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
