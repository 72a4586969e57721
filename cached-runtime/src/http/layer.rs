//! [`ResponseCacheLayer`]: its settings, and the life of a request through
//! it.
//!
//! 1. **Eligible?** `GET` or `HEAD`, no body, no `Authorization` or
//!    `Cookie` (unless allowed), no `Cache-Control: no-store`; else the
//!    request goes to the handler untouched (`fwd=method`, `fwd=bypass`,
//!    `fwd=request`).
//! 2. **Key**: host, path and query, and the normalised value of each
//!    `vary` header; **tags** from the request.
//! 3. **Entry**: the programmatic entry's engine (L1, Redis, single-flight
//!    and the cross-process lock, versioned tags, `stale`, `fail_safe`),
//!    whose loader calls the handler with a plain `GET` (no conditional
//!    or range headers) and keeps its response if it may be stored
//!    ([`fetch`]). A response that may not be stored goes back to the
//!    request that ran the handler, through a slot; a request that waited
//!    on that load runs the handler itself.
//! 4. **Answer** from the stored response ([`serve`]): the preconditions
//!    (`304`, `412`), `Age`, `Date`, `Cache-Status`; `HEAD` without the
//!    body.

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    AGE, AUTHORIZATION, CONTENT_LENGTH, COOKIE, DATE, EXPIRES, HOST, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, SET_COOKIE, VARY,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::CachePolicy;
use super::body::{BoxError, Buffered, ResponseBody, buffer};
use super::headers::{self, Asks, http_date, normalized, precondition};
use super::stored::{MAX_HEADERS, Making, Stored};
use crate::cache::Cache;
use crate::codec::TypeCodec;
use crate::entry::Refreshed;
use crate::key::Key;
use crate::shape::FallibleOptional;

/// The `Cache-Status` header (RFC 9211).
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The default `ttl`: a minute.
pub const DEFAULT_HTTP_TTL: Duration = Duration::from_secs(60);
/// The default `max_body`: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The headers a proxy tells the original host and scheme in.
const FORWARDED: [HeaderName; 3] = [
    http::header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
];

type TagsOf = Arc<dyn Fn(&Parts) -> Vec<String> + Send + Sync>;

/// A [`tower_layer::Layer`] that caches whole responses in a [`Cache`]:
/// see the [module docs](super).
#[derive(Clone)]
pub struct ResponseCacheLayer {
    cache: Cache,
    config: Config,
}

#[derive(Clone)]
struct Config {
    prefix: &'static str,
    ttl: Duration,
    stale: Option<Duration>,
    fail_safe: Option<Duration>,
    vary: Vec<HeaderName>,
    /// A `vary` entry that is no header name: nothing is cached.
    refused: Option<String>,
    statuses: Vec<StatusCode>,
    max_body: usize,
    authorized: bool,
    private: bool,
    host: bool,
    tags: Option<TagsOf>,
}

impl Config {
    /// A setting the entries would refuse (then nothing is cached).
    fn invalid(&self) -> Option<&'static str> {
        let window = |window: Option<Duration>| window.is_some_and(|w| w > crate::MAX_TTL);
        if self.ttl.is_zero() || self.ttl > crate::MAX_TTL {
            Some("ttl: above zero, at most a year")
        } else if window(self.stale) || window(self.fail_safe) {
            Some("stale and fail_safe: at most a year")
        } else if !crate::key::is_valid_prefix(self.prefix) {
            Some("prefix: not one a key can hold")
        } else {
            None
        }
    }
}

impl std::fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("ResponseCacheLayer")
            .field("prefix", &c.prefix)
            .field("ttl", &c.ttl)
            .field("stale", &c.stale)
            .field("fail_safe", &c.fail_safe)
            .field("vary", &c.vary)
            .field("statuses", &c.statuses)
            .field("max_body", &c.max_body)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheLayer {
    /// Responses cached in `cache`, under the prefix `"http"`, fresh for
    /// [`DEFAULT_HTTP_TTL`], `200 OK` only, bodies up to
    /// [`DEFAULT_MAX_BODY`].
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            config: Config {
                prefix: "http",
                ttl: DEFAULT_HTTP_TTL,
                stale: None,
                fail_safe: None,
                vary: Vec::new(),
                refused: None,
                statuses: vec![StatusCode::OK],
                max_body: DEFAULT_MAX_BODY,
                authorized: false,
                private: false,
                host: true,
                tags: None,
            },
        }
    }

    /// Where the responses live: `cache.invalidate_prefix(prefix)` forgets
    /// them all. A prefix as `#[cache_aside(prefix = …)]` takes.
    pub fn prefix(mut self, prefix: &'static str) -> Self {
        self.config.prefix = prefix;
        self
    }

    /// How long a response stays fresh (default [`DEFAULT_HTTP_TTL`]); a
    /// handler's `Cache-Control: max-age` / `s-maxage` or
    /// [`CachePolicy::ttl`] may make it shorter. Above zero, at most a
    /// year: otherwise nothing is cached, with a `warn` event.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Past its freshness, answer with the stored response at once while
    /// one background request refreshes it, for this long; announced as
    /// `stale-while-revalidate`.
    pub fn stale(mut self, window: Duration) -> Self {
        self.config.stale = Some(window);
        self
    }

    /// When the handler fails (a `5xx`, or an error of the service), answer
    /// with the stored response for this long past its freshness;
    /// announced as `stale-if-error`.
    pub fn fail_safe(mut self, window: Duration) -> Self {
        self.config.fail_safe = Some(window);
        self
    }

    /// Request headers the response depends on (`accept-language`): each
    /// one's value, normalised (lines joined, elements trimmed, lower case
    /// for `Accept-*` and `Host` only), is part of the key, and the response says `Vary` for it.
    /// A name that is not a header name caches nothing, with a `warn`.
    pub fn vary<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for name in names {
            let name = name.as_ref();
            match HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(header) if !self.config.vary.contains(&header) => self.config.vary.push(header),
                Ok(_) => {}
                Err(_) => self.config.refused = Some(name.to_owned()),
            }
        }
        self
    }

    /// The statuses stored (default `200` only).
    pub fn statuses<I: IntoIterator<Item = StatusCode>>(mut self, statuses: I) -> Self {
        self.config.statuses = statuses.into_iter().collect();
        self
    }

    /// The largest body stored (default [`DEFAULT_MAX_BODY`]): a larger
    /// one streams through, unbuffered past this many bytes, and is not
    /// stored. (The cache's `max_value_size` bounds it too.)
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// Cache requests with `Authorization` or `Cookie` too (default: they
    /// go to the handler). Their answers are then shared by everyone who
    /// asks for the same key: add those headers to [`vary`](Self::vary)
    /// when the answer depends on them.
    pub fn cache_authorized(mut self, yes: bool) -> Self {
        self.config.authorized = yes;
        self
    }

    /// Store responses with `Cache-Control: private` too (default: never),
    /// for answers keyed by the credentials they depend on (see
    /// [`cache_authorized`](Self::cache_authorized)). `no-store` and
    /// `Set-Cookie` are never stored: a cookie set for one client would be
    /// replayed to every other.
    pub fn cache_private(mut self, yes: bool) -> Self {
        self.config.private = yes;
        self
    }

    /// Whether the host (`Host`, or the URI's authority, and the
    /// `Forwarded`, `X-Forwarded-Host` and `X-Forwarded-Proto` a proxy
    /// adds) is part of the key (default: yes: a handler that builds links
    /// from them never has its page served to another host).
    pub fn key_host(mut self, yes: bool) -> Self {
        self.config.host = yes;
        self
    }

    /// The tags of a request's response, from the request (its path, its
    /// query): `cache.invalidate_tags(["product:7"])` forgets it on every
    /// instance. Known before the handler runs, so an invalidation that
    /// lands while it runs is never lost (see the module docs).
    pub fn tags<F, I>(mut self, tags: F) -> Self
    where
        F: Fn(&Parts) -> I + Send + Sync + 'static,
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.config.tags = Some(Arc::new(move |parts| {
            tags(parts).into_iter().map(Into::into).collect()
        }));
        self
    }
}

impl<S> tower_layer::Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache {
            inner,
            cache: self.cache.clone(),
            config: Arc::new(self.config.clone()),
        }
    }
}

/// The service [`ResponseCacheLayer`] makes.
#[derive(Clone)]
pub struct ResponseCache<S> {
    inner: S,
    cache: Cache,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for ResponseCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ResponseCache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The clone that was made ready goes with the request (tower's
        // rule); this one waits for the next.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let call = Call {
            cache: self.cache.clone(),
            config: self.config.clone(),
            inner,
            bodies: PhantomData,
        };
        Box::pin(call.respond(request))
    }
}

struct Call<S, ReqB, ResB> {
    cache: Cache,
    config: Arc<Config>,
    inner: S,
    bodies: PhantomData<fn(ReqB) -> ResB>,
}

/// What the handler's answer became.
enum Fetched<E> {
    /// Stored (or to be stored).
    Page(Arc<Stored>),
    /// Not to be stored, and why (`Cache-Status`'s `detail`).
    Pass(Response<ResponseBody>, &'static str),
    /// A server error: the fail-safe response may answer instead.
    Failed(Response<ResponseBody>),
    /// The service's error.
    Error(E),
}

/// What the load that ran this request's handler left for it.
enum Slot<E> {
    Empty,
    Stored(Arc<Stored>),
    /// Its answer, and what `Cache-Status` says of it.
    Pass(Result<Response<ResponseBody>, E>, String),
}

type Outcome<E> = Result<Response<ResponseBody>, E>;

impl<S, ReqB, ResB> Call<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    async fn respond(self, request: Request<ReqB>) -> Outcome<S::Error> {
        let config = &self.config;
        let (parts, body) = request.into_parts();
        if let Some(status) = self.bypass(&parts, &body) {
            return self.forward(Request::from_parts(parts, body), status).await;
        }
        let asks = Asks::of(&parts.headers);
        if asks.no_store {
            let request = Request::from_parts(parts, body);
            return self.forward(request, "fwd=request; detail=no-store").await;
        }
        let key = self.key(&parts);
        // An L1 hit, before anything a load needs is made.
        if !asks.no_cache
            && let Some(page) = l1_page(&self.cache, config.prefix, &key)
        {
            let now = now_ms();
            let young = asks
                .max_age
                .is_none_or(|oldest| Duration::from_secs(page.age(now)) <= oldest);
            if young && !page.is_stale(now) && page.fits(&parts.headers) {
                return Ok(serve(
                    &page,
                    &parts,
                    now,
                    format!("hit; ttl={}", page.ttl(now)),
                ));
            }
        }
        let tags = config
            .tags
            .as_ref()
            .map(|tags| tags(&parts))
            .unwrap_or_default();
        let plain = plain_get(&parts);
        if asks.no_cache {
            return self.refresh(&parts, plain, &key, tags, "fwd=request").await;
        }

        let slot: Arc<Mutex<Slot<S::Error>>> = Arc::new(Mutex::new(Slot::Empty));
        let load = {
            let (inner, plain, slot, config) = (
                Mutex::new(self.inner.clone()),
                plain.clone(),
                slot.clone(),
                config.clone(),
            );
            move || {
                let service = inner.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let request = Request::from_parts(plain.clone(), ReqB::default());
                let (slot, config) = (slot.clone(), config.clone());
                async move {
                    let fail_safe = config.fail_safe.is_some();
                    let (left, answer) = match fetch(service, request, &config).await {
                        Fetched::Page(page) => (Slot::Stored(page.clone()), Ok(Some(page))),
                        Fetched::Pass(response, why) => {
                            (Slot::Pass(Ok(response), format!("detail={why}")), Ok(None))
                        }
                        Fetched::Failed(response) => {
                            let code = response.status().as_u16();
                            // An error only where the fail-safe answer may
                            // take its place: otherwise the waiters would
                            // retry one after another, each as slow.
                            let answer = if fail_safe { Err(()) } else { Ok(None) };
                            (
                                Slot::Pass(Ok(response), format!("fwd-status={code}")),
                                answer,
                            )
                        }
                        Fetched::Error(error) => {
                            let answer = if fail_safe { Err(()) } else { Ok(None) };
                            (Slot::Pass(Err(error), String::new()), answer)
                        }
                    };
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = left;
                    answer
                }
            }
        };
        let answer = entry(&self.cache, config, &key, tags.clone())
            .detached_with::<FallibleOptional, _, _, _>(page_codec(), load)
            .await;
        let left = std::mem::replace(
            &mut *slot.lock().unwrap_or_else(PoisonError::into_inner),
            Slot::Empty,
        );
        let now = now_ms();
        match (answer, left) {
            (Ok(Some(page)), Slot::Stored(ours)) if Arc::ptr_eq(&page, &ours) => {
                Ok(serve(&page, &parts, now, "fwd=miss; stored".to_owned()))
            }
            (Ok(Some(page)), left) => {
                if !page.fits(&parts.headers) {
                    return self
                        .refresh(&parts, plain, &key, tags, "fwd=vary-miss")
                        .await;
                }
                if let Some(oldest) = asks.max_age
                    && Duration::from_secs(page.age(now)) > oldest
                {
                    return self.refresh(&parts, plain, &key, tags, "fwd=request").await;
                }
                // The fail-safe answer: past its freshness, after this
                // request's own load failed (not a background refresh's
                // answer that landed meanwhile).
                let stale = page.is_stale(now);
                let status = match left {
                    Slot::Pass(Ok(failed), _) if stale && failed.status().is_server_error() => {
                        format!(
                            "fwd=miss; fwd-status={}; detail=stale-if-error",
                            failed.status().as_u16()
                        )
                    }
                    Slot::Pass(Err(_), _) if stale => "fwd=miss; detail=stale-if-error".to_owned(),
                    _ if stale => format!("fwd=stale; ttl={}", page.ttl(now)),
                    _ => format!("hit; ttl={}", page.ttl(now)),
                };
                Ok(serve(&page, &parts, now, status))
            }
            (_, Slot::Pass(Ok(response), why)) => {
                Ok(with_status(response, &format!("fwd=miss; {why}")))
            }
            (_, Slot::Pass(Err(error), _)) => Err(error),
            // A request that waited for another's load of a response that
            // may not be stored: it asks the handler itself.
            (_, _) => {
                let request = Request::from_parts(parts, body);
                self.forward(request, "fwd=miss").await
            }
        }
    }

    /// Why the request goes to the handler untouched, as `Cache-Status`.
    fn bypass(&self, parts: &Parts, body: &ReqB) -> Option<&'static str> {
        let config = &self.config;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Some("fwd=method");
        }
        if let Some(why) = config.invalid() {
            crate::observe::warn_throttled!(
                why,
                "tiercache response cache off: a setting is out of range"
            );
            return Some("fwd=bypass; detail=config");
        }
        if let Some(name) = &config.refused {
            crate::observe::warn_throttled!(name = %name, "tiercache response cache off: a `vary` name is no header name");
            return Some("fwd=bypass; detail=config");
        }
        if !body.is_end_stream() && body.size_hint().exact() != Some(0) {
            return Some("fwd=bypass; detail=request-body");
        }
        if !config.authorized
            && (parts.headers.contains_key(AUTHORIZATION) || parts.headers.contains_key(COOKIE))
        {
            return Some("fwd=bypass; detail=credentials");
        }
        // The handler answers ranges (a resumed download, a video): the
        // layer stores whole representations only.
        if parts.headers.contains_key(RANGE) {
            return Some("fwd=bypass; detail=range");
        }
        None
    }

    /// The key: host, path and query, and each `vary` header's value.
    fn key(&self, parts: &Parts) -> Key {
        let mut key = Key::new();
        if self.config.host {
            // Both: a handler may build links from either.
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase());
            key = key
                .part(&normalized(&parts.headers, &HOST))
                .part(&authority);
            // What a handler may build links from instead of `Host`: keyed
            // too, so that no request can store a page made for another
            // host under this one's key.
            for name in FORWARDED {
                key = key.part(&normalized(&parts.headers, &name));
            }
        }
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str());
        key = key.part(target);
        for name in &self.config.vary {
            key = key.part(&normalized(&parts.headers, name));
        }
        key
    }

    /// Asks the handler (`no-cache`, a request older than its `max-age`
    /// allows, a variant the stored one is not) and stores its answer in
    /// place of what is there.
    async fn refresh(
        self,
        parts: &Parts,
        plain: Parts,
        key: &Key,
        tags: Vec<String>,
        why: &str,
    ) -> Outcome<S::Error> {
        let request = Request::from_parts(plain, ReqB::default());
        let fetching = fetch(self.inner.clone(), request, &self.config);
        // Read before the handler runs, as a write-through: an invalidation
        // that lands while it runs keeps its answer out.
        // An answer that may no longer be stored (now private, a 404)
        // forgets the stored one; a failure keeps it.
        let outcome = |fetched: &Fetched<S::Error>| match fetched {
            Fetched::Page(page) => {
                Refreshed::Store(page.clone(), Duration::from_millis(page.fresh_ms))
            }
            Fetched::Pass(..) => Refreshed::Forget,
            Fetched::Failed(_) | Fetched::Error(_) => Refreshed::Keep,
        };
        let entry = entry(&self.cache, &self.config, key, tags);
        let (fetched, stored) = entry.write_through_shared(fetching, outcome).await;
        match fetched {
            Fetched::Page(page) => {
                let status = if stored {
                    format!("{why}; stored")
                } else {
                    why.to_owned()
                };
                Ok(serve(&page, parts, now_ms(), status))
            }
            Fetched::Pass(response, detail) => {
                Ok(with_status(response, &format!("{why}; detail={detail}")))
            }
            Fetched::Failed(response) => Ok(with_status(response, why)),
            Fetched::Error(error) => Err(error),
        }
    }

    /// The request as it came, to the handler; its response as it is.
    async fn forward(mut self, request: Request<ReqB>, status: &str) -> Outcome<S::Error> {
        let response = call(&mut self.inner, request).await?;
        let (parts, body) = response.into_parts();
        let response = Response::from_parts(parts, ResponseBody::streamed(Bytes::new(), body));
        Ok(with_status(response, status))
    }
}

/// What L1 holds for `key`, fresh.
fn l1_page(cache: &Cache, prefix: &'static str, key: &Key) -> Option<Arc<Stored>> {
    let entry = cache.entry(prefix, key);
    match entry.hit::<FallibleOptional, Result<Option<Arc<Stored>>, ()>>(page_codec()) {
        Some(Ok(page)) => page,
        _ => None,
    }
}

/// The entry of `key`, with the layer's settings.
fn entry<'c>(cache: &'c Cache, config: &Config, key: &Key, tags: Vec<String>) -> Page<'c> {
    let entry = cache.entry(config.prefix, key).ttl(config.ttl).tags(tags);
    let entry = match config.fail_safe {
        Some(window) => entry.fail_safe(window),
        None => entry,
    };
    match config.stale {
        // The layer's loader may always run in the background: the type
        // need not say so.
        Some(window) => entry.stale_keeping_type(window),
        None => entry,
    }
}

/// An entry of the layer.
type Page<'c> = crate::Entry<'c, crate::entry::Ttl, crate::entry::Inline>;

/// The codec of a stored response: L1 holds the `Arc`; a page's freshness
/// may be shorter than the layer's TTL (its handler's `max-age`).
fn page_codec() -> TypeCodec<Arc<Stored>> {
    let mut codec = TypeCodec::<Arc<Stored>>::arc();
    codec.fresh_for = |page| Some(Duration::from_millis(page.fresh_ms));
    codec
}

/// The request the handler sees on a load: a `GET` (a `HEAD` is answered
/// from it) without the headers that would make its answer partial or
/// conditional, so that what is stored is the whole representation.
fn plain_get(parts: &Parts) -> Parts {
    let mut plain = parts.clone();
    plain.method = Method::GET;
    for name in [
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ] {
        plain.headers.remove(name);
    }
    plain
}

async fn call<S, Req>(service: &mut S, request: Req) -> Result<S::Response, S::Error>
where
    S: Service<Req>,
{
    poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// Runs the handler and decides whether its answer may be stored.
async fn fetch<S, ReqB, ResB>(
    mut service: S,
    request: Request<ReqB>,
    config: &Config,
) -> Fetched<S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let request_headers = request.headers().clone();
    let response = match call(&mut service, request).await {
        Ok(response) => response,
        Err(error) => return Fetched::Error(error),
    };
    let (parts, body) = response.into_parts();
    let body = body_of(body);
    if parts.status.is_server_error() {
        return Fetched::Failed(streamed(parts, Bytes::new(), body));
    }
    let fresh = match freshness(&parts, config) {
        Ok(fresh) => fresh,
        Err(why) => return Fetched::Pass(streamed(parts, Bytes::new(), body), why),
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok());
    if declared
        .and_then(|length| length.parse::<u64>().ok())
        .is_some_and(|length| length > config.max_body as u64)
    {
        return Fetched::Pass(streamed(parts, Bytes::new(), body), "too-large");
    }
    match buffer(body, config.max_body).await {
        Buffered::Whole(bytes) => {
            let making = Making {
                fresh,
                stale: config.stale,
                fail_safe: config.fail_safe,
                keyed: &config.vary,
                request: &request_headers,
                now_ms: now_ms(),
            };
            Fetched::Page(Arc::new(Stored::make(
                parts.status,
                parts.headers,
                bytes,
                &making,
            )))
        }
        Buffered::Over(head, rest) => Fetched::Pass(streamed(parts, head, rest), "too-large"),
        Buffered::Failed(head, error) => {
            let failing = http_body_util::StreamBody::new(futures_util::stream::once(async move {
                Err::<http_body::Frame<Bytes>, BoxError>(error)
            }));
            Fetched::Pass(streamed(parts, head, failing), "body-error")
        }
    }
}

fn body_of<B>(body: B) -> http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn streamed<B>(parts: http::response::Parts, head: Bytes, rest: B) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Response::from_parts(parts, ResponseBody::streamed(head, rest))
}

/// How long a response may be stored fresh, or why it may not be
/// (RFC 9111 §3, the layer's settings, the handler's [`CachePolicy`]).
fn freshness(parts: &http::response::Parts, config: &Config) -> Result<Duration, &'static str> {
    if !config.statuses.contains(&parts.status) {
        return Err("status");
    }
    let policy = match parts.extensions.get::<CachePolicy>() {
        Some(CachePolicy { ttl: None }) => return Err("policy"),
        Some(CachePolicy { ttl: Some(ttl) }) => *ttl,
        None => config.ttl,
    };
    let mut fresh = config.ttl;
    let (mut shared_age, mut max_age) = (None, None);
    for (name, argument) in headers::directives(&parts.headers) {
        match name.as_str() {
            "no-store" => return Err("no-store"),
            "no-cache" => return Err("no-cache"),
            "private" if !config.private => return Err("private"),
            // Never served stale (RFC 9111 §5.2.2.2): not stored where the
            // layer would.
            // s-maxage implies proxy-revalidate for a shared cache (§5.2.2.10).
            "must-revalidate" | "proxy-revalidate" | "s-maxage"
                if config.stale.is_some() || config.fail_safe.is_some() =>
            {
                return Err("must-revalidate");
            }
            "s-maxage" => shared_age = Some(headers::seconds(argument)),
            "max-age" => {
                max_age = Some(headers::seconds(argument));
                fresh = fresh.min(headers::seconds(argument));
            }
            _ => {}
        }
    }
    // s-maxage, for a shared cache, wins over max-age (RFC 9111 §5.2.2.10).
    if let Some(shared) = shared_age {
        fresh = shared.min(config.ttl);
    } else if max_age.is_none() && parts.headers.contains_key(EXPIRES) {
        // Expires only without either (§5.3); an invalid one ("0") is in
        // the past.
        let expires = headers::date(&parts.headers, &EXPIRES).unwrap_or(0);
        let now = now_ms() / 1000;
        fresh = fresh.min(Duration::from_secs(expires.saturating_sub(now)));
    }
    fresh = fresh.min(policy);
    // Never, whatever the settings: a cookie set for one client would be
    // replayed to every other.
    // Room for what the cache adds on every answer (see `MAX_HEADERS`).
    if parts.headers.len() > MAX_HEADERS {
        return Err("headers");
    }
    if parts.headers.contains_key(SET_COOKIE) {
        return Err("set-cookie");
    }
    // `*`, or a name the cache cannot match requests on.
    let vary = headers::list(&parts.headers, &VARY);
    let unmatched = |name: &&str| *name == "*" || HeaderName::from_bytes(name.as_bytes()).is_err();
    if vary.iter().any(unmatched) {
        return Err("vary");
    }
    if fresh < Duration::from_secs(1) {
        return Err("max-age");
    }
    Ok(fresh)
}

/// The answer to `request` from a stored response.
fn serve(page: &Stored, request: &Parts, now_ms: u64, status: String) -> Response<ResponseBody> {
    // Preconditions only for a 2xx answer (RFC 9110 §13.2.1).
    let condition = if page.status.is_success() {
        precondition(&request.headers, &page.etag, Some(page.last_modified))
    } else {
        None
    };
    let (code, mut headers, body) = match condition {
        Some(StatusCode::NOT_MODIFIED) => (
            StatusCode::NOT_MODIFIED,
            page.not_modified_headers(),
            ResponseBody::empty(),
        ),
        Some(code) => (code, HeaderMap::new(), ResponseBody::empty()),
        None => {
            let mut headers = page.headers.clone();
            if page.status != StatusCode::NO_CONTENT {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(page.body.len()));
            }
            let body = if request.method == Method::HEAD {
                ResponseBody::empty()
            } else {
                ResponseBody::full(page.body.clone())
            };
            (page.status, headers, body)
        }
    };
    if condition != Some(StatusCode::PRECONDITION_FAILED) {
        headers.insert(AGE, HeaderValue::from(page.age(now_ms)));
    }
    headers.insert(DATE, http_date(now_ms / 1000));
    if let Ok(value) = HeaderValue::from_str(&format!("tiercache; {status}")) {
        headers.insert(CACHE_STATUS, value);
    }
    let mut response = Response::new(body);
    *response.status_mut() = code;
    *response.headers_mut() = headers;
    response
}

/// `response` with `Cache-Status: tiercache; {status}`.
fn with_status(mut response: Response<ResponseBody>, status: &str) -> Response<ResponseBody> {
    if let Ok(value) = HeaderValue::from_str(&format!("tiercache; {status}")) {
        // A handler's map may be full (`HeaderMap` holds at most 32,768).
        let _ = response.headers_mut().try_append(CACHE_STATUS, value);
    }
    response
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
