//! A service that shows what its cache does: `/metrics` in the Prometheus
//! text format, and tracing to stdout.
//!
//! ```sh
//! cargo run --example observability --features metrics            # serves on 127.0.0.1:3000
//! cargo run --example observability --features metrics -- --once  # a few calls, /metrics once, exit
//! ```
//!
//! With `REDIS_URL` set (e.g. `redis://127.0.0.1:6379`) the cache has an
//! L2 and the Redis operations show up too; without it, it runs on L1.
//!
//! `GET /users/{id}` is answered through a cached function; `GET /metrics`
//! renders every `tiercache_*` series.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside};

/// A row of the database this service fronts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The database: slow, as databases are.
#[cache_aside(prefix = "user", ttl = "60s", skip(cache), cache = cache)]
async fn user(cache: &Cache, id: u64) -> User {
    let _ = cache;
    tokio::time::sleep(Duration::from_millis(20)).await;
    tracing::info!(id, "loaded from the database");
    User {
        id,
        name: format!("user {id}"),
    }
}

#[derive(Clone)]
struct App {
    cache: Cache,
    metrics: PrometheusHandle,
}

async fn get_user(State(app): State<App>, Path(id): Path<u64>) -> String {
    serde_json::to_string(&user(&app.cache, id).await).unwrap_or_default()
}

async fn get_metrics(State(app): State<App>) -> String {
    app.metrics.render()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let once = std::env::args().any(|arg| arg == "--once");
    // The recorder first: the cache registers its series when it is built.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let mut builder = Cache::builder().namespace("observability-example");
    if let Ok(url) = std::env::var("REDIS_URL") {
        builder = builder.redis(url);
    }
    let cache = builder.build().await?;

    let app = App { cache, metrics };
    let router = Router::new()
        .route("/users/{id}", get(get_user))
        .route("/metrics", get(get_metrics))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let address = listener.local_addr()?;
    println!("serving on http://{address}");
    if once {
        tokio::spawn(async move { axum::serve(listener, router).await });
        for id in [1, 2, 1, 1, 3, 2] {
            user(&app.cache, id).await;
        }
        // L1 hits reach the recorder within a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let page = fetch(&address.to_string(), "/metrics").await?;
        // What the calls above did (a Prometheus server scrapes it all).
        let mut shown: Vec<&str> = page
            .lines()
            .filter(|line| {
                line.starts_with("tiercache_requests_total")
                    || line.starts_with("tiercache_loads_total{")
                    || line.starts_with("tiercache_redis_duration_seconds_count")
                    || line.starts_with("tiercache_l1_entries")
            })
            .filter(|line| !line.ends_with(" 0"))
            .collect();
        shown.sort_unstable();
        println!("{}", shown.join("\n"));
        for (prefix, stats) in app.cache.prefix_stats() {
            println!("{prefix}: {stats:?}");
        }
        return Ok(());
    }
    axum::serve(listener, router).await?;
    Ok(())
}

/// `GET path` over HTTP/1.1, the body of the answer.
async fn fetch(address: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map_or(answer.clone(), |(_, body)| body.to_owned()))
}
