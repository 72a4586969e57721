//! A small product API behind `ResponseCacheLayer`: whole responses
//! cached, with ETags, `304 Not Modified`, `Cache-Control` and
//! `Cache-Status`, and invalidated by tag when a price changes.
//!
//! ```sh
//! cargo run --example http_service --features http            # embedded, no Redis
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example http_service --features http
//!
//! curl -i localhost:3000/products/7                            # fwd=miss; stored
//! curl -i localhost:3000/products/7                            # hit
//! curl -i -H 'If-None-Match: "…"' localhost:3000/products/7    # 304
//! curl -i -X POST localhost:3000/products/7/price/1299         # invalidates product:7
//! curl -i localhost:3000/products/7                            # fwd=miss; stored, new price
//! ```
//!
//! `PORT` sets the port (default 3000).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tiercache::Cache;
use tiercache::http::ResponseCacheLayer;

/// What the API answers.
#[derive(Clone, Serialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// The "database": a map, slow on purpose, counting its queries.
#[derive(Default)]
struct Db {
    prices: Mutex<HashMap<u64, u64>>,
    queries: AtomicUsize,
}

impl Db {
    async fn product(&self, id: u64) -> Option<Product> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let price = *self.prices.lock().ok()?.get(&id)?;
        Some(Product {
            id,
            name: format!("Product {id}"),
            price_cents: price,
        })
    }
}

#[derive(Clone)]
struct App {
    db: Arc<Db>,
    cache: Cache,
}

async fn product(State(app): State<App>, Path(id): Path<u64>) -> Response {
    let Some(product) = app.db.product(id).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match serde_json::to_vec(&product) {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn set_price(State(app): State<App>, Path((id, cents)): Path<(u64, u64)>) -> Response {
    if let Ok(mut prices) = app.db.prices.lock() {
        prices.insert(id, cents);
    }
    // Every instance forgets the cached page of this product.
    match app.cache.invalidate_tags([format!("product:{id}")]).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => (StatusCode::ACCEPTED, error.to_string()).into_response(),
    }
}

/// `product:{id}` for `/products/{id}`: known from the request, before the
/// handler runs.
fn tags_of(request: &axum::http::request::Parts) -> Vec<String> {
    let mut segments = request.uri.path().trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some("products"), Some(id)) => vec![format!("product:{id}")],
        _ => Vec::new(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = Cache::builder().namespace("tiercache-http-example");
    if let Ok(url) = std::env::var("REDIS_URL") {
        builder = builder.redis(&url);
    }
    let cache = builder.build().await?;
    let db = Arc::new(Db::default());
    if let Ok(mut prices) = db.prices.lock() {
        prices.extend([(7, 999), (8, 2450)]);
    }
    let app = App {
        db: db.clone(),
        cache: cache.clone(),
    };

    let cached = Router::new().route("/products/{id}", get(product)).layer(
        ResponseCacheLayer::new(cache.clone())
            .prefix("http/products")
            .ttl(Duration::from_secs(60))
            .stale(Duration::from_secs(30))
            .vary(["accept-language"])
            .tags(tags_of),
    );
    let router = Router::new()
        .merge(cached)
        .route("/products/{id}/price/{cents}", post(set_price))
        .with_state(app);

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "none (embedded)".to_owned());
    println!(
        "listening on http://{}, Redis: {redis}",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}
