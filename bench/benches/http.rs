//! HTTP: a cached `GET` through `tiercache::http::ResponseCacheLayer`,
//! beside the same axum handler alone (no cache) and the same route behind
//! hitbox-tower 0.2 on its moka backend (the tower caching layer users
//! would pick instead), in one process and one run.
//!
//! Each variant is its own axum server on a loopback port (`axum::serve`
//! on `127.0.0.1:0`, `TCP_NODELAY`), asked by hyper-util's legacy client
//! (keep-alive, one pool per variant). The handler serializes a ~1 KB JSON
//! product with serde_json on every call; no sleep. Both caches are
//! in-process: tiercache's embedded cache (an L1 hit, no Redis) and
//! hitbox-moka. Both store `GET` `200`s only, for 60 s, keyed by the path.
//! Before anything is measured, every key is checked to be a hit
//! (`cache-status: tiercache; hit…`, `x-cache-status: HIT`).
//!
//! Criterion groups (`http/…`), the three variants back to back in each:
//! - `http/latency/{tiercache,handler,hitbox}`: one request at a time;
//! - `http/concurrent64/{…}`: 64 requests in flight per iteration
//!   (`Throughput::Elements(64)`).
//!
//! Then (under `cargo bench` only) an interleaved pass: rounds in which
//! each variant runs in turn for a short window, in a rotating order, so
//! that a load that comes and goes on the machine falls on all three; the
//! medians of the rounds go to `target/tiercache-bench/http.json` for
//! `report`, beside criterion's.
//!
//! `cargo bench -p tiercache-bench --bench http` (no Redis needed).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;
use tiercache::http::ResponseCacheLayer;
use tiercache_bench::out_dir;

/// Requests in flight per iteration of the concurrent group, and the
/// number of keys (products) asked: request `i` of a batch asks key `i`.
const CONCURRENCY: usize = 64;
const KEYS: usize = CONCURRENCY;
const TTL: Duration = Duration::from_secs(60);
const ROUTE: &str = "/products/{id}";

// ---------------------------------------------------------------------------
// The handler

#[derive(Serialize)]
struct Product {
    id: u64,
    sku: String,
    name: String,
    description: String,
    category: &'static str,
    brand: &'static str,
    price_cents: u64,
    currency: &'static str,
    in_stock: bool,
    stock: u32,
    rating: f32,
    reviews: u32,
    tags: Vec<&'static str>,
    attributes: Vec<Attribute>,
    images: Vec<String>,
    updated_at: &'static str,
}

#[derive(Serialize)]
struct Attribute {
    name: &'static str,
    value: String,
}

/// What a database would return for `id`, built on every call.
fn product(id: u64) -> Product {
    Product {
        id,
        sku: format!("SKU-{id:08}"),
        name: format!("Ergonomic mechanical keyboard, model {id}"),
        description: format!(
            "Product {id}: a full-size mechanical keyboard with hot-swappable switches, \
             per-key lighting, a detachable braided cable and a solid aluminium case. \
             Ships with a wrist rest, a keycap puller and four spare switches; two-year \
             warranty, free returns within thirty days of delivery."
        ),
        category: "peripherals/keyboards",
        brand: "Tiercache Labs",
        price_cents: 12_900 + id % 100,
        currency: "EUR",
        in_stock: true,
        stock: 40 + (id % 17) as u32,
        rating: 4.6,
        reviews: 1_284,
        tags: vec!["keyboard", "mechanical", "rgb", "hot-swap", "aluminium"],
        attributes: vec![
            Attribute {
                name: "switches",
                value: "linear, 45 g".to_owned(),
            },
            Attribute {
                name: "layout",
                value: "ISO, 105 keys".to_owned(),
            },
            Attribute {
                name: "connection",
                value: "USB-C, 2.4 GHz, Bluetooth 5.1".to_owned(),
            },
            Attribute {
                name: "weight",
                value: format!("{} g", 1_100 + id % 50),
            },
        ],
        images: (1..=3)
            .map(|n| format!("https://cdn.example.com/products/{id}/{n}.webp"))
            .collect(),
        updated_at: "2026-11-30T12:00:00Z",
    }
}

/// Counts its calls (one relaxed increment), so that the run can show the
/// caches never called it while measured.
async fn handler(State(calls): State<Arc<AtomicUsize>>, Path(id): Path<u64>) -> Json<Product> {
    calls.fetch_add(1, Ordering::Relaxed);
    Json(product(id))
}

fn routes(calls: Arc<AtomicUsize>) -> Router {
    Router::new().route(ROUTE, get(handler)).with_state(calls)
}

// ---------------------------------------------------------------------------
// The three servers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Tiercache,
    Handler,
    Hitbox,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Tiercache, Variant::Handler, Variant::Hitbox];

    fn name(self) -> &'static str {
        match self {
            Variant::Tiercache => "tiercache",
            Variant::Handler => "handler",
            Variant::Hitbox => "hitbox",
        }
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The route behind tiercache's layer, on an embedded cache: a hit is an
/// L1 hit.
async fn tiercache_server(calls: Arc<AtomicUsize>) -> SocketAddr {
    let cache = tiercache::Cache::builder()
        .build()
        .await
        .expect("the embedded cache builds");
    let layer = ResponseCacheLayer::new(cache).prefix("bench/http").ttl(TTL);
    serve(routes(calls).layer(layer)).await
}

/// The route behind hitbox-tower, configured as its README and
/// hitbox-http's predicates and extractors describe: `GET` only, `200`
/// only, the key from the method and the path's `{id}`, 60 s, moka.
async fn hitbox_server(calls: Arc<AtomicUsize>) -> SocketAddr {
    use hitbox::Config;
    use hitbox::policy::PolicyConfig;
    use hitbox_http::extractors::Method as MethodExtractor;
    use hitbox_http::extractors::path::PathExtractor;
    use hitbox_http::predicates::request::Method;
    use hitbox_http::predicates::response::StatusCode as Status;

    let backend = hitbox_moka::MokaBackend::builder()
        .max_entries(10_000)
        .build();
    let config = Config::builder()
        .request_predicate(Method::new(hyper::Method::GET).expect("GET is a method"))
        .response_predicate(Status::new(StatusCode::OK))
        .extractor(MethodExtractor::new().path(ROUTE))
        .policy(PolicyConfig::builder().ttl(TTL).build())
        .build();
    let layer = hitbox_tower::Cache::builder()
        .backend(backend)
        .config(config)
        .build();
    serve(routes(calls).layer(layer)).await
}

// ---------------------------------------------------------------------------
// The client

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Target {
    variant: Variant,
    /// The handler's calls.
    calls: Arc<AtomicUsize>,
    client: HttpClient,
    uris: Vec<Uri>,
    /// Which key the next one-at-a-time request asks.
    next: AtomicUsize,
}

impl Target {
    fn new(variant: Variant, addr: SocketAddr, calls: Arc<AtomicUsize>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(300))
            .build(connector);
        let uris = (0..KEYS)
            .map(|id| {
                format!("http://{addr}/products/{}", 1_000 + id)
                    .parse()
                    .expect("a URI")
            })
            .collect();
        Self {
            variant,
            calls,
            client,
            uris,
            next: AtomicUsize::new(0),
        }
    }

    /// One `GET`, its body read to the end (so the connection goes back
    /// to the pool): the body's length.
    async fn get(&self, key: usize) -> usize {
        let response = self
            .client
            .get(self.uris[key].clone())
            .await
            .expect("the request is answered");
        assert_eq!(response.status(), StatusCode::OK, "{}", self.variant.name());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body is read");
        body.to_bytes().len()
    }

    async fn one(&self) -> usize {
        let key = self.next.fetch_add(1, Ordering::Relaxed) % KEYS;
        self.get(key).await
    }

    async fn batch(&self) -> usize {
        join_all((0..CONCURRENCY).map(|key| self.get(key)))
            .await
            .into_iter()
            .sum()
    }

    /// Asks every key until it is a hit (the first request stores it),
    /// and checks the body is the handler's; panics otherwise.
    async fn check_hits(&self) {
        for key in 0..KEYS {
            let expected = serde_json::to_vec(&product(1_000 + key as u64)).unwrap();
            let mut last = String::new();
            let mut hit = false;
            for _ in 0..20 {
                let response = self
                    .client
                    .get(self.uris[key].clone())
                    .await
                    .expect("the request is answered");
                assert_eq!(response.status(), StatusCode::OK);
                let (parts, body) = response.into_parts();
                let body = body.collect().await.expect("the body is read").to_bytes();
                assert_eq!(
                    body.as_ref(),
                    expected.as_slice(),
                    "{}: the body of {} is not the handler's",
                    self.variant.name(),
                    self.uris[key]
                );
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .map(|v| v.to_str().unwrap_or("").to_owned())
                };
                hit = match self.variant {
                    Variant::Handler => {
                        last = format!(
                            "cache-status {:?}, x-cache-status {:?}",
                            header("cache-status"),
                            header("x-cache-status")
                        );
                        // Nothing caches: no cache header at all.
                        header("cache-status").is_none() && header("x-cache-status").is_none()
                    }
                    Variant::Tiercache => {
                        let status = header("cache-status").unwrap_or_default();
                        last = format!("cache-status: {status:?}");
                        status.starts_with("tiercache; hit")
                    }
                    Variant::Hitbox => {
                        let status = header("x-cache-status").unwrap_or_default();
                        last = format!("x-cache-status: {status:?}");
                        status == "HIT"
                    }
                };
                if hit {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(
                hit,
                "{}: GET {} is not a cache hit after 20 requests (last: {last}); \
                 the benchmark would not measure a hit",
                self.variant.name(),
                self.uris[key]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Criterion

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn latency(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    targets: &[Arc<Target>],
) {
    group.throughput(Throughput::Elements(1));
    for target in targets {
        group.bench_function(target.variant.name(), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(target.one().await) })
        });
    }
}

fn concurrent(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    targets: &[Arc<Target>],
) {
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for target in targets {
        group.bench_function(target.variant.name(), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(target.batch().await) })
        });
    }
}

// ---------------------------------------------------------------------------
// The interleaved pass

const ROUNDS: usize = 8;
const WINDOW: Duration = Duration::from_millis(250);

/// Requests per second of `target` for one window.
async fn window_rps(target: &Target, concurrent: bool) -> f64 {
    let start = Instant::now();
    let mut requests = 0usize;
    while start.elapsed() < WINDOW {
        if concurrent {
            black_box(target.batch().await);
            requests += CONCURRENCY;
        } else {
            black_box(target.one().await);
            requests += 1;
        }
    }
    requests as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn interleaved(rt: &tokio::runtime::Runtime, targets: &[Arc<Target>]) {
    let mut results = serde_json::Map::new();
    for (mode, concurrent) in [("latency", false), ("concurrent64", true)] {
        let mut rps: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        rt.block_on(async {
            for round in 0..ROUNDS {
                // A rotating order: each variant runs first, second and
                // third as often.
                for i in 0..targets.len() {
                    let t = (round + i) % targets.len();
                    rps[t].push(window_rps(&targets[t], concurrent).await);
                }
            }
        });
        let mut line = format!("http interleaved {mode}:");
        for (target, samples) in targets.iter().zip(rps) {
            let m = median(samples.clone());
            line.push_str(&format!(" {} {:.0} req/s;", target.variant.name(), m));
            results.insert(
                format!("{mode}/{}", target.variant.name()),
                json!({ "rps_median": m, "rps_rounds": samples }),
            );
        }
        println!("{line}");
    }
    results.insert(
        "config".into(),
        json!({ "rounds": ROUNDS, "window_ms": WINDOW.as_millis() as u64, "concurrency": CONCURRENCY, "keys": KEYS }),
    );
    let path = out_dir().join("http.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    println!("http: wrote {}", path.display());
}

fn main() {
    let body = serde_json::to_vec(&product(1_000)).unwrap().len();
    assert!(
        (900..=1_200).contains(&body),
        "the product should be about 1 KB of JSON, it is {body} B"
    );
    let rt = runtime();
    let targets: Vec<Arc<Target>> = rt.block_on(async {
        let mut targets = Vec::new();
        for variant in Variant::ALL {
            let calls = Arc::new(AtomicUsize::new(0));
            let addr = match variant {
                Variant::Tiercache => tiercache_server(calls.clone()).await,
                Variant::Handler => serve(routes(calls.clone())).await,
                Variant::Hitbox => hitbox_server(calls.clone()).await,
            };
            let target = Target::new(variant, addr, calls);
            target.check_hits().await;
            targets.push(Arc::new(target));
        }
        targets
    });
    println!(
        "http: {body} B JSON bodies; tiercache and hitbox answer every one of {KEYS} keys from their cache"
    );
    let calls_before: Vec<usize> = targets
        .iter()
        .map(|t| t.calls.load(Ordering::SeqCst))
        .collect();

    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("http/latency");
        latency(&mut group, &rt, &targets);
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("http/concurrent64");
        concurrent(&mut group, &rt, &targets);
        group.finish();
    }
    criterion.final_summary();

    // Not under `cargo test --benches` (criterion's test mode runs each
    // benchmark once; the pass would only slow it down).
    if std::env::args().any(|a| a == "--bench") {
        interleaved(&rt, &targets);
    }

    // Every measured request of a cache was a hit: the handler behind it
    // was not called again.
    for (target, before) in targets.iter().zip(calls_before) {
        let during = target.calls.load(Ordering::SeqCst) - before;
        match target.variant {
            Variant::Handler => println!("http: the handler alone ran {during} times"),
            _ => assert_eq!(
                during,
                0,
                "{}: its handler ran {during} times while measured: not every request was a hit",
                target.variant.name()
            ),
        }
    }
    println!("http: tiercache's and hitbox's handlers ran 0 times while measured (all hits)");
}
