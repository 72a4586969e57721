//! The HTTP layer against a real axum server on a loopback port, asked by a
//! real HTTP client (hyper's), with a real Redis: RFC 9110/9111 behaviour,
//! ETags and 304s, `Vary`, `Cache-Status`, stampedes and invalidation
//! across two server instances.

#![cfg(feature = "http")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tiercache::Cache;
use tiercache::http::{CachePolicy, ResponseCacheLayer};
use tokio::sync::Semaphore;

use support::{cache_in, eventually};

/// What the handler does, shared by the test and the server.
#[derive(Default)]
struct Origin {
    calls: AtomicUsize,
    /// Requests that reached the layer (before it answered or waited).
    arrivals: AtomicUsize,
    /// The handler answers 500 while set.
    failing: AtomicBool,
    /// The handler waits for a permit while this is closed.
    gate: Option<Semaphore>,
    methods: std::sync::Mutex<Vec<Method>>,
    /// The handler answers `Cache-Control: private` while set.
    private: AtomicBool,
    /// The data's version, read when the handler starts (before its gate).
    version: AtomicUsize,
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// `/p/{id}?…`: a JSON body naming the call, with the query's `cc=…`,
/// `status=…`, `cookie`, `vary=…`, `big=n`, `policy=skip`.
async fn handler(origin: Arc<Origin>, request: Request) -> Response {
    origin
        .methods
        .lock()
        .unwrap()
        .push(request.method().clone());
    let version = origin.version.load(Ordering::SeqCst);
    if let Some(gate) = &origin.gate {
        gate.acquire().await.unwrap().forget();
    }
    let call = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if origin.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    let request_range = request
        .headers()
        .get("range")
        .map(|v| v.to_str().unwrap().to_owned());
    let language = request
        .headers()
        .get("accept-language")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = format!(
        "{{\"path\":\"{}\",\"call\":{call},\"v\":{version},\"lang\":\"{language}\"}}",
        request.uri().path()
    );
    let mut response = Response::new(Body::from(body));
    if origin.private.load(Ordering::SeqCst) {
        let private = "private".parse().unwrap();
        response.headers_mut().insert("cache-control", private);
    }
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace("%20", " ");
        let headers = response.headers_mut();
        match name {
            "cc" => drop(headers.insert("cache-control", value.parse().unwrap())),
            "vary" => drop(headers.insert("vary", value.parse().unwrap())),
            "expires" => drop(headers.insert("expires", value.parse().unwrap())),
            "cookie" => drop(headers.insert("set-cookie", "session=1".parse().unwrap())),
            "status" => {
                *response.status_mut() = StatusCode::from_u16(value.parse().unwrap()).unwrap()
            }
            "bin" => {
                let bytes: Vec<u8> = (0..=255).collect();
                let (parts, _) = response.into_parts();
                return Response::from_parts(parts, Body::from(bytes));
            }
            "policy" if value == "2s" => {
                response
                    .extensions_mut()
                    .insert(CachePolicy::ttl(Duration::from_secs(2)));
            }
            "range" => {
                let seen = request_range.clone().unwrap_or_default();
                let (parts, _) = response.into_parts();
                return Response::from_parts(parts, Body::from(format!("range={seen}")));
            }
            "policy" if value == "skip" => {
                response.extensions_mut().insert(CachePolicy::skip());
            }
            "big" => {
                let size: usize = value.parse().unwrap();
                // Streamed in chunks, without a length.
                let chunks = (0..size / 1024)
                    .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024])));
                let (parts, _) = response.into_parts();
                let mut parts = parts;
                parts.headers.remove("content-length");
                return Response::from_parts(
                    parts,
                    Body::from_stream(futures_util::stream::iter(chunks)),
                );
            }
            _ => {}
        }
    }
    response
}

struct Server {
    base: String,
    origin: Arc<Origin>,
}

async fn serve(layer: ResponseCacheLayer, origin: Arc<Origin>) -> Server {
    let counted = origin.clone();
    let routed = origin.clone();
    let router = Router::new()
        .route(
            "/p/{id}",
            get(move |request: Request| handler(routed.clone(), request))
                .post(|| async { "posted" }),
        )
        .layer(layer)
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| {
                counted.arrivals.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server { base, origin }
}

async fn server(
    layer: impl FnOnce(ResponseCacheLayer) -> ResponseCacheLayer,
    cache: &Cache,
) -> Server {
    serve(
        layer(ResponseCacheLayer::new(cache.clone())),
        Arc::new(Origin::default()),
    )
    .await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
    fn cache_status(&self) -> &str {
        self.header("cache-status")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn ask(method: Method, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client()
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get_(url: &str, headers: &[(&str, &str)]) -> Answer {
    ask(Method::GET, url, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_stored_and_the_next_request_is_a_hit_with_the_same_strong_etag() {
    let cache = cache_in("http-basic").await;
    let s = server(|l| l.prefix("http/p").ttl(Duration::from_secs(60)), &cache).await;
    let url = format!("{}/p/7", s.base);

    let first = get_(&url, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.cache_status(), "tiercache; fwd=miss; stored");
    let etag = first.header("etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
        "{etag}"
    );
    assert_eq!(first.header("cache-control"), "max-age=60");
    assert!(!first.header("last-modified").is_empty());
    assert!(!first.header("date").is_empty());
    assert_eq!(first.header("content-type"), "application/json");

    let second = get_(&url, &[]).await;
    assert!(
        second.cache_status().starts_with("tiercache; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), etag);
    assert_eq!(
        second.header("last-modified"),
        first.header("last-modified")
    );
    assert_eq!(
        second.header("content-length"),
        first.body.len().to_string()
    );
    assert!(second.header("age").parse::<u64>().unwrap() <= 1);
    assert_eq!(s.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_follow_rfc_9110_order() {
    let cache = cache_in("http-conditional").await;
    let s = server(|l| l.prefix("http/p").vary(["accept-language"]), &cache).await;
    let url = format!("{}/p/1", s.base);
    let first = get_(&url, &[]).await;
    let etag = first.header("etag").to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");
    let modified = first.header("last-modified").to_owned();

    for matching in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let answer = get_(&url, &[("if-none-match", matching)]).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {matching}"
        );
        assert!(answer.body.is_empty());
        assert_eq!(answer.header("etag"), etag);
        assert_eq!(answer.header("last-modified"), modified);
        assert_eq!(answer.header("cache-control"), "max-age=60");
        assert_eq!(answer.header("vary"), "accept-language");
        assert!(!answer.header("date").is_empty() && !answer.header("age").is_empty());
        assert!(answer.header("content-type").is_empty());
    }
    // If-None-Match goes first: a non-matching one wins over a later date.
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let answer = get_(
        &url,
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", future),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, first.body);
    // If-Modified-Since alone.
    let answer = get_(&url, &[("if-modified-since", &modified)]).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    let past = "Thu, 01 Jan 1970 00:00:01 GMT";
    assert_eq!(
        get_(&url, &[("if-modified-since", past)]).await.status,
        StatusCode::OK
    );
    // If-Match compares strongly; a failed one is 412.
    assert_eq!(
        get_(&url, &[("if-match", &etag)]).await.status,
        StatusCode::OK
    );
    let failed = get_(&url, &[("if-match", &weak)]).await;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        get_(&url, &[("if-unmodified-since", past)]).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    // The handler never saw a conditional request, and ran once.
    assert_eq!(s.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_headers_of_get_and_a_head_miss_stores_the_get() {
    let cache = cache_in("http-head").await;
    let s = server(|l| l.prefix("http/p"), &cache).await;
    let url = format!("{}/p/3", s.base);
    let head = ask(Method::HEAD, &url, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.cache_status(), "tiercache; fwd=miss; stored");
    let get = get_(&url, &[]).await;
    assert!(get.cache_status().starts_with("tiercache; hit"));
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(head.header("content-length"), get.body.len().to_string());
    assert_eq!(*s.origin.methods.lock().unwrap(), [Method::GET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_and_credentials_go_to_the_handler_every_time() {
    let cache = cache_in("http-bypass").await;
    let s = server(|l| l.prefix("http/p"), &cache).await;
    let url = format!("{}/p/4", s.base);
    for _ in 0..2 {
        let answer = ask(Method::POST, &url, &[]).await;
        assert_eq!(answer.cache_status(), "tiercache; fwd=method");
        assert_eq!(answer.text(), "posted");
    }
    for header in [("authorization", "Bearer x"), ("cookie", "session=2")] {
        for _ in 0..2 {
            let answer = get_(&url, &[header]).await;
            assert_eq!(
                answer.cache_status(),
                "tiercache; fwd=bypass; detail=credentials"
            );
        }
    }
    assert_eq!(s.origin.calls(), 4);
    // Allowed, they are cached.
    let cache = cache_in("http-bypass-allowed").await;
    let s = server(
        |l| {
            l.prefix("http/p")
                .cache_authorized(true)
                .vary(["authorization"])
        },
        &cache,
    )
    .await;
    let url = format!("{}/p/4", s.base);
    get_(&url, &[("authorization", "Bearer a")]).await;
    assert!(
        get_(&url, &[("authorization", "Bearer a")])
            .await
            .cache_status()
            .contains("hit")
    );
    assert!(
        get_(&url, &[("authorization", "Bearer b")])
            .await
            .cache_status()
            .contains("stored")
    );
    assert_eq!(s.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_must_not_be_stored_are_not() {
    let cache = cache_in("http-unstored").await;
    let s = server(|l| l.prefix("http/p"), &cache).await;
    let cases = [
        ("status=404", "status"),
        ("cookie", "set-cookie"),
        ("cc=private", "private"),
        ("cc=no-store", "no-store"),
        ("cc=no-cache", "no-cache"),
        ("cc=max-age=0", "max-age"),
        ("vary=*", "vary"),
        ("policy=skip", "policy"),
    ];
    for (n, (query, detail)) in cases.iter().enumerate() {
        let url = format!("{}/p/{n}?{query}", s.base);
        for _ in 0..2 {
            let answer = get_(&url, &[]).await;
            assert_eq!(
                answer.cache_status(),
                format!("tiercache; fwd=miss; detail={detail}"),
                "{query}"
            );
        }
    }
    assert_eq!(s.origin.calls(), 2 * cases.len());
    // Configured, a private answer with a cookie is stored.
    let cache = cache_in("http-unstored-private").await;
    let s = server(
        |l| {
            l.prefix("http/p")
                .cache_private(true)
                .statuses([StatusCode::OK, StatusCode::NOT_FOUND])
        },
        &cache,
    )
    .await;
    for query in ["cc=private", "status=404"] {
        let url = format!("{}/p/1?{query}", s.base);
        get_(&url, &[]).await;
        assert!(
            get_(&url, &[]).await.cache_status().contains("hit"),
            "{query}"
        );
    }
    // Set-Cookie is never stored, whatever the settings.
    let url = format!("{}/p/1?cookie", s.base);
    get_(&url, &[]).await;
    let cookie = get_(&url, &[]).await;
    assert_eq!(
        cookie.cache_status(),
        "tiercache; fwd=miss; detail=set-cookie"
    );
    assert_eq!(s.origin.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_cache_revalidates_and_no_store_bypasses() {
    let cache = cache_in("http-request-directives").await;
    let s = server(|l| l.prefix("http/p"), &cache).await;
    let url = format!("{}/p/5", s.base);
    let first = get_(&url, &[]).await;
    let bypassed = get_(&url, &[("cache-control", "no-store")]).await;
    assert_eq!(
        bypassed.cache_status(),
        "tiercache; fwd=request; detail=no-store"
    );
    assert!(bypassed.text().contains("\"call\":2"));
    assert_eq!(
        get_(&url, &[]).await.body,
        first.body,
        "no-store left the stored answer alone"
    );
    let revalidated = get_(&url, &[("cache-control", "no-cache")]).await;
    assert_eq!(revalidated.cache_status(), "tiercache; fwd=request; stored");
    assert!(revalidated.text().contains("\"call\":3"));
    let after = get_(&url, &[]).await;
    assert!(after.cache_status().contains("hit"));
    assert_eq!(after.body, revalidated.body);
    let pragma = get_(&url, &[("pragma", "no-cache")]).await;
    assert!(pragma.text().contains("\"call\":4"));
    // max-age=0: nothing stored is young enough.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let young = get_(&url, &[("cache-control", "max-age=0")]).await;
    assert!(
        young.text().contains("\"call\":5"),
        "{}",
        young.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_headers_are_part_of_the_key_normalised_and_a_responses_own_vary_is_respected() {
    let cache = cache_in("http-vary").await;
    let s = server(|l| l.prefix("http/p").vary(["Accept-Language"]), &cache).await;
    let url = format!("{}/p/6", s.base);
    let en = get_(&url, &[("accept-language", "en-US, fr;q=0.5")]).await;
    assert_eq!(en.header("vary"), "accept-language");
    let fr = get_(&url, &[("accept-language", "fr")]).await;
    assert!(fr.cache_status().contains("stored"));
    assert_ne!(en.body, fr.body);
    let same = get_(&url, &[("accept-language", "EN-us ,fr;q=0.5")]).await;
    assert!(same.cache_status().contains("hit"));
    assert_eq!(same.body, en.body);
    assert_eq!(s.origin.calls(), 2);

    // The handler's own Vary, beyond the layer's: another value is not served.
    let url = format!("{}/p/6?vary=x-tenant", s.base);
    let a = get_(&url, &[("x-tenant", "a")]).await;
    assert_eq!(a.header("vary"), "accept-language, x-tenant");
    assert!(
        get_(&url, &[("x-tenant", "a")])
            .await
            .cache_status()
            .contains("hit")
    );
    let b = get_(&url, &[("x-tenant", "b")]).await;
    assert_eq!(b.cache_status(), "tiercache; fwd=vary-miss; stored");
    assert_ne!(b.body, a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_max_age_shortens_the_freshness() {
    let cache = cache_in("http-max-age").await;
    let s = server(|l| l.prefix("http/p").ttl(Duration::from_secs(60)), &cache).await;
    let url = format!("{}/p/8?cc=public,%20max-age=1", s.base);
    let first = get_(&url, &[]).await;
    assert_eq!(first.header("cache-control"), "max-age=1, public");
    assert!(get_(&url, &[]).await.cache_status().contains("hit"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(get_(&url, &[]).await.cache_status().contains("stored"));
    assert_eq!(s.origin.calls(), 2);
    // s-maxage wins over max-age for a shared cache.
    let url = format!("{}/p/8?cc=max-age=1,%20s-maxage=30", s.base);
    assert_eq!(get_(&url, &[]).await.header("cache-control"), "max-age=30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_and_fail_safe_serve_the_old_answer() {
    let cache = cache_in("http-stale").await;
    let s = server(
        |l| {
            l.prefix("http/p")
                .ttl(Duration::from_secs(1))
                .stale(Duration::from_secs(30))
        },
        &cache,
    )
    .await;
    let url = format!("{}/p/9", s.base);
    let first = get_(&url, &[]).await;
    assert_eq!(
        first.header("cache-control"),
        "max-age=1, stale-while-revalidate=30"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = get_(&url, &[]).await;
    assert!(
        stale
            .cache_status()
            .starts_with("tiercache; fwd=stale; ttl=-"),
        "{}",
        stale.cache_status()
    );
    assert_eq!(stale.body, first.body);
    assert!(
        eventually(Duration::from_secs(5), async || get_(&url, &[])
            .await
            .text()
            .contains("\"call\":2"))
        .await
    );

    let cache = cache_in("http-fail-safe").await;
    let s = server(
        |l| {
            l.prefix("http/p")
                .ttl(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(60))
        },
        &cache,
    )
    .await;
    let url = format!("{}/p/9", s.base);
    let first = get_(&url, &[]).await;
    assert_eq!(
        first.header("cache-control"),
        "max-age=1, stale-if-error=60"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.origin.failing.store(true, Ordering::SeqCst);
    let saved = get_(&url, &[]).await;
    assert_eq!(saved.status, StatusCode::OK);
    assert_eq!(saved.body, first.body);
    assert_eq!(
        saved.cache_status(),
        "tiercache; fwd=miss; fwd-status=503; detail=stale-if-error"
    );
    // Without a stored answer, the failure is the answer.
    let other = get_(&format!("{}/p/10", s.base), &[]).await;
    assert_eq!(other.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(other.cache_status(), "tiercache; fwd=miss; fwd-status=503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_stream_through_unstored() {
    let cache = cache_in("http-big").await;
    let s = server(|l| l.prefix("http/p").max_body(4096), &cache).await;
    let url = format!("{}/p/11?big=102400", s.base);
    for _ in 0..2 {
        let answer = get_(&url, &[]).await;
        assert_eq!(answer.body.len(), 102_400);
        assert!(answer.body.iter().all(|b| *b == b'x'));
        assert_eq!(
            answer.cache_status(),
            "tiercache; fwd=miss; detail=too-large"
        );
    }
    // Under the limit, a streamed body is buffered and stored.
    let url = format!("{}/p/11?big=3072", s.base);
    get_(&url, &[]).await;
    let hit = get_(&url, &[]).await;
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(hit.body.len(), 3072);
    assert_eq!(s.origin.calls(), 3);
}

/// Two instances of one service, on one Redis: each its own cache (its own
/// L1), the same namespace.
async fn two_instances(namespace: &str, origin: Arc<Origin>) -> (Cache, Server, Cache, Server) {
    let layer = |cache: &Cache| {
        // Behind a load balancer both see one Host; here each has its port.
        ResponseCacheLayer::new(cache.clone())
            .prefix("http/p")
            .key_host(false)
            .tags(|request| {
                [format!(
                    "product:{}",
                    request.uri.path().rsplit('/').next().unwrap_or("")
                )]
            })
    };
    // One test process runs 1,000 clients and both servers on two threads:
    // opening the connections may take seconds while the one handler run
    // waits (the other instance waits as long for its lock), and delay a
    // Redis reply past the default 200 ms, which would count Redis as down
    // and load without the lock.
    let cache = async || {
        Cache::builder()
            .namespace(namespace)
            .redis(support::shared().url())
            .lock_wait(Duration::from_secs(120))
            .redis_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (cache().await, cache().await);
    let sa = serve(layer(&a), origin.clone()).await;
    let sb = serve(layer(&b), origin).await;
    (a, sa, b, sb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_the_same_etag_and_the_second_answers_304_for_the_firsts() {
    let origin = Arc::new(Origin::default());
    let (_a, sa, _b, sb) = two_instances("http-two", origin.clone()).await;
    let first = get_(&format!("{}/p/12", sa.base), &[]).await;
    let second = get_(&format!("{}/p/12", sb.base), &[]).await;
    assert!(
        second.cache_status().contains("hit"),
        "B read A's answer from Redis"
    );
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(second.body, first.body);
    let etag = first.header("etag");
    let revalidated = get_(&format!("{}/p/12", sb.base), &[("if-none-match", etag)]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_for_a_cold_url_run_the_handler_once_across_instances() {
    let origin = Arc::new(Origin {
        gate: Some(Semaphore::new(0)),
        ..Origin::default()
    });
    let (_a, sa, _b, sb) = two_instances("http-stampede", origin.clone()).await;
    let client = client();
    let mut requests = Vec::new();
    for n in 0..1000 {
        let base = if n % 2 == 0 { &sa.base } else { &sb.base };
        let request = hyper::Request::get(format!("{base}/p/13"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let client = client.clone();
        requests.push(tokio::spawn(async move {
            let response = client.request(request).await.unwrap();
            let etag = response.headers()["etag"].to_str().unwrap().to_owned();
            (
                response.status(),
                etag,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        }));
    }
    // Every request reached a layer while the one handler run waits.
    assert!(
        eventually(Duration::from_secs(30), async || origin
            .arrivals
            .load(Ordering::SeqCst)
            == 1000)
        .await
    );
    origin.gate.as_ref().unwrap().add_permits(1000);
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    assert_eq!(origin.calls(), 1);
    assert!(
        answers
            .iter()
            .all(|answer| answer.0 == StatusCode::OK && *answer == answers[0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_tag_and_by_prefix_reaches_every_instance() {
    let origin = Arc::new(Origin::default());
    let (a, sa, _b, sb) = two_instances("http-invalidate", origin.clone()).await;
    let urls = [format!("{}/p/14", sa.base), format!("{}/p/14", sb.base)];
    let served = async |url: &str| get_(url, &[]).await.text();
    for url in &urls {
        served(url).await;
        assert!(get_(url, &[]).await.cache_status().contains("hit"));
    }
    assert_eq!(origin.calls(), 1);
    a.invalidate_tags(["product:14"]).await.unwrap();
    for url in &urls {
        assert!(
            eventually(Duration::from_secs(5), async || served(url)
                .await
                .contains("\"call\":2"))
            .await
        );
    }
    a.invalidate_prefix("http/p").await.unwrap();
    for url in &urls {
        assert!(
            eventually(Duration::from_secs(5), async || served(url)
                .await
                .contains("\"call\":3"))
            .await
        );
    }
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_handler_raced_with_an_invalidation_is_never_served_after_it() {
    let origin = Arc::new(Origin {
        gate: Some(Semaphore::new(0)),
        ..Origin::default()
    });
    let (a, sa, _b, sb) = two_instances("http-race", origin.clone()).await;
    let url = format!("{}/p/15", sa.base);
    let racing = tokio::spawn(async move { get_(&url, &[]).await });
    assert!(
        eventually(Duration::from_secs(5), async || !origin
            .methods
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    // The handler has started: the invalidation lands before it answers.
    a.invalidate_tags(["product:15"]).await.unwrap();
    origin.gate.as_ref().unwrap().add_permits(10);
    let raced = racing.await.unwrap();
    assert!(raced.text().contains("\"call\":1"));
    for base in [&sa.base, &sb.base] {
        let after = get_(&format!("{base}/p/15"), &[]).await;
        assert!(
            !after.text().contains("\"call\":1"),
            "{base}: {}",
            after.cache_status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_in_redis_is_a_miss_and_redis_down_fails_no_request() {
    let cache = cache_in("http-corrupt").await;
    let s = server(|l| l.prefix("http/p"), &cache).await;
    let url = format!("{}/p/16", s.base);
    get_(&url, &[]).await;
    let mut redis = support::raw(&support::shared().url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("http-corrupt:http/p:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("tc\x02garbage")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Another instance reads Redis, not its L1.
    let other = cache_in("http-corrupt").await;
    let t = serve(
        ResponseCacheLayer::new(other).prefix("http/p"),
        s.origin.clone(),
    )
    .await;
    let answer = get_(&format!("{}/p/16", t.base), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.cache_status(), "tiercache; fwd=miss; stored");

    let mut server = support::RedisServer::start();
    let cache = support::cache_on(&server.url(), "http-down").await;
    let s = server_on(&cache).await;
    server.stop();
    for n in 0..3 {
        let answer = get_(&format!("{}/p/{n}", s.base), &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
}

async fn server_on(cache: &Cache) -> Server {
    server(|l| l.prefix("http/p"), cache).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_cache_serves_the_layer_too() {
    let cache = Cache::builder().build().await.unwrap();
    let s = server_on(&cache).await;
    let url = format!("{}/p/17", s.base);
    get_(&url, &[]).await;
    assert!(get_(&url, &[]).await.cache_status().contains("hit"));
    cache.invalidate_prefix("http/p").await.unwrap();
    assert!(get_(&url, &[]).await.cache_status().contains("stored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_json_answers_304_from_a_values_etag() {
    use tiercache::http::respond_json;
    let router = Router::new().route(
        "/v",
        get(|headers: axum::http::HeaderMap| async move {
            respond_json(&headers, &serde_json::json!({"id": 7}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let first = get_(&url, &[]).await;
    assert_eq!(first.text(), "{\"id\":7}");
    assert_eq!(first.header("content-type"), "application/json");
    let etag = first.header("etag").to_owned();
    let again = get_(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header("etag"), etag);
    assert!(again.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_body_goes_through_redis_to_another_instance_unchanged() {
    let origin = Arc::new(Origin::default());
    let (_a, sa, _b, sb) = two_instances("http-binary", origin.clone()).await;
    let first = get_(&format!("{}/p/18?bin", sa.base), &[]).await;
    assert_eq!(first.body.len(), 256);
    let second = get_(&format!("{}/p/18?bin", sb.base), &[]).await;
    assert!(
        second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), first.header("etag"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_share_an_answer_that_may_not_be_stored() {
    let origin = Arc::new(Origin {
        gate: Some(Semaphore::new(0)),
        ..Origin::default()
    });
    let s = serve(
        ResponseCacheLayer::new(cache_in("http-private-flight").await).prefix("http/p"),
        origin.clone(),
    )
    .await;
    let url = format!("{}/p/19?cookie", s.base);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get_(&url, &[]).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), async || origin
            .arrivals
            .load(Ordering::SeqCst)
            == 20)
        .await
    );
    origin.gate.as_ref().unwrap().add_permits(100);
    let mut bodies = Vec::new();
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.header("set-cookie"), "session=1");
        bodies.push(answer.text());
    }
    // Each request got the answer its own handler run made.
    assert_eq!(origin.calls(), 20);
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cache_refresh_that_raced_with_an_invalidation_is_never_served_after_it() {
    let origin = Arc::new(Origin {
        gate: Some(Semaphore::new(1)),
        ..Origin::default()
    });
    let (a, sa, _b, sb) = two_instances("http-refresh-race", origin.clone()).await;
    let url = format!("{}/p/20", sa.base);
    assert!(get_(&url, &[]).await.text().contains("\"v\":0"));
    let racing = tokio::spawn(async move { get_(&url, &[("cache-control", "no-cache")]).await });
    // The refresh's handler has read version 0 and waits at its gate.
    assert!(
        eventually(Duration::from_secs(5), async || origin
            .methods
            .lock()
            .unwrap()
            .len()
            == 2)
        .await
    );
    origin.version.store(1, Ordering::SeqCst);
    a.invalidate_tags(["product:20"]).await.unwrap();
    origin.gate.as_ref().unwrap().add_permits(100);
    let raced = racing.await.unwrap();
    assert!(raced.text().contains("\"v\":0"));
    for base in [&sa.base, &sb.base] {
        let after = get_(&format!("{base}/p/20"), &[]).await;
        assert!(
            after.text().contains("\"v\":1"),
            "{base}: {} {}",
            after.text(),
            after.cache_status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_the_fail_safe_window() {
    let cache = cache_in("http-refresh-fail-safe").await;
    let s = server(
        |l| {
            l.prefix("http/p")
                .ttl(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(60))
        },
        &cache,
    )
    .await;
    let url = format!("{}/p/21", s.base);
    get_(&url, &[]).await;
    let refreshed = get_(&url, &[("cache-control", "no-cache")]).await;
    assert_eq!(refreshed.cache_status(), "tiercache; fwd=request; stored");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.origin.failing.store(true, Ordering::SeqCst);
    let saved = get_(&url, &[]).await;
    assert_eq!(saved.status, StatusCode::OK);
    assert_eq!(saved.body, refreshed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_ttl_bounds_s_maxage_and_a_stored_404_ignores_preconditions() {
    let cache = cache_in("http-policy-404").await;
    let s = server(
        |l| {
            l.prefix("http/p")
                .statuses([StatusCode::OK, StatusCode::NOT_FOUND])
        },
        &cache,
    )
    .await;
    let answer = get_(&format!("{}/p/22?policy=2s&cc=s-maxage=60", s.base), &[]).await;
    assert_eq!(answer.header("cache-control"), "max-age=2");
    let url = format!("{}/p/22?status=404", s.base);
    get_(&url, &[]).await;
    let again = get_(&url, &[("if-none-match", "*")]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.cache_status().contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_and_forwarded_hosts_are_never_answered_with_anothers_page() {
    let cache = cache_in("http-range-forwarded").await;
    let s = server(|l| l.prefix("http/p"), &cache).await;
    let url = format!("{}/p/23?range", s.base);
    get_(&url, &[]).await;
    let ranged = get_(&url, &[("range", "bytes=0-1")]).await;
    assert_eq!(ranged.cache_status(), "tiercache; fwd=bypass; detail=range");
    assert_eq!(
        ranged.text(),
        "range=bytes=0-1",
        "the handler saw the range"
    );
    // A page made for another forwarded host is not this one's.
    let url = format!("{}/p/23", s.base);
    let plain = get_(&url, &[]).await;
    let forwarded = get_(&url, &[("x-forwarded-host", "evil.example")]).await;
    assert!(
        forwarded.cache_status().contains("stored"),
        "{}",
        forwarded.cache_status()
    );
    let again = get_(&url, &[]).await;
    assert_eq!(again.body, plain.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_expires_and_settings_out_of_range_are_respected() {
    let cache = cache_in("http-revalidate").await;
    let s = server(
        |l| l.prefix("http/p").stale(Duration::from_secs(30)),
        &cache,
    )
    .await;
    let url = format!("{}/p/24?cc=must-revalidate", s.base);
    get_(&url, &[]).await;
    let again = get_(&url, &[]).await;
    assert_eq!(
        again.cache_status(),
        "tiercache; fwd=miss; detail=must-revalidate"
    );
    let url = format!("{}/p/25?expires=0", s.base);
    assert!(
        get_(&url, &[])
            .await
            .cache_status()
            .contains("detail=max-age")
    );
    let url = format!(
        "{}/p/26?expires=Fri,%2001%20Jan%202100%2000:00:00%20GMT",
        s.base
    );
    get_(&url, &[]).await;
    assert!(get_(&url, &[]).await.cache_status().contains("hit"));
    assert_eq!(s.origin.calls(), 4);

    let s = server(|l| l.prefix("http/p").ttl(Duration::ZERO), &cache).await;
    let url = format!("{}/p/27", s.base);
    for _ in 0..2 {
        let answer = get_(&url, &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.cache_status(),
            "tiercache; fwd=bypass; detail=config"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cancelled_by_its_client_leaves_the_stored_page_alone() {
    let origin = Arc::new(Origin {
        gate: Some(Semaphore::new(1)),
        ..Origin::default()
    });
    let (_a, sa, _b, sb) = two_instances("http-refresh-cancel", origin.clone()).await;
    let url = format!("{}/p/28", sa.base);
    let first = get_(&url, &[]).await;
    let refreshing = {
        let url = url.clone();
        tokio::spawn(async move { get_(&url, &[("cache-control", "no-cache")]).await })
    };
    assert!(
        eventually(Duration::from_secs(5), async || origin
            .methods
            .lock()
            .unwrap()
            .len()
            == 2)
        .await
    );
    // The client goes away while the handler runs: the server drops the call.
    refreshing.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    origin.gate.as_ref().unwrap().add_permits(100);
    for base in [&sa.base, &sb.base] {
        let after = get_(&format!("{base}/p/28"), &[]).await;
        assert!(
            after.cache_status().contains("hit"),
            "{base}: {}",
            after.cache_status()
        );
        assert_eq!(after.body, first.body);
    }
    // An answer that may no longer be stored forgets the stored page.
    let url = format!("{}/p/29", sa.base);
    get_(&url, &[]).await;
    origin.private.store(true, Ordering::SeqCst);
    let refreshed = get_(&url, &[("cache-control", "no-cache")]).await;
    assert_eq!(
        refreshed.cache_status(),
        "tiercache; fwd=request; detail=private"
    );
    for base in [&sa.base, &sb.base] {
        let after = get_(&format!("{base}/p/29"), &[]).await;
        assert_eq!(
            after.cache_status(),
            "tiercache; fwd=miss; detail=private",
            "{base}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_while_redis_is_down_owe_no_invalidation() {
    let mut redis = support::RedisServer::start();
    let cache = support::cache_on(&redis.url(), "http-refresh-down").await;
    let s = server_on(&cache).await;
    redis.stop();
    for n in 0..5 {
        let url = format!("{}/p/{n}", s.base);
        let answer = get_(&url, &[("cache-control", "no-cache")]).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    // Nothing was written, so nothing needs forgetting when Redis is back
    // (past 1,024 owed keys, the whole prefix would be).
    assert_eq!(cache.stats().pending_invalidations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_a_failing_url_do_not_wait_in_line() {
    let origin = Arc::new(Origin {
        gate: Some(Semaphore::new(0)),
        failing: AtomicBool::new(true),
        ..Origin::default()
    });
    let s = serve(
        ResponseCacheLayer::new(cache_in("http-failing-flight").await).prefix("http/p"),
        origin.clone(),
    )
    .await;
    let url = format!("{}/p/30", s.base);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get_(&url, &[]).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), async || {
            origin.arrivals.load(Ordering::SeqCst) == 8
        })
        .await
    );
    // The first handler run answers 503: the seven that waited for it then
    // ask the handler all at once, not one after another's 503.
    origin.gate.as_ref().unwrap().add_permits(1);
    assert!(
        eventually(Duration::from_secs(10), async || {
            origin.methods.lock().unwrap().len() == 8
        })
        .await
    );
    origin.gate.as_ref().unwrap().add_permits(8);
    for request in requests {
        assert_eq!(
            request.await.unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
