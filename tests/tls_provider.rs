#![cfg(feature = "tls")]
//! The process-wide rustls crypto provider (its own test binary: the
//! provider is global): a plain `redis://` cache leaves it to the service,
//! a `rediss://` one installs ring when the service installed none.

mod support;

use rustls::crypto::CryptoProvider;
use tiercache::Cache;

#[tokio::test]
async fn only_a_tls_cache_installs_a_crypto_provider() {
    let server = support::RedisServer::start();
    Cache::builder().redis(server.url()).build().await.unwrap();
    assert!(
        CryptoProvider::get_default().is_none(),
        "plain redis:// leaves rustls alone"
    );
    let reserved = support::RedisServer::reserve();
    Cache::builder()
        .redis(format!("rediss://127.0.0.1:{}", reserved.port()))
        .redis_timeout(std::time::Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert!(CryptoProvider::get_default().is_some(), "rediss:// has one");
}
