//! HTTP caching for tower and axum (feature `http`): whole responses
//! cached in L1 and Redis, with strong ETags, `304 Not Modified`,
//! `Last-Modified`, `Cache-Control`, `Vary` and `Cache-Status`.
//!
//! ```no_run
//! # async fn run(cache: tiercache_runtime::Cache) {
//! use std::time::Duration;
//! use tiercache_runtime::http::ResponseCacheLayer;
//!
//! let layer = ResponseCacheLayer::new(cache.clone())
//!     .prefix("http/products")                 // cache.invalidate_prefix("http/products")
//!     .ttl(Duration::from_secs(60))
//!     .vary(["accept-language"])
//!     .tags(|request| {                        // cache.invalidate_tags(["product:7"])
//!         let id = request.uri.path().rsplit('/').next().unwrap_or("");
//!         [format!("product:{id}")]
//!     });
//! // axum::Router::new().route("/products/{id}", get(product)).layer(layer)
//! # }
//! ```
//!
//! What it does, per RFC 9110 and 9111:
//!
//! - **Stores** the answers to `GET` and `HEAD` (a `HEAD` is answered
//!   from the `GET`), status `200` (or [`statuses`](ResponseCacheLayer::statuses)),
//!   bodies up to [`max_body`](ResponseCacheLayer::max_body) (a larger one
//!   streams through, unbuffered). Never a request with `Authorization`
//!   or `Cookie` (unless configured) or `Range`, nor a response with
//!   `Set-Cookie`, `Cache-Control: private` (unless configured),
//!   `no-store`, `no-cache` or `Vary: *`. A handler's `max-age` /
//!   `s-maxage` shortens its freshness; [`CachePolicy`] sets it or opts
//!   out.
//! - **Request directives**: `no-store` bypasses the cache, `no-cache` (and
//!   `Pragma: no-cache`) asks the handler and stores its answer,
//!   `max-age=n` takes nothing older.
//! - **ETags**: strong, a hash of the body with its `Content-Type` and
//!   `Content-Encoding`, made once when the response is stored: the same
//!   on every replica. A handler's own `ETag` and `Last-Modified` are
//!   kept.
//! - **Preconditions** on a stored `2xx`, in the order of RFC 9110 §13.2.2: `If-Match`,
//!   `If-Unmodified-Since` (`412`), then `If-None-Match` (weak comparison,
//!   lists, `*`) before `If-Modified-Since` (`304`). A `304` is made from
//!   what L1 holds, without the body; it carries `ETag`, `Last-Modified`,
//!   `Cache-Control`, `Vary`, `Date`, `Age`.
//! - **`Cache-Control`** on every stored answer: `max-age` of the
//!   response's lifetime with `Age` (a client's remaining freshness is
//!   `max-age − Age`), `stale-while-revalidate` and `stale-if-error` with
//!   [`stale`](ResponseCacheLayer::stale) and
//!   [`fail_safe`](ResponseCacheLayer::fail_safe).
//! - **`Vary`**: the layer's `vary` headers are part of the key; headers
//!   of a response's own `Vary` beyond them must match the request that
//!   stored it, else the handler answers and its answer replaces it.
//! - **`Cache-Status`** (RFC 9211) on every answer: `tiercache; hit;
//!   ttl=42`, `tiercache; fwd=miss; stored`, `tiercache; fwd=stale;
//!   ttl=-3`, `tiercache; fwd=miss; detail=set-cookie`, …
//! - **Stampedes**: the engine of the cache's entries: one handler run for
//!   any number of concurrent requests of a cold key, across instances
//!   (the cross-process lock); a response that may not be stored is not
//!   shared, and each waiting request asks the handler itself.
//! - **Invalidation** by tag and by prefix, with the guarantees of the
//!   cache's entries: the tags come from the request, before the handler
//!   runs, so a load that raced with an invalidation is refused however
//!   late it lands. (A tag a handler would name in its response could not
//!   be: its version would be read after the handler ran.)
//!
//! Not done: `Range` requests go to the handler; unsafe methods do not
//! invalidate the URL (invalidate by tag or key in the handler); the
//! request's `min-fresh`, `max-stale` and `only-if-cached` are ignored.

mod body;
mod headers;
mod layer;
mod stored;
mod value;

use std::time::Duration;

pub use body::{BoxError, ResponseBody};
pub use layer::{DEFAULT_HTTP_TTL, DEFAULT_MAX_BODY, ResponseCache, ResponseCacheLayer};
pub use value::respond_json;

/// What a handler says of its response's caching, as a response
/// extension: `(Extension(CachePolicy::ttl(d)), Json(page))` in axum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// `None`: not stored.
    ttl: Option<Duration>,
}

impl CachePolicy {
    /// Store the response fresh for at most `ttl` (never longer than the
    /// layer's).
    pub fn ttl(ttl: Duration) -> Self {
        Self { ttl: Some(ttl) }
    }

    /// Do not store the response.
    pub fn skip() -> Self {
        Self { ttl: None }
    }
}
